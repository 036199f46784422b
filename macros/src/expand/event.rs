//! `#[derive(Event)]`: `impl Event` with the stored name, version, aliases and the upcast
//! chain in `decode`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
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
    let (impl_generics, ty_generics, _) = event.generics.split_for_impl();
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

    let declared = declared_event(
        event.ident,
        event.generics,
        &private,
        &quote!(#name),
        &version,
        &quote!(&[#(#aliases),*]),
    );
    let serde_check = serde_check(event.ident, event.generics, &private);
    let where_clause = serde_guard(event.ident, event.generics, &private);
    quote! {
        #declared
        #serde_check

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

/// `DeclaredEvent`: the names and version, whatever the serde derives.
fn declared_event(
    ident: &Ident,
    generics: &syn::Generics,
    private: &TokenStream,
    name: &TokenStream,
    version: &Literal,
    aliases: &TokenStream,
) -> TokenStream {
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics #private::DeclaredEvent for #ident #ty_generics #where_clause {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            const ALIASES: &'static [&'static str] = #aliases;
        }
    }
}

/// The `Event` impl's where clause. For a struct without generics it holds only when the
/// struct implements serde's traits, and [`serde_check`] reports their absence as one error
/// naming the missing derives; the `for<'__annals>` keeps rustc from rejecting a bound that
/// does not hold as a bound on a concrete type. A generic struct keeps its own where clause.
fn serde_guard(ident: &Ident, generics: &syn::Generics, private: &TokenStream) -> TokenStream {
    if !generics.params.is_empty() {
        return generics.where_clause.to_token_stream();
    }
    let own = generics.where_clause.iter().flat_map(|w| &w.predicates);
    quote! {
        where
            #(#own,)*
            for<'__annals> #ident: #private::serde::Serialize
                + #private::serde::de::DeserializeOwned,
    }
}

/// One error, at the struct's name, naming the serde derives it lacks (none for a generic
/// struct, whose `Event` impl reports them).
fn serde_check(ident: &Ident, generics: &syn::Generics, private: &TokenStream) -> TokenStream {
    if !generics.params.is_empty() {
        return TokenStream::new();
    }
    quote_spanned! {ident.span()=>
        const _: () = {
            // Method resolution picks one of them.
            #[allow(unused_imports)]
            use #private::serde_probe::{
                ProbeBoth as _, ProbeDeserialize as _, ProbeNeither as _, ProbeSerialize as _,
            };
            let _ = || (&&&&#private::SerdeProbe::<#ident>::NEW).serde().require();
        };
    }
}

/// Keeps the user's other code free of "`Event` is not implemented" errors while the
/// attribute error is fixed.
fn fallback(input: &DeriveInput) -> TokenStream {
    let krate = CratePath::from_attrs(&input.attrs, &mut Errors::new());
    let (root, private) = (krate.root(), krate.private());
    let ident = &input.ident;
    let name = ident.to_string();
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let declared = declared_event(
        ident,
        &input.generics,
        &private,
        &quote!(#name),
        &Literal::u32_unsuffixed(1),
        &quote!(&[]),
    );
    let where_clause = serde_guard(ident, &input.generics, &private);
    quote! {
        #declared

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
