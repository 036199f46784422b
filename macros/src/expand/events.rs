//! `#[derive(Events)]`: `impl Events` for the enum, `From` and `IntoEvents` for each event
//! struct, the hidden apply dispatch used by `#[aggregate]`, and compile-time checks that
//! no two variants share a stored name.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::ast::events::{newtype_variants, EventEnum, EventVariant};
use crate::attr::{type_key, CratePath, Errors};

pub fn derive(input: TokenStream) -> TokenStream {
    super::derive(input, expand, fallback)
}

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let events = EventEnum::from_syn(input)?;
    Ok(generate(&events))
}

fn generate(events: &EventEnum<'_>) -> TokenStream {
    let root = events.krate.root();
    let private = events.krate.private();
    let ident = events.ident;
    let variants = &events.variants;
    // Names and versions come from `DeclaredEvent`, which also reports a variant that is no
    // event, and the payloads go through `EventCodec`, so an event struct whose `Event` impl
    // does not hold (a missing serde derive) is reported once, at the struct, not here.
    let event = quote!(#private::DeclaredEvent);

    let names = variants.iter().map(|v| {
        let ty = v.ty;
        quote_spanned!(ty.span()=> <#ty as #event>::NAME)
    });
    let names_var = Ident::new("names", Span::call_site());
    let accepted = variants.iter().map(|v| {
        let ty = v.ty;
        quote_spanned! {ty.span()=>
            #names_var.push(<#ty as #event>::NAME);
            #names_var.extend_from_slice(<#ty as #event>::ALIASES);
        }
    });
    let event_type_arms = variants.iter().map(|v| {
        let (variant, ty) = (v.ident, v.ty);
        quote!(Self::#variant(_) => <#ty as #event>::NAME,)
    });
    let event_version_arms = variants.iter().map(|v| {
        let (variant, ty) = (v.ident, v.ty);
        quote!(Self::#variant(_) => <#ty as #event>::VERSION,)
    });
    let codec = |ty: &syn::Type| quote!((&&#private::EventCodec::<#ty>::NEW));
    let use_codec =
        (!variants.is_empty()).then(|| quote!(use #private::codec::{ByEvent as _, Unusable as _};));
    let encode_arms = variants.iter().map(|v| {
        let (variant, ty) = (v.ident, v.ty);
        let codec = codec(ty);
        quote!(Self::#variant(ref event) => #codec.encode(event),)
    });
    let (event_type, event_version, payload) = (
        Ident::new("event_type", Span::call_site()),
        Ident::new("event_version", Span::call_site()),
        Ident::new("payload", Span::call_site()),
    );
    let decode_branches = variants.iter().map(|v| {
        let (variant, ty) = (v.ident, v.ty);
        let codec = codec(ty);
        quote! {
            if #event_type == <#ty as #event>::NAME
                || <#ty as #event>::ALIASES.contains(&#event_type)
            {
                return ::core::result::Result::map(
                    #codec.decode(#event_version, #payload),
                    Self::#variant,
                );
            }
        }
    });

    let conversions = conversions(ident, variants, &root, &private);
    let dispatch = dispatch(ident, variants, &private, true);
    let collisions = collision_checks(ident, variants, &private);

    quote! {
        #[automatically_derived]
        impl #root::Events for #ident {
            const NAMES: &'static [&'static str] = &[#(#names),*];

            fn accepted_names() -> ::std::vec::Vec<&'static str> {
                let mut #names_var = ::std::vec::Vec::new();
                #(#accepted)*
                #names_var
            }

            fn event_type(&self) -> &'static str {
                match *self {
                    #(#event_type_arms)*
                }
            }

            fn event_version(&self) -> u32 {
                match *self {
                    #(#event_version_arms)*
                }
            }

            fn encode(&self) -> ::core::result::Result<
                ::std::string::String,
                #private::serde_json::Error,
            > {
                #use_codec
                match *self {
                    #(#encode_arms)*
                }
            }

            fn decode(
                #event_type: &str,
                #event_version: u32,
                #payload: &str,
            ) -> ::core::result::Result<Self, #root::DecodeError> {
                #use_codec
                #(#decode_branches)*
                ::core::result::Result::Err(#root::DecodeError::UnknownType)
            }
        }

        #conversions
        #dispatch
        #collisions
    }
}

/// `From<Struct> for Enum`, `IntoEvents<Enum> for Struct` and the hidden `EventOf<Enum>`
/// marker, for each variant.
fn conversions(
    ident: &Ident,
    variants: &[EventVariant<'_>],
    root: &TokenStream,
    private: &TokenStream,
) -> TokenStream {
    variants
        .iter()
        .map(|v| {
            let (variant, ty) = (v.ident, v.ty);
            quote_spanned! {ty.span()=>
                #[automatically_derived]
                impl ::core::convert::From<#ty> for #ident {
                    fn from(event: #ty) -> Self {
                        #ident::#variant(event)
                    }
                }

                #[automatically_derived]
                impl #root::IntoEvents<#ident> for #ty {
                    fn into_events(self) -> ::std::vec::Vec<#ident> {
                        ::std::vec![#ident::#variant(self)]
                    }
                }

                #[automatically_derived]
                impl #private::EventOf<#ident> for #ty {}
            }
        })
        .collect()
}

/// `DispatchEvents<A>` for every aggregate `A` that applies (or ignores) each event struct.
/// Without `bounded`, a no-op for every `A` (the fallback when the derive input is wrong).
fn dispatch(
    ident: &Ident,
    variants: &[EventVariant<'_>],
    private: &TokenStream,
    bounded: bool,
) -> TokenStream {
    let aggregate = Ident::new("__AnnalsAggregate", Span::call_site());
    let bounds = variants.iter().filter(|_| bounded).map(|v| {
        let ty = v.ty;
        quote!(#aggregate: #private::ApplyEvent<#ty>,)
    });
    let body = if bounded {
        let arms = variants.iter().map(|v| {
            let (variant, ty) = (v.ident, v.ty);
            quote! {
                Self::#variant(ref event) => {
                    <#aggregate as #private::ApplyEvent<#ty>>::apply_event(aggregate, event)
                }
            }
        });
        quote!(match *self { #(#arms)* })
    } else {
        quote!(let _ = aggregate;)
    };
    quote! {
        #[automatically_derived]
        impl<#aggregate> #private::DispatchEvents<#aggregate> for #ident
        where
            #(#bounds)*
        {
            #[inline]
            fn dispatch(&self, aggregate: &mut #aggregate) {
                #body
            }
        }
    }
}

/// One const assertion per pair of variants that their names and aliases are disjoint,
/// spanned at the later variant.
fn collision_checks(
    ident: &Ident,
    variants: &[EventVariant<'_>],
    private: &TokenStream,
) -> TokenStream {
    let mut checks = TokenStream::new();
    for (j, later) in variants.iter().enumerate() {
        for earlier in &variants[..j] {
            let (a, b) = (earlier.ty, later.ty);
            let message = format!(
                "variants `{}` and `{}` of `{ident}` are stored under the same event type name \
                 (or alias): give one of them another `#[event(name = \"..\")]`",
                earlier.ident, later.ident,
            );
            checks.extend(quote_spanned! {later.ident.span()=>
                const _: () = ::core::assert!(
                    !#private::names_collide(
                        <#a as #private::DeclaredEvent>::NAME,
                        <#a as #private::DeclaredEvent>::ALIASES,
                        <#b as #private::DeclaredEvent>::NAME,
                        <#b as #private::DeclaredEvent>::ALIASES,
                    ),
                    #message,
                );
            });
        }
    }
    checks
}

/// A stub `impl Events` plus the conversions of the variants that are well formed, so the
/// rest of the user's code does not pile up follow-on errors.
fn fallback(input: &DeriveInput) -> TokenStream {
    let syn::Data::Enum(data) = &input.data else {
        return TokenStream::new();
    };
    if !input.generics.params.is_empty() {
        return TokenStream::new();
    }
    let mut errors = Errors::new();
    let krate = CratePath::from_attrs(&input.attrs, &mut errors);
    let (root, private) = (krate.root(), krate.private());
    let ident = &input.ident;
    let mut variants = newtype_variants(data, &mut errors);
    let mut seen = Vec::new();
    variants.retain(|v| {
        let key = type_key(v.ty);
        let fresh = !seen.contains(&key);
        seen.push(key);
        fresh
    });
    let conversions = conversions(ident, &variants, &root, &private);
    let dispatch = dispatch(ident, &variants, &private, false);
    quote! {
        #[automatically_derived]
        impl #root::Events for #ident {
            const NAMES: &'static [&'static str] = &[];
            fn accepted_names() -> ::std::vec::Vec<&'static str> {
                ::std::vec::Vec::new()
            }
            fn event_type(&self) -> &'static str {
                ""
            }
            fn event_version(&self) -> u32 {
                0
            }
            fn encode(&self) -> ::core::result::Result<
                ::std::string::String,
                #private::serde_json::Error,
            > {
                ::core::result::Result::Ok(::std::string::String::new())
            }
            fn decode(
                _: &str,
                _: u32,
                _: &str,
            ) -> ::core::result::Result<Self, #root::DecodeError> {
                ::core::result::Result::Err(#root::DecodeError::UnknownType)
            }
        }
        #conversions
        #dispatch
    }
}
