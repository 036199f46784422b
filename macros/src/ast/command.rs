//! `#[derive(Command)]` input: a struct naming its aggregate and its id field.

use syn::{DeriveInput, Field, Generics, Ident, Member, Type};

use crate::attr::{self, CratePath, Errors, Once};

pub struct CommandStruct<'a> {
    pub ident: &'a Ident,
    pub generics: &'a Generics,
    pub krate: CratePath,
    pub aggregate: Type,
    /// The field marked `#[command(id)]`.
    pub id: Member,
    pub id_field: &'a Field,
}

impl<'a> CommandStruct<'a> {
    pub fn from_syn(input: &'a DeriveInput) -> syn::Result<Self> {
        let mut errors = Errors::new();
        let krate = CratePath::from_attrs(&input.attrs, &mut errors);
        let aggregate = parse_aggregate(input, &mut errors);
        let fields = match &input.data {
            syn::Data::Struct(data) => Some(&data.fields),
            syn::Data::Enum(e) => {
                errors.spanned(
                    e.enum_token,
                    "`#[derive(Command)]` is for command structs; `#[aggregate]` generates the \
                     enum of an aggregate's commands",
                );
                None
            }
            syn::Data::Union(u) => {
                errors.spanned(
                    u.union_token,
                    "`#[derive(Command)]` is for structs, not unions",
                );
                None
            }
        };

        let mut id = None::<(Member, &Field)>;
        for (index, field) in fields.into_iter().flatten().enumerate() {
            for field_attr in field.attrs.iter().filter(|a| a.path().is_ident("command")) {
                let parsed = field_attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("id") {
                        if id.is_some() {
                            errors.spanned(&meta.path, "only one field can be `#[command(id)]`");
                        } else {
                            let member = match &field.ident {
                                Some(ident) => Member::Named(ident.clone()),
                                None => Member::Unnamed(index.into()),
                            };
                            id = Some((member, field));
                        }
                        Ok(())
                    } else {
                        attr::unknown_key(&mut errors, &meta, "command field", &["id"])
                    }
                });
                errors.ok(parsed);
            }
        }
        if fields.is_some() && id.is_none() {
            errors.spanned(
                &input.ident,
                format!(
                    "command `{}` has no id field: mark the field holding the aggregate's id \
                     with `#[command(id)]`",
                    input.ident
                ),
            );
        }
        errors.finish()?;
        match (aggregate, id) {
            (Some(aggregate), Some((id, id_field))) => Ok(CommandStruct {
                ident: &input.ident,
                generics: &input.generics,
                krate,
                aggregate,
                id,
                id_field,
            }),
            _ => Err(syn::Error::new_spanned(&input.ident, "invalid command")),
        }
    }
}

/// The `aggregate = Type` of the struct's `#[command(..)]`, recording errors.
pub fn parse_aggregate(input: &DeriveInput, errors: &mut Errors) -> Option<Type> {
    let mut aggregate = Once::<Type>::new("aggregate");
    for item_attr in input.attrs.iter().filter(|a| a.path().is_ident("command")) {
        let parsed = item_attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("aggregate") {
                let span = attr::key_span(&meta);
                let ty = meta.value()?.parse::<Type>()?;
                aggregate.set(errors, span, ty);
                Ok(())
            } else {
                attr::unknown_key(errors, &meta, "command", &["aggregate"])
            }
        });
        errors.ok(parsed);
    }
    if aggregate.get().is_none() {
        errors.spanned(
            &input.ident,
            format!(
                "command `{}` does not name its aggregate: add `#[command(aggregate = Type)]`",
                input.ident
            ),
        );
    }
    aggregate.take()
}
