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
    let private = command.krate.private();
    let ident = command.ident;
    let (impl_generics, ty_generics, _) = command.generics.split_for_impl();
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
    // `self` resolves as the generated method's receiver but is located at the field.
    let this = Ident::new("self", Span::call_site().located_at(span));
    let id = quote_spanned!(span=> &#this.#member);
    let aggregate_ty = quote_spanned!(aggregate.span()=> #aggregate);
    let checks = checks(command, &private);
    let where_clause = guard(ident, command.generics, aggregate, Some(&field.ty), &root);
    let declared = declared(ident, command.generics, aggregate, &private);
    // The type's own name, not its module path: moving the type keeps its fingerprints.
    let name = ident.to_string();
    quote! {
        #declared
        #checks

        #[automatically_derived]
        impl #impl_generics #root::Command for #ident #ty_generics #where_clause {
            type Aggregate = #aggregate_ty;

            #[inline]
            fn aggregate_id(&self) -> &<Self::Aggregate as #root::Aggregate>::Id {
                #id
            }

            fn fingerprint(&self) -> ::core::option::Option<::std::string::String> {
                // Method resolution picks one of them.
                #[allow(unused_imports)]
                use #private::fingerprint_probe::{Serialized as _, Unserialized as _};
                (&&&#private::FingerprintProbe(self)).fingerprint(#name)
            }
        }
    }
}

/// `CommandOf<Aggregate>`: which aggregate the command names, whether or not its `Command`
/// impl holds.
fn declared(
    ident: &Ident,
    generics: &syn::Generics,
    aggregate: &syn::Type,
    private: &TokenStream,
) -> TokenStream {
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics #private::CommandOf<#aggregate> for #ident #ty_generics #where_clause {}
    }
}

/// The `Command` impl's where clause: it holds only when the named type is an aggregate
/// whose id type is the id field's (`id`, unknown in the fallback) and, without generics,
/// the command is `Clone`. Where one does not hold, [`checks`] reports it once, at the
/// user's tokens, instead of rustc at every use of the command. `for<'__annals>` keeps
/// rustc from rejecting a bound that does not hold on a concrete type.
fn guard(
    ident: &Ident,
    generics: &syn::Generics,
    aggregate: &syn::Type,
    id: Option<&syn::Type>,
    root: &TokenStream,
) -> TokenStream {
    let own = generics.where_clause.iter().flat_map(|w| &w.predicates);
    let id = id.map(|id| quote!(<Id = #id>));
    let clone = generics
        .params
        .is_empty()
        .then(|| quote!(for<'__annals> #ident: ::core::clone::Clone,));
    quote! {
        where
            #(#own,)*
            for<'__annals> #aggregate: #root::Aggregate #id,
            #clone
    }
}

/// One error per mistake, spanned at the user's tokens: the named type has no `#[aggregate]`
/// impl block; the id field is not of the aggregate's id type; the command is not `Clone`
/// (for a generic command its `Command` impl reports that).
fn checks(command: &CommandStruct<'_>, private: &TokenStream) -> TokenStream {
    let (ident, generics, aggregate) = (command.ident, command.generics, &command.aggregate);
    let aggregate_check = quote_spanned! {aggregate.span()=>
        #private::assert_declared_aggregate::<#aggregate>();
    };
    let clone_check = generics
        .params
        .is_empty()
        .then(|| quote_spanned!(ident.span()=> #private::assert_command_clone::<#ident>();));
    let field_ty = &command.id_field.ty;
    let id_check = quote_spanned! {field_ty.span()=>
        // Method resolution picks one of them.
        #[allow(unused_imports)]
        use #private::id_check::{NotAggregate as _, OfAggregate as _};
        (&&#private::IdCheck::<#aggregate, #field_ty>::NEW).id_check().require();
    };
    // In a function, which may be generic over the command's parameters.
    let (impl_generics, _, where_clause) = generics.split_for_impl();
    quote! {
        const _: () = {
            #aggregate_check
            #clone_check
            #[allow(dead_code)]
            fn id_check #impl_generics () #where_clause {
                #id_check
            }
        };
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
    let (root, private) = (krate.root(), krate.private());
    let ident = &input.ident;
    let (impl_generics, ty_generics, _) = input.generics.split_for_impl();
    let declared = declared(ident, &input.generics, &aggregate, &private);
    let where_clause = guard(ident, &input.generics, &aggregate, None, &root);
    let aggregate_check = quote_spanned! {aggregate.span()=>
        const _: () = #private::assert_declared_aggregate::<#aggregate>();
    };
    quote! {
        #declared
        #aggregate_check

        #[automatically_derived]
        impl #impl_generics #root::Command for #ident #ty_generics #where_clause {
            type Aggregate = #aggregate;

            fn aggregate_id(&self) -> &<Self::Aggregate as #root::Aggregate>::Id {
                ::core::unreachable!()
            }
        }
    }
}
