//! `#[derive(Event)]`: `impl Event` with the stored name, version, aliases and the upcast
//! chain in `decode`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::ast::event::{EventStruct, UpcastStep};
use crate::attr::{CratePath, Errors};

pub fn derive(input: TokenStream) -> TokenStream {
    super::derive(input, expand, fallback)
}

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let event = EventStruct::from_syn(input)?;
    Ok(generate(&event))
}

fn generate(event: &EventStruct<'_>) -> TokenStream {
    let root = event.krate.root();
    let private = event.krate.private();
    let ident = event.ident;
    let (impl_generics, ty_generics, where_clause) = event.generics.split_for_impl();
    let name = &event.name;
    let version = Literal::u32_unsuffixed(event.version);
    let aliases = &event.aliases;
    let payload = Ident::new("payload", Span::call_site());
    let found = Ident::new("found", Span::call_site());

    let upcast_arms = (0..event.upcasts.len()).map(|i| {
        let from = Literal::u32_unsuffixed(event.upcasts[i].from);
        let body = upcast_chain(event, i, &payload, &private);
        quote!(#from => { #body })
    });

    quote! {
        #[automatically_derived]
        impl #impl_generics #root::Event for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            const ALIASES: &'static [&'static str] = &[#(#aliases),*];

            fn decode(
                version: u32,
                #payload: &str,
            ) -> ::core::result::Result<Self, #root::DecodeError> {
                match version {
                    #version => #private::from_json::<Self>(#payload),
                    #(#upcast_arms)*
                    #found => ::core::result::Result::Err(#root::DecodeError::UnknownVersion {
                        found: #found,
                        current: #version,
                    }),
                }
            }
        }
    }
}

/// Reads a payload stored at the version of step `start`, then converts it step by step
/// into `Self`.
fn upcast_chain(
    event: &EventStruct<'_>,
    start: usize,
    payload: &Ident,
    private: &TokenStream,
) -> TokenStream {
    let step = Ident::new("step", Span::call_site());
    let self_ty = quote!(Self);
    let value_ty = quote!(#private::serde_json::Value);
    let steps = &event.upcasts[start..];

    let mut body = match &steps[0].step {
        UpcastStep::Typed(ty) => quote_spanned! {ty.span()=>
            let #step = #private::from_json::<#ty>(#payload)?;
        },
        UpcastStep::Json(_) => quote! {
            let #step = #private::from_json::<#value_ty>(#payload)?;
        },
    };
    for (i, current) in steps.iter().enumerate() {
        let next = steps.get(i + 1).map(|s| &s.step);
        let convert = match (&current.step, next) {
            (UpcastStep::Typed(ty), Some(UpcastStep::Typed(next))) => quote_spanned! {ty.span()=>
                let #step = <#ty as ::core::convert::Into<#next>>::into(#step);
            },
            (UpcastStep::Typed(ty), Some(UpcastStep::Json(_))) => quote_spanned! {ty.span()=>
                let #step = #private::to_json_value::<#ty>(&#step)?;
            },
            (UpcastStep::Typed(ty), None) => quote_spanned! {ty.span()=>
                let #step = <#ty as ::core::convert::Into<#self_ty>>::into(#step);
            },
            (UpcastStep::Json(f), next) => {
                // The argument is located at the path too, so a wrong signature is reported
                // at the user's function.
                let arg = Ident::new("step", Span::call_site().located_at(f.span()));
                let call = quote_spanned! {f.span()=>
                    let #step: #value_ty = #f(#arg);
                };
                let after = match next {
                    Some(UpcastStep::Typed(next)) => quote_spanned! {next.span()=>
                        let #step = #private::from_json_value::<#next>(#step)?;
                    },
                    Some(UpcastStep::Json(_)) => TokenStream::new(),
                    None => quote! {
                        let #step = #private::from_json_value::<#self_ty>(#step)?;
                    },
                };
                quote!(#call #after)
            }
        };
        body.extend(convert);
    }
    quote! {
        #body
        ::core::result::Result::Ok(#step)
    }
}

/// Keeps the user's other code free of "`Event` is not implemented" errors while the
/// attribute error is fixed.
fn fallback(input: &DeriveInput) -> TokenStream {
    let krate = CratePath::from_attrs(&input.attrs, &mut Errors::new());
    let root = krate.root();
    let ident = &input.ident;
    let name = ident.to_string();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics #root::Event for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
            const VERSION: u32 = 1;
            const ALIASES: &'static [&'static str] = &[];

            fn decode(_: u32, _: &str) -> ::core::result::Result<Self, #root::DecodeError> {
                ::core::result::Result::Err(#root::DecodeError::UnknownType)
            }
        }
    }
}
