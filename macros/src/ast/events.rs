//! `#[derive(Events)]` input: an enum of newtype variants around event structs.

use syn::{DeriveInput, Ident, Type};

use crate::attr::{type_key, CratePath, Errors};

pub struct EventEnum<'a> {
    pub ident: &'a Ident,
    pub krate: CratePath,
    pub variants: Vec<EventVariant<'a>>,
}

pub struct EventVariant<'a> {
    pub ident: &'a Ident,
    /// The event struct it wraps.
    pub ty: &'a Type,
}

impl<'a> EventEnum<'a> {
    pub fn from_syn(input: &'a DeriveInput) -> syn::Result<Self> {
        let mut errors = Errors::new();
        let krate = CratePath::from_attrs(&input.attrs, &mut errors);
        let data = match &input.data {
            syn::Data::Enum(data) => Some(data),
            syn::Data::Struct(s) => {
                errors.spanned(
                    s.struct_token,
                    "`#[derive(Events)]` is for the enum grouping an aggregate's events; \
                     derive `Event` on an event struct",
                );
                None
            }
            syn::Data::Union(u) => {
                errors.spanned(
                    u.union_token,
                    "`#[derive(Events)]` is for enums, not unions",
                );
                None
            }
        };
        if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
            errors.spanned(&input.generics, "event enums cannot be generic");
        }
        for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
            errors.spanned(
                attr,
                "`#[event(..)]` goes on each event struct, not on the `#[derive(Events)]` enum",
            );
        }
        let variants = data
            .map(|d| newtype_variants(d, &mut errors))
            .unwrap_or_default();
        errors.finish()?;
        Ok(EventEnum {
            ident: &input.ident,
            krate,
            variants,
        })
    }
}

/// The enum's variants; a variant that does not wrap exactly one type is an error.
pub fn newtype_variants<'a>(data: &'a syn::DataEnum, errors: &mut Errors) -> Vec<EventVariant<'a>> {
    let mut variants: Vec<EventVariant<'a>> = Vec::new();
    for variant in &data.variants {
        let ty = match &variant.fields {
            syn::Fields::Unnamed(fields) if fields.unnamed.len() == 1 => &fields.unnamed[0].ty,
            _ => {
                let ident = &variant.ident;
                errors.spanned(
                    variant,
                    format!(
                        "event enum variants must wrap exactly one event struct, \
                         like `{ident}({ident})`"
                    ),
                );
                continue;
            }
        };
        if let Some((_, discriminant)) = &variant.discriminant {
            errors.spanned(
                discriminant,
                "event enum variants cannot have discriminants",
            );
        }
        let key = type_key(ty);
        if let Some(first) = variants.iter().find(|v| type_key(v.ty) == key) {
            errors.spanned(
                ty,
                format!(
                    "`{key}` is already wrapped by variant `{}`; each event struct may appear once",
                    first.ident
                ),
            );
            continue;
        }
        variants.push(EventVariant {
            ident: &variant.ident,
            ty,
        });
    }
    variants
}
