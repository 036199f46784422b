//! Attribute parsing helpers shared by every macro: error collection, keys that may be
//! given once, and the `#[annals(crate = "..")]` attribute.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use syn::meta::ParseNestedMeta;
use syn::parse::ParseStream;
use syn::spanned::Spanned;
use syn::{Attribute, LitInt, LitStr, Path, Token};

/// Collects every error found while parsing and validating one item, so they are all
/// reported together.
#[derive(Default)]
pub struct Errors {
    error: Option<syn::Error>,
}

impl Errors {
    pub fn new() -> Self {
        Errors::default()
    }

    pub fn push(&mut self, error: syn::Error) {
        match &mut self.error {
            Some(existing) => existing.combine(error),
            None => self.error = Some(error),
        }
    }

    pub fn spanned(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Keeps the value of a fallible step, recording its error.
    pub fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.push(error);
                None
            }
        }
    }

    pub fn finish(self) -> syn::Result<()> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// A key that may appear at most once; remembers where it was given.
pub struct Once<T> {
    key: &'static str,
    value: Option<(Span, T)>,
}

impl<T> Once<T> {
    pub fn new(key: &'static str) -> Self {
        Once { key, value: None }
    }

    /// Stores the value, or records a duplicate-key error spanned at the second key.
    pub fn set(&mut self, errors: &mut Errors, key_span: Span, value: T) {
        if self.value.is_some() {
            errors.at(key_span, format!("duplicate `{}` key", self.key));
        } else {
            self.value = Some((key_span, value));
        }
    }

    pub fn get(&self) -> Option<&T> {
        self.value.as_ref().map(|(_, v)| v)
    }

    pub fn span(&self) -> Option<Span> {
        self.value.as_ref().map(|(s, _)| *s)
    }

    pub fn take(self) -> Option<T> {
        self.value.map(|(_, v)| v)
    }
}

/// The span of a nested-meta key (its path).
pub fn key_span(meta: &ParseNestedMeta<'_>) -> Span {
    meta.path.span()
}

/// The key as written, for messages.
pub fn key_name(meta: &ParseNestedMeta<'_>) -> String {
    meta.path.to_token_stream().to_string().replace(' ', "")
}

/// Records an unknown key (listing the accepted ones) and skips its value, so the keys
/// after it are still checked.
pub fn unknown_key(
    errors: &mut Errors,
    meta: &ParseNestedMeta<'_>,
    what: &str,
    expected: &[&str],
) -> syn::Result<()> {
    let list = expected
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    errors.at(
        key_span(meta),
        format!(
            "unknown {what} key `{}`; expected one of {list}",
            key_name(meta)
        ),
    );
    skip_value(meta.input)
}

/// Skips the rest of one nested-meta entry: `= value` or `(...)`, up to the next comma.
pub fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    while !input.is_empty() && !input.peek(Token![,]) {
        input.parse::<TokenTree>()?;
    }
    Ok(())
}

/// Parses `= "string"` after a key.
pub fn string_value(meta: &ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    meta.value()?.parse::<LitStr>()
}

/// Parses `= <integer>` after a key as a `u64`, spanned at the literal on error.
pub fn u64_value(meta: &ParseNestedMeta<'_>) -> syn::Result<(LitInt, u64)> {
    let lit = meta.value()?.parse::<LitInt>()?;
    let value = lit.base10_parse::<u64>()?;
    Ok((lit, value))
}

/// Parses `= <integer>` after a key as a `u32`.
pub fn u32_value(meta: &ParseNestedMeta<'_>) -> syn::Result<(LitInt, u32)> {
    let lit = meta.value()?.parse::<LitInt>()?;
    let value = lit.base10_parse::<u32>()?;
    Ok((lit, value))
}

/// The path of the runtime crate in generated code: `::annals` unless overridden with
/// `#[annals(crate = "path")]`.
pub struct CratePath {
    path: Option<Path>,
}

impl CratePath {
    pub fn from_path(path: Path) -> Self {
        CratePath { path: Some(path) }
    }

    /// Parses `crate = "path"` given as a nested-meta entry.
    pub fn parse_value(meta: &ParseNestedMeta<'_>) -> syn::Result<Path> {
        let lit = string_value(meta)?;
        lit.parse::<Path>()
            .map_err(|_| syn::Error::new(lit.span(), format!("`{}` is not a path", lit.value())))
    }

    /// Reads every `#[annals(..)]` attribute: only `crate = "path"` is accepted.
    pub fn from_attrs(attrs: &[Attribute], errors: &mut Errors) -> Self {
        let mut krate = Once::new("crate");
        for attr in attrs.iter().filter(|a| a.path().is_ident("annals")) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("crate") {
                    let span = key_span(&meta);
                    match CratePath::parse_value(&meta) {
                        Ok(path) => krate.set(errors, span, path),
                        Err(e) => errors.push(e),
                    }
                    Ok(())
                } else {
                    unknown_key(errors, &meta, "annals", &["crate"])
                }
            });
            errors.ok(parsed);
        }
        CratePath { path: krate.take() }
    }

    /// `::annals` or the user's path.
    pub fn root(&self) -> TokenStream {
        match &self.path {
            Some(path) => path.to_token_stream(),
            None => quote!(::annals),
        }
    }

    /// `<root>::__private`.
    pub fn private(&self) -> TokenStream {
        let root = self.root();
        quote!(#root::__private)
    }
}

/// The identifier text of a type's last path segment, if it is a plain path.
pub fn last_ident(ty: &syn::Type) -> Option<&syn::Ident> {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| &s.ident),
        syn::Type::Group(g) => last_ident(&g.elem),
        syn::Type::Paren(p) => last_ident(&p.elem),
        _ => None,
    }
}

/// A type as written, without spaces, for comparing types and naming them in messages.
pub fn type_key(ty: &syn::Type) -> String {
    ty.to_token_stream().to_string().replace(' ', "")
}

/// The span of an attribute's path (`on` in `#[on]`).
pub fn key_span_of(attr: &syn::Attribute) -> Span {
    attr.path().span()
}
