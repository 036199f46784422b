//! `#[derive(Event)]` input: one event struct and its `#[event(..)]` attribute.

use proc_macro2::Span;
use syn::parse::ParseStream;
use syn::punctuated::Punctuated;
use syn::{DeriveInput, Generics, Ident, LitInt, LitStr, Token};

use crate::attr::{self, CratePath, Errors, Once};

pub struct EventStruct<'a> {
    pub ident: &'a Ident,
    pub generics: &'a Generics,
    pub krate: CratePath,
    /// The stored type name (the struct's name unless `name = ".."`).
    pub name: String,
    pub version: u32,
    pub aliases: Vec<LitStr>,
    /// Sorted by `from`.
    pub upcasts: Vec<Upcast>,
}

pub struct Upcast {
    pub from: u32,
    pub from_lit: LitInt,
    pub step: UpcastStep,
}

/// How a payload stored at an old version is read.
pub enum UpcastStep {
    /// `with = Type`: deserialize as `Type`, then `Into` the next step.
    Typed(syn::Type),
    /// `json = path::to::fn`: a `fn(serde_json::Value) -> serde_json::Value`.
    Json(syn::Path),
}

const KEYS: &[&str] = &["name", "version", "aliases", "upcast"];
const UPCAST_KEYS: &[&str] = &["from", "with", "json"];

impl<'a> EventStruct<'a> {
    pub fn from_syn(input: &'a DeriveInput) -> syn::Result<Self> {
        let mut errors = Errors::new();
        if let syn::Data::Enum(e) = &input.data {
            errors.spanned(
                e.enum_token,
                "`#[derive(Event)]` is for event structs; group them in an enum with `#[derive(Events)]`",
            );
        } else if let syn::Data::Union(u) = &input.data {
            errors.spanned(
                u.union_token,
                "`#[derive(Event)]` is for event structs, not unions",
            );
        }
        let krate = CratePath::from_attrs(&input.attrs, &mut errors);

        let mut name = Once::<LitStr>::new("name");
        let mut version = Once::<(LitInt, u32)>::new("version");
        let mut aliases = Once::<Vec<LitStr>>::new("aliases");
        let mut upcasts = Vec::new();
        for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
            let parsed = attr.parse_nested_meta(|meta| {
                let span = attr::key_span(&meta);
                if meta.path.is_ident("name") {
                    let lit = attr::string_value(&meta)?;
                    name.set(&mut errors, span, lit);
                } else if meta.path.is_ident("version") {
                    let value = attr::u32_value(&meta)?;
                    version.set(&mut errors, span, value);
                } else if meta.path.is_ident("aliases") {
                    let list = parse_string_list(meta.value()?)?;
                    aliases.set(&mut errors, span, list);
                } else if meta.path.is_ident("upcast") {
                    if let Some(upcast) = parse_upcast(&meta, &mut errors)? {
                        upcasts.push(upcast);
                    }
                } else {
                    attr::unknown_key(&mut errors, &meta, "event", KEYS)?;
                }
                Ok(())
            });
            errors.ok(parsed);
        }

        let name = match name.take() {
            Some(lit) => {
                let value = lit.value();
                if value.is_empty() {
                    errors.spanned(&lit, "event name must not be empty");
                }
                value
            }
            None => input.ident.to_string(),
        };
        let (version, version_ok) = match version.take() {
            Some((lit, 0)) => {
                errors.spanned(&lit, "event version must be at least 1");
                (1, false)
            }
            Some((_, v)) => (v, true),
            None => (1, true),
        };
        let aliases = aliases.take().unwrap_or_default();
        for (i, alias) in aliases.iter().enumerate() {
            let value = alias.value();
            if value.is_empty() {
                errors.spanned(alias, "alias must not be empty");
            } else if value == name {
                errors.spanned(alias, format!("alias `{value}` is the event's own name"));
            } else if aliases[..i].iter().any(|a| a.value() == value) {
                errors.spanned(alias, format!("duplicate alias `{value}`"));
            }
        }
        upcasts.sort_by_key(|u: &Upcast| u.from);
        for (i, upcast) in upcasts.iter().enumerate() {
            if upcast.from == 0 {
                errors.spanned(&upcast.from_lit, "upcast `from` must be at least 1");
            } else if version_ok && upcast.from >= version {
                errors.spanned(
                    &upcast.from_lit,
                    format!(
                        "upcast from version {} is not older than the event's version {version}",
                        upcast.from
                    ),
                );
            } else if i > 0 && upcasts[i - 1].from == upcast.from {
                errors.spanned(
                    &upcast.from_lit,
                    format!("duplicate upcast from version {}", upcast.from),
                );
            }
        }
        errors.finish()?;
        Ok(EventStruct {
            ident: &input.ident,
            generics: &input.generics,
            krate,
            name,
            version,
            aliases,
            upcasts,
        })
    }
}

/// `["a", "b"]`
fn parse_string_list(input: ParseStream<'_>) -> syn::Result<Vec<LitStr>> {
    let content;
    syn::bracketed!(content in input);
    let list = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
    Ok(list.into_iter().collect())
}

/// `upcast(from = N, with = Type)` or `upcast(from = N, json = path)`.
fn parse_upcast(
    meta: &syn::meta::ParseNestedMeta<'_>,
    errors: &mut Errors,
) -> syn::Result<Option<Upcast>> {
    let upcast_span = attr::key_span(meta);
    let mut from = Once::<(LitInt, u32)>::new("from");
    let mut step = Once::<UpcastStep>::new("with` or `json");
    meta.parse_nested_meta(|inner| {
        let span = attr::key_span(&inner);
        if inner.path.is_ident("from") {
            let value = attr::u32_value(&inner)?;
            from.set(errors, span, value);
        } else if inner.path.is_ident("with") {
            let ty = inner.value()?.parse::<syn::Type>()?;
            set_step(&mut step, errors, span, UpcastStep::Typed(ty));
        } else if inner.path.is_ident("json") {
            let path = inner.value()?.parse::<syn::Path>()?;
            set_step(&mut step, errors, span, UpcastStep::Json(path));
        } else {
            attr::unknown_key(errors, &inner, "upcast", UPCAST_KEYS)?;
        }
        Ok(())
    })?;
    let missing = |what: &str| syn::Error::new(upcast_span, format!("upcast is missing {what}"));
    let Some((from_lit, from)) = from.take() else {
        errors.push(missing("`from = <version>`"));
        return Ok(None);
    };
    let Some(step) = step.take() else {
        errors.push(missing("`with = Type` or `json = path::to::fn`"));
        return Ok(None);
    };
    Ok(Some(Upcast {
        from,
        from_lit,
        step,
    }))
}

fn set_step(step: &mut Once<UpcastStep>, errors: &mut Errors, span: Span, value: UpcastStep) {
    if step.get().is_some() {
        errors.at(
            span,
            "upcast takes either `with = Type` or `json = path::to::fn`, not both",
        );
    } else {
        step.set(errors, span, value);
    }
}
