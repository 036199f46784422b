//! `#[projection(..)]`: `impl Projection<Tx>` dispatching each stored event type to its
//! `#[on]` handler, with the list of event types the runner fetches.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

use crate::ast::projection::{Method, Projection};

pub fn attribute(args: TokenStream, item: TokenStream) -> TokenStream {
    super::impl_attribute(
        args,
        item,
        "`#[projection]` goes on the read model's impl block: `impl Balances { .. }`",
        Projection::parse,
        |projection| &projection.item,
        generate,
    )
}

/// The expansion, or every error (for the snapshot tests).
#[cfg(test)]
pub fn expand(args: TokenStream, item: syn::ItemImpl) -> syn::Result<TokenStream> {
    let mut errors = crate::attr::Errors::new();
    let projection = Projection::parse(args, item, &mut errors);
    errors.finish()?;
    Ok(generate(&projection))
}

fn generate(projection: &Projection) -> TokenStream {
    let root = projection.krate.root();
    let private = projection.krate.private();
    let item = &projection.item;
    let self_ty = &item.self_ty;
    let name = &projection.name;
    let (impl_generics, tx) = match &projection.tx {
        Some(tx) => (quote!(), tx.to_token_stream()),
        None => (
            quote!(<__AnnalsTx: ::core::marker::Send + 'static>),
            quote!(__AnnalsTx),
        ),
    };

    // The impl holds only when each handler's type is an event; when one is not, the check
    // at the handler's parameter (or `#[derive(Event)]`'s, for a struct missing a serde
    // derive) is the one error.
    let events = projection.handlers.iter().map(|h| &h.event);
    let where_clause = quote!(where #(for<'__annals> #events: #root::Event,)*);
    let checks = projection.handlers.iter().map(|h| {
        let event = &h.event;
        quote_spanned!(event.span()=> #private::assert_projected_event::<#event>();)
    });
    let names = projection.handlers.iter().map(|h| {
        let event = &h.event;
        quote_spanned! {event.span()=>
            names.push(<#event as #root::Event>::NAME);
            names.extend_from_slice(<#event as #root::Event>::ALIASES);
        }
    });
    let arms = projection.handlers.iter().map(|h| {
        let event = &h.event;
        let call = call(&h.method, quote!(&decoded));
        let into_outcome = quote_spanned!(h.method.output_span=>
            #private::ProjectionOutcome::into_outcome(outcome)
        );
        quote! {
            if #private::event_is::<#event>(event_type) {
                let decoded = #private::decode_for::<#event>(event)?;
                let outcome = #call;
                return #into_outcome
                    .map_err(|source| #private::handler_error(NAME, &event.meta, source));
            }
        }
    });
    let reset = projection.reset.as_ref().map(|method| {
        let call = call(method, quote!());
        let into_outcome = quote_spanned!(method.output_span=>
            #private::ProjectionOutcome::into_outcome(outcome)
        );
        quote! {
            fn reset<'a>(
                &'a mut self,
                tx: &'a mut #tx,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), #root::ProjectionError>,
            > + ::core::marker::Send + 'a {
                async move {
                    let outcome = #call;
                    #into_outcome.map_err(|source| {
                        #root::ProjectionError::Reset { projection: #name, source }
                    })
                }
            }
        }
    });

    quote! {
        #item

        const _: () = { #(#checks)* };

        #[automatically_derived]
        impl #impl_generics #root::Projection<#tx> for #self_ty #where_clause {
            const NAME: &'static str = #name;

            fn event_types() -> ::std::vec::Vec<&'static str> {
                let mut names = ::std::vec::Vec::new();
                #(#names)*
                names
            }

            fn handle<'a>(
                &'a mut self,
                event: &'a #root::RecordedEvent,
                tx: &'a mut #tx,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), #root::ProjectionError>,
            > + ::core::marker::Send + 'a {
                const NAME: &str = #name;
                async move {
                    let event_type = event.meta.event_type.as_str();
                    #(#arms)*
                    let _ = tx;
                    ::core::result::Result::Ok(())
                }
            }

            #reset
        }
    }
}

/// `Self::method(self, <event>, &event.meta, tx)` with the parameters the method takes,
/// awaited when async.
fn call(method: &Method, event: TokenStream) -> TokenStream {
    let ident = &method.ident;
    let mut args = vec![quote!(self)];
    if !event.is_empty() {
        args.push(event);
    }
    if method.takes_meta {
        args.push(quote!(&event.meta));
    }
    if method.takes_tx {
        args.push(quote!(tx));
    }
    let call = quote_spanned!(ident.span()=> Self::#ident(#(#args),*));
    if method.is_async {
        quote!(#call.await)
    } else {
        call
    }
}
