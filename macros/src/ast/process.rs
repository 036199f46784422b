//! `#[process(..)]` input: the process manager's name and key, its `#[on]` handlers and
//! its `#[deadline]` handlers.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::{FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, ReturnType, Type};

use crate::ast::projection::{output_span, typed_arg};
use crate::attr::{self, last_ident, type_key, CratePath, Errors, Once};

pub struct Process {
    /// The impl block with the helper attributes removed.
    pub item: ItemImpl,
    pub krate: CratePath,
    /// The checkpoint name, the state rows' key, part of every command id.
    pub name: String,
    /// The field of every handled event holding the correlation key; `stream_id` keys by
    /// the event's stream.
    pub key: Option<Ident>,
    pub handlers: Vec<Handler>,
    pub deadlines: Vec<Handler>,
}

pub struct Handler {
    pub ident: Ident,
    /// Where a wrong return type is reported.
    pub output_span: Span,
    pub is_async: bool,
    pub takes_meta: bool,
    pub takes_ctx: bool,
    /// `T` of the event parameter `&T` (`None` for deadlines).
    pub event: Option<Type>,
    /// The declared return type; `()` when none.
    pub output: Type,
}

const ON_SHAPE: &str = "a process manager's `#[on]` handler looks like `async fn name(&mut self, \
                        event: &Event, meta: &EventMeta, ctx: &mut Ctx) -> Commands`; `meta`, \
                        `ctx` and `async` are optional";

const DEADLINE_SHAPE: &str = "a `#[deadline]` handler looks like `async fn name(&mut self, ctx: \
                              &mut Ctx) -> Commands`; `ctx` and `async` are optional";

impl Process {
    pub fn parse(args: TokenStream, mut item: ItemImpl, errors: &mut Errors) -> Self {
        let mut name = Once::<LitStr>::new("name");
        let mut krate = Once::new("crate");
        let mut key = Once::<Ident>::new("key");
        let parser = syn::meta::parser(|meta| {
            let span = attr::key_span(&meta);
            if meta.path.is_ident("name") {
                name.set(errors, span, attr::string_value(&meta)?);
            } else if meta.path.is_ident("crate") {
                krate.set(errors, span, CratePath::parse_value(&meta)?);
            } else if meta.path.is_ident("key") {
                key.set(errors, span, meta.value()?.parse()?);
            } else {
                attr::unknown_key(errors, &meta, "process", &["name", "key", "crate"])?;
            }
            Ok(())
        });
        let parsed = parser.parse2(args);
        errors.ok(parsed);

        let mut crate_path = CratePath::from_attrs(&item.attrs, errors);
        item.attrs.retain(|a| !a.path().is_ident("annals"));
        if let Some(path) = krate.take() {
            crate_path = CratePath::from_path(path);
        }
        if let Some((path, _)) = &item.trait_ {
            errors.spanned(
                path,
                "`#[process]` goes on the process state's inherent impl block, not on a trait impl",
            );
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.spanned(&item.generics, "process managers cannot be generic");
        }
        let name = match name.take() {
            Some(lit) if lit.value().is_empty() => {
                errors.spanned(&lit, "process name must not be empty");
                String::new()
            }
            Some(lit) => lit.value(),
            None => {
                errors.spanned(
                    &item.self_ty,
                    "a process manager needs a stable `name = \"..\"`: it keys the checkpoint, \
                     the stored states and every command id",
                );
                String::new()
            }
        };
        let key = key.take();
        if key.is_none() {
            errors.spanned(
                &item.self_ty,
                "a process manager needs `key = field`: the field of every handled event that \
                 holds the correlation key (`key = stream_id` for the event's stream id)",
            );
        }

        let mut handlers = Vec::new();
        let mut deadlines = Vec::new();
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else {
                continue;
            };
            let mut role = None::<&'static str>;
            method.attrs.retain(|a| {
                let found = if a.path().is_ident("on") {
                    "on"
                } else if a.path().is_ident("deadline") {
                    "deadline"
                } else {
                    return true;
                };
                if let syn::Meta::List(list) = &a.meta {
                    errors.spanned(list, format!("`#[{found}]` takes no arguments"));
                }
                if role.is_some() {
                    errors.spanned(a, "a method is one of `#[on]` or `#[deadline]`, once");
                } else {
                    role = Some(found);
                }
                false
            });
            match role {
                Some("on") => {
                    if let Some(handler) = parse_handler(method, true, errors) {
                        handlers.push(handler);
                    }
                }
                Some(_) => {
                    if let Some(handler) = parse_handler(method, false, errors) {
                        deadlines.push(handler);
                    }
                }
                None => {}
            }
        }
        for (i, handler) in handlers.iter().enumerate() {
            let Some(event) = &handler.event else {
                continue;
            };
            let key = type_key(event);
            if let Some(first) = handlers[..i]
                .iter()
                .find(|h| h.event.as_ref().map(type_key) == Some(key.clone()))
            {
                errors.spanned(
                    event,
                    format!("event `{key}` is already handled by `{}`", first.ident),
                );
            }
        }
        if handlers.is_empty() {
            errors.spanned(
                &item.self_ty,
                "a process manager needs at least one `#[on]` handler",
            );
        }
        Process {
            item,
            krate: crate_path,
            name,
            key,
            handlers,
            deadlines,
        }
    }
}

fn parse_handler(method: &ImplItemFn, on: bool, errors: &mut Errors) -> Option<Handler> {
    let shape = if on { ON_SHAPE } else { DEADLINE_SHAPE };
    let sig = &method.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(&sig.generics, "process handlers cannot be generic");
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if super::aggregate::receiver_ref(r) == Some(true) => {}
        Some(FnArg::Receiver(r)) => {
            errors.spanned(r, format!("take `&mut self` (the key's state); {shape}"));
        }
        _ => errors.spanned(
            &sig.ident,
            format!("`{}` must take `&mut self`; {shape}", sig.ident),
        ),
    }
    let mut typed = sig.inputs.iter().filter_map(typed_arg).peekable();
    let event = if on {
        match typed.next() {
            Some(Type::Reference(r)) if r.mutability.is_none() => Some((*r.elem).clone()),
            Some(other) => {
                errors.spanned(
                    other,
                    format!("take the event by shared reference; {shape}"),
                );
                return None;
            }
            None => {
                errors.spanned(
                    &sig.ident,
                    format!(
                        "handler `{}` is missing its event parameter; {shape}",
                        sig.ident
                    ),
                );
                return None;
            }
        }
    } else {
        None
    };
    let (mut takes_meta, mut takes_ctx) = (false, false);
    for param in typed {
        match param {
            Type::Reference(r)
                if on
                    && !takes_meta
                    && !takes_ctx
                    && r.mutability.is_none()
                    && last_ident(&r.elem).is_some_and(|i| i == "EventMeta") =>
            {
                takes_meta = true;
            }
            Type::Reference(r)
                if !takes_ctx
                    && r.mutability.is_some()
                    && last_ident(&r.elem).is_some_and(|i| i == "Ctx") =>
            {
                takes_ctx = true;
            }
            other => errors.spanned(other, format!("unexpected parameter; {shape}")),
        }
    }
    let output = match &sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => syn::parse_quote!(()),
    };
    Some(Handler {
        ident: sig.ident.clone(),
        output_span: output_span(sig),
        is_async: sig.asyncness.is_some(),
        takes_meta,
        takes_ctx,
        event,
        output,
    })
}
