//! `#[derive(Command)]`: `impl Command` returning the `#[command(id)]` field.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::ast::command::{parse_aggregate, CommandStruct};
use crate::attr::{CratePath, Errors};

pub fn derive(input: TokenStream) -> TokenStream {
    super::derive(input, expand, fallback)
}

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let command = CommandStruct::from_syn(input)?;
    Ok(generate(&command))
}

fn generate(command: &CommandStruct<'_>) -> TokenStream {
    let root = command.krate.root();
    let ident = command.ident;
    let (impl_generics, ty_generics, where_clause) = command.generics.split_for_impl();
    let aggregate = &command.aggregate;
    let field = command.id_field;
    let span = field
        .ident
        .as_ref()
        .map_or_else(|| field.ty.span(), |ident| ident.span());
    let mut member = command.id.clone();
    if let syn::Member::Unnamed(index) = &mut member {
        index.span = span;
    }
    // `self` resolves as the generated method's receiver but is located at the field, so a
    // type mismatch with the aggregate's id type is reported there.
    let this = Ident::new("self", Span::call_site().located_at(span));
    let id = quote_spanned!(span=> &#this.#member);
    let aggregate_ty = quote_spanned!(aggregate.span()=> #aggregate);
    quote! {
        #[automatically_derived]
        impl #impl_generics #root::Command for #ident #ty_generics #where_clause {
            type Aggregate = #aggregate_ty;

            #[inline]
            fn aggregate_id(&self) -> &<Self::Aggregate as #root::Aggregate>::Id {
                #id
            }
        }
    }
}

/// When only the id field is wrong, a stub impl keeps `Handle<ThisCommand>` and
/// `execute(..)` free of follow-on errors.
fn fallback(input: &DeriveInput) -> TokenStream {
    let mut errors = Errors::new();
    let krate = CratePath::from_attrs(&input.attrs, &mut errors);
    let (Some(aggregate), syn::Data::Struct(_)) =
        (parse_aggregate(input, &mut errors), &input.data)
    else {
        return TokenStream::new();
    };
    let root = krate.root();
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics #root::Command for #ident #ty_generics #where_clause {
            type Aggregate = #aggregate;

            fn aggregate_id(&self) -> &<Self::Aggregate as #root::Aggregate>::Id {
                ::core::unreachable!()
            }
        }
    }
}
