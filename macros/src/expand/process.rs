//! `#[process(..)]`: `impl Process<S>` dispatching each stored event type to its `#[on]`
//! handler on the key's state, each deadline name to its `#[deadline]` handler and a refused
//! command to its `#[rejected]` handler.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::Ident;

use crate::ast::process::{Handler, Process};

pub fn attribute(args: TokenStream, item: TokenStream) -> TokenStream {
    super::impl_attribute(
        args,
        item,
        "`#[process]` goes on the process state's impl block: `impl OrderPayment { .. }`",
        Process::parse,
        |process| &process.item,
        generate,
    )
}

/// The expansion, or every error (for the snapshot tests).
#[cfg(test)]
pub fn expand(args: TokenStream, item: syn::ItemImpl) -> syn::Result<TokenStream> {
    let mut errors = crate::attr::Errors::new();
    let process = Process::parse(args, item, &mut errors);
    errors.finish()?;
    Ok(generate(&process))
}

fn generate(process: &Process) -> TokenStream {
    let root = process.krate.root();
    let private = process.krate.private();
    let item = &process.item;
    let self_ty = &item.self_ty;
    let name = &process.name;
    let workflow = quote!(#root::workflow);
    let Some(key) = &process.key else {
        return item.to_token_stream();
    };

    let outputs = process
        .handlers
        .iter()
        .chain(&process.deadlines)
        .chain(&process.rejected)
        .map(|h| &h.output);
    let events: Vec<_> = process
        .handlers
        .iter()
        .filter_map(|h| h.input.as_ref())
        .collect();
    let services = process
        .services
        .as_ref()
        .map_or_else(|| quote!(()), ToTokens::to_token_stream);
    let where_clause = quote! {
        where
            __AnnalsStore: #root::store::EventStore,
            #(for<'__annals> #events: #root::Event,)*
            #(#outputs: #workflow::IntoCommands<__AnnalsStore>,)*
    };
    let checks = events
        .iter()
        .map(|event| quote_spanned!(event.span()=> #private::assert_projected_event::<#event>();));
    let names = events.iter().map(|event| {
        quote_spanned! {event.span()=>
            names.push(<#event as #root::Event>::NAME);
            names.extend_from_slice(<#event as #root::Event>::ALIASES);
        }
    });
    let routes = process
        .handlers
        .iter()
        .chain(&process.deadlines)
        .chain(&process.rejected)
        .map(|h| {
            let output = &h.output;
            quote_spanned! {h.output_span=>
                <#output as #workflow::IntoCommands<__AnnalsStore>>::routes(&mut routes);
            }
        });
    let keys = events.iter().map(|event| {
        let value = if key == "stream_id" {
            quote!(::std::string::ToString::to_string(&event.meta.stream_id))
        } else {
            quote_spanned! {key.span()=> {
                let decoded = #private::decode_for::<#event>(event)?;
                ::std::string::ToString::to_string(&decoded.#key)
            }}
        };
        quote! {
            if #private::event_is::<#event>(event_type) {
                return ::core::result::Result::Ok(::core::option::Option::Some(#value));
            }
        }
    });
    let arms = process.handlers.iter().filter_map(|h| {
        let event = h.input.as_ref()?;
        let call = call(h, Some(quote!(&decoded)));
        let output = &h.output;
        Some(quote! {
            if #private::event_is::<#event>(event_type) {
                let decoded = #private::decode_for::<#event>(event)?;
                let commands: #output = #call;
                return #workflow::IntoCommands::<__AnnalsStore>::collect(commands, out)
                    .map_err(|source| #private::handler_error(NAME, &event.meta, source));
            }
        })
    });
    let deadline_names: Vec<String> = process
        .deadlines
        .iter()
        .map(|h| h.ident.to_string())
        .collect();
    let deadline_arms = process
        .deadlines
        .iter()
        .zip(&deadline_names)
        .map(|(h, label)| {
            let call = call(h, None);
            let output = &h.output;
            quote! {
                if name == #label {
                    let commands: #output = #call;
                    return #workflow::IntoCommands::<__AnnalsStore>::collect(commands, out)
                        .map_err(|source| #root::ProjectionError::Handler {
                            projection: NAME,
                            event_type: ::std::format!("deadline {}", name),
                            position: 0,
                            source,
                        });
                }
            }
        });

    let policy = match (&process.rejected, &process.policy) {
        (Some(_), _) => quote!(Compensate),
        (None, Some(p)) if p == "ignore" => quote!(Ignore),
        (None, _) => quote!(Stop),
    };
    let rejected = process.rejected.as_ref().map(|h| {
        let call = call(h, Some(quote!(rejection)));
        let output = &h.output;
        quote! {
            fn rejected<'a>(
                &'a mut self,
                rejection: &'a #workflow::Rejection,
                services: &'a Self::Services,
                ctx: &'a mut #workflow::Ctx,
                out: &'a mut ::std::vec::Vec<#workflow::Outgoing<__AnnalsStore>>,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), #root::ProjectionError>,
            > + ::core::marker::Send + 'a {
                const NAME: &str = #name;
                async move {
                    let _ = (services, &ctx);
                    let commands: #output = #call;
                    #workflow::IntoCommands::<__AnnalsStore>::collect(commands, out)
                        .map_err(|source| #root::ProjectionError::Handler {
                            projection: NAME,
                            event_type: ::std::format!("#[rejected] {}", rejection.command),
                            position: 0,
                            source,
                        })
                }
            }
        }
    });

    quote! {
        #item

        const _: () = { #(#checks)* };

        #[automatically_derived]
        impl<__AnnalsStore> #workflow::Process<__AnnalsStore> for #self_ty #where_clause {
            const NAME: &'static str = #name;
            const DEADLINES: &'static [&'static str] = &[#(#deadline_names),*];
            const ON_REJECTED: #workflow::OnRejected = #workflow::OnRejected::#policy;

            type Services = #services;

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

            fn key(
                event: &#root::RecordedEvent,
            ) -> ::core::result::Result<
                ::core::option::Option<::std::string::String>,
                #root::ProjectionError,
            > {
                let event_type = event.meta.event_type.as_str();
                #(#keys)*
                ::core::result::Result::Ok(::core::option::Option::None)
            }

            fn react<'a>(
                &'a mut self,
                event: &'a #root::RecordedEvent,
                services: &'a Self::Services,
                ctx: &'a mut #workflow::Ctx,
                out: &'a mut ::std::vec::Vec<#workflow::Outgoing<__AnnalsStore>>,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), #root::ProjectionError>,
            > + ::core::marker::Send + 'a {
                const NAME: &str = #name;
                async move {
                    let event_type = event.meta.event_type.as_str();
                    #(#arms)*
                    let _ = (services, ctx, out);
                    ::core::result::Result::Ok(())
                }
            }

            fn deadline<'a>(
                &'a mut self,
                name: &'a str,
                services: &'a Self::Services,
                ctx: &'a mut #workflow::Ctx,
                out: &'a mut ::std::vec::Vec<#workflow::Outgoing<__AnnalsStore>>,
            ) -> impl ::core::future::Future<
                Output = ::core::result::Result<(), #root::ProjectionError>,
            > + ::core::marker::Send + 'a {
                const NAME: &str = #name;
                async move {
                    #(#deadline_arms)*
                    let _ = (services, ctx, out);
                    ::core::result::Result::Err(#root::ProjectionError::Handler {
                        projection: NAME,
                        event_type: ::std::format!("deadline {}", name),
                        position: 0,
                        source: ::std::format!("no `#[deadline]` handler named `{}`", name).into(),
                    })
                }
            }

            #rejected
        }
    }
}

/// `Self::method(self, <input>, meta, services, ctx)` with the parameters the method takes,
/// awaited when async.
fn call(handler: &Handler, input: Option<TokenStream>) -> TokenStream {
    let ident = &handler.ident;
    let mut args = vec![quote!(self)];
    args.extend(input);
    if handler.takes_meta {
        args.push(quote!(&event.meta));
    }
    if let Some(ty) = &handler.services {
        // Located at the user's parameter so a services type mismatch points there.
        let var = Ident::new("services", Span::call_site().located_at(ty.span()));
        args.push(quote!(#var));
    }
    if handler.takes_ctx {
        args.push(quote!(ctx));
    }
    let call = quote_spanned!(ident.span()=> Self::#ident(#(#args),*));
    if handler.is_async {
        quote!(#call.await)
    } else {
        call
    }
}
