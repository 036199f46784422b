//! `#[reactor(..)]`: `impl Reactor<S>` dispatching each stored event type to its `#[on]`
//! handler, with the event types to fetch and every command type the handlers may send.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::reactor::{Handler, Reactor};

pub fn attribute(args: TokenStream, item: TokenStream) -> TokenStream {
    super::impl_attribute(
        args,
        item,
        "`#[reactor]` goes on the reactor's impl block: `impl InventoryPolicy { .. }`",
        Reactor::parse,
        |reactor| &reactor.item,
        generate,
    )
}

/// The expansion, or every error (for the snapshot tests).
#[cfg(test)]
pub fn expand(args: TokenStream, item: syn::ItemImpl) -> syn::Result<TokenStream> {
    let mut errors = crate::attr::Errors::new();
    let reactor = Reactor::parse(args, item, &mut errors);
    errors.finish()?;
    Ok(generate(&reactor))
}

fn generate(reactor: &Reactor) -> TokenStream {
    let root = reactor.krate.root();
    let private = reactor.krate.private();
    let item = &reactor.item;
    let self_ty = &item.self_ty;
    let name = &reactor.name;
    let workflow = quote!(#root::workflow);

    let outputs = reactor
        .handlers
        .iter()
        .chain(&reactor.rejected)
        .map(|h| &h.output);
    let events = reactor.handlers.iter().map(|h| &h.input);
    let where_clause = quote! {
        where
            __AnnalsStore: #root::store::EventStore,
            #(for<'__annals> #events: #root::Event,)*
            #(#outputs: #workflow::IntoCommands<__AnnalsStore>,)*
    };
    let checks = reactor.handlers.iter().map(|h| {
        let event = &h.input;
        quote_spanned!(event.span()=> #private::assert_projected_event::<#event>();)
    });
    let names = reactor.handlers.iter().map(|h| {
        let event = &h.input;
        quote_spanned! {event.span()=>
            names.push(<#event as #root::Event>::NAME);
            names.extend_from_slice(<#event as #root::Event>::ALIASES);
        }
    });
    let routes = reactor.handlers.iter().chain(&reactor.rejected).map(|h| {
        let output = &h.output;
        quote_spanned! {h.output_span=>
            <#output as #workflow::IntoCommands<__AnnalsStore>>::routes(&mut routes);
        }
    });
    let arms = reactor.handlers.iter().map(|h| {
        let event = &h.input;
        let call = call(h, quote!(&decoded), quote!(&event.meta));
        let output = &h.output;
        quote! {
            if #private::event_is::<#event>(event_type) {
                let decoded = #private::decode_for::<#event>(event)?;
                let commands: #output = #call;
                return #workflow::IntoCommands::<__AnnalsStore>::collect(commands, out)
                    .map_err(|source| #private::handler_error(NAME, &event.meta, source));
            }
        }
    });
    let policy = match (&reactor.rejected, &reactor.policy) {
        (Some(_), _) => quote!(Compensate),
        (None, Some(p)) if p == "ignore" => quote!(Ignore),
        (None, _) => quote!(Stop),
    };
    let rejected = reactor.rejected.as_ref().map(|h| {
        let call = call(h, quote!(rejection), quote!(meta));
        let output = &h.output;
        quote! {
            fn rejected<'a>(
                &'a self,
                rejection: &'a #workflow::Rejection,
                meta: &'a #root::EventMeta,
                out: &'a mut ::std::vec::Vec<#workflow::Outgoing<__AnnalsStore>>,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), #root::ProjectionError>,
            > + ::core::marker::Send + 'a {
                const NAME: &str = #name;
                async move {
                    let commands: #output = #call;
                    #workflow::IntoCommands::<__AnnalsStore>::collect(commands, out)
                        .map_err(|source| #private::handler_error(NAME, meta, source))
                }
            }
        }
    });

    quote! {
        #item

        const _: () = { #(#checks)* };

        #[automatically_derived]
        impl<__AnnalsStore> #workflow::Reactor<__AnnalsStore> for #self_ty #where_clause {
            const NAME: &'static str = #name;
            const ON_REJECTED: #workflow::OnRejected = #workflow::OnRejected::#policy;

            fn event_types() -> ::std::vec::Vec<&'static str> {
                let mut names = ::std::vec::Vec::new();
                #(#names)*
                names
            }

            fn routes() -> ::std::vec::Vec<#workflow::Route> {
                let mut routes = ::std::vec::Vec::new();
                #(#routes)*
                routes
            }

            fn react<'a>(
                &'a self,
                event: &'a #root::RecordedEvent,
                out: &'a mut ::std::vec::Vec<#workflow::Outgoing<__AnnalsStore>>,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), #root::ProjectionError>,
            > + ::core::marker::Send + 'a {
                const NAME: &str = #name;
                async move {
                    let event_type = event.meta.event_type.as_str();
                    #(#arms)*
                    let _ = out;
                    ::core::result::Result::Ok(())
                }
            }

            #rejected
        }
    }
}

/// `Self::method(self, <input>, meta)` with the parameters the method takes, awaited when
/// async.
fn call(handler: &Handler, input: TokenStream, meta: TokenStream) -> TokenStream {
    let ident = &handler.ident;
    let mut args = vec![quote!(self), input];
    if handler.takes_meta {
        args.push(meta);
    }
    let call = quote_spanned!(ident.span()=> Self::#ident(#(#args),*));
    if handler.is_async {
        quote!(#call.await)
    } else {
        call
    }
}
