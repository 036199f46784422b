//! `#[reactor(..)]` input: the reactor's name, its refusal policy, its `#[on]` handlers and
//! its `#[rejected]` handler.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::{FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, ReturnType, Type};

use crate::ast::projection::{output_span, typed_arg};
use crate::attr::{self, last_ident, type_key, CratePath, Errors, Once};

pub struct Reactor {
    /// The impl block with the helper attributes removed.
    pub item: ItemImpl,
    pub krate: CratePath,
    /// The checkpoint name, part of every command id.
    pub name: String,
    /// `rejected = stop | ignore`; `None` when not given.
    pub policy: Option<Ident>,
    pub handlers: Vec<Handler>,
    pub rejected: Option<Handler>,
}

pub struct Handler {
    pub ident: Ident,
    /// Where a wrong return type is reported.
    pub output_span: Span,
    pub is_async: bool,
    pub takes_meta: bool,
    /// `T` of the first parameter `&T`: the event (or `Rejection` for `#[rejected]`).
    pub input: Type,
    /// The declared return type; `()` when none.
    pub output: Type,
}

const ON_SHAPE: &str = "a reactor's `#[on]` handler looks like `async fn name(&self, event: \
                        &Event, meta: &EventMeta) -> Commands`; `meta` and `async` are optional";

const REJECTED_SHAPE: &str = "a `#[rejected]` handler looks like `async fn name(&self, \
                              rejection: &Rejection, meta: &EventMeta) -> Commands`; `meta` \
                              and `async` are optional";

impl Reactor {
    pub fn parse(args: TokenStream, mut item: ItemImpl, errors: &mut Errors) -> Self {
        let mut name = Once::<LitStr>::new("name");
        let mut krate = Once::new("crate");
        let mut policy = Once::<Ident>::new("rejected");
        let parser = syn::meta::parser(|meta| {
            let span = attr::key_span(&meta);
            if meta.path.is_ident("name") {
                name.set(errors, span, attr::string_value(&meta)?);
            } else if meta.path.is_ident("crate") {
                krate.set(errors, span, CratePath::parse_value(&meta)?);
            } else if meta.path.is_ident("rejected") {
                let value: Ident = meta.value()?.parse()?;
                if value == "stop" || value == "ignore" {
                    policy.set(errors, span, value);
                } else {
                    errors.spanned(
                        &value,
                        "`rejected` is `stop` (the default) or `ignore`; to compensate, mark a \
                         method `#[rejected]`",
                    );
                }
            } else {
                attr::unknown_key(errors, &meta, "reactor", &["name", "rejected", "crate"])?;
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
                "`#[reactor]` goes on the reactor's inherent impl block, not on a trait impl",
            );
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.spanned(&item.generics, "reactors cannot be generic");
        }
        let name = match name.take() {
            Some(lit) if lit.value().is_empty() => {
                errors.spanned(&lit, "reactor name must not be empty");
                String::new()
            }
            Some(lit) => lit.value(),
            None => {
                // The name is in every command id: a default taken from the type's name would
                // change them when the type is renamed.
                errors.spanned(
                    &item.self_ty,
                    "a reactor needs a stable `name = \"..\"`: it keys the checkpoint and every \
                     command id",
                );
                String::new()
            }
        };

        let mut handlers = Vec::new();
        let mut marked_on = 0usize;
        let mut rejected = Once::<Handler>::new("#[rejected]");
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else {
                continue;
            };
            let mut role = None::<(&'static str, Span)>;
            method.attrs.retain(|a| {
                let found = if a.path().is_ident("on") {
                    "on"
                } else if a.path().is_ident("rejected") {
                    "rejected"
                } else {
                    return true;
                };
                if let syn::Meta::List(list) = &a.meta {
                    errors.spanned(list, format!("`#[{found}]` takes no arguments"));
                }
                if role.is_some() {
                    errors.spanned(a, "a method is one of `#[on]` or `#[rejected]`, once");
                } else {
                    role = Some((found, attr::key_span_of(a)));
                }
                false
            });
            match role {
                Some(("on", _)) => {
                    marked_on += 1;
                    if let Some(handler) = parse_handler(method, ON_SHAPE, "event", errors) {
                        handlers.push(handler);
                    }
                }
                Some((_, span)) => {
                    if let Some(handler) =
                        parse_handler(method, REJECTED_SHAPE, "rejection", errors)
                    {
                        rejected.set(errors, span, handler);
                    }
                }
                None => {}
            }
        }
        for (i, handler) in handlers.iter().enumerate() {
            let key = type_key(&handler.input);
            if let Some(first) = handlers[..i].iter().find(|h| type_key(&h.input) == key) {
                errors.spanned(
                    &handler.input,
                    format!("event `{key}` is already handled by `{}`", first.ident),
                );
            }
        }
        if marked_on == 0 {
            errors.spanned(
                &item.self_ty,
                "a reactor needs at least one `#[on]` handler",
            );
        }
        let rejected = rejected.take();
        let policy = policy.take();
        if let (Some(handler), Some(policy)) = (&rejected, &policy) {
            errors.spanned(
                policy,
                format!(
                    "`rejected = {policy}` and a `#[rejected]` handler (`{}`) contradict each \
                     other: refusals go to the handler",
                    handler.ident
                ),
            );
        }
        Reactor {
            item,
            krate: crate_path,
            name,
            policy,
            handlers,
            rejected,
        }
    }
}

fn parse_handler(
    method: &ImplItemFn,
    shape: &str,
    what: &str,
    errors: &mut Errors,
) -> Option<Handler> {
    let sig = &method.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(&sig.generics, "reactor handlers cannot be generic");
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if super::aggregate::receiver_ref(r) == Some(false) => {}
        Some(FnArg::Receiver(r)) => {
            errors.spanned(r, format!("a reactor is stateless: take `&self`; {shape}"))
        }
        _ => errors.spanned(
            &sig.ident,
            format!("`{}` must take `&self`; {shape}", sig.ident),
        ),
    }
    let mut typed = sig.inputs.iter().filter_map(typed_arg);
    let input = match typed.next() {
        Some(Type::Reference(r)) if r.mutability.is_none() => Some((*r.elem).clone()),
        Some(other) => {
            errors.spanned(
                other,
                format!("take the {what} by shared reference; {shape}"),
            );
            None
        }
        None => {
            errors.spanned(
                &sig.ident,
                format!(
                    "handler `{}` is missing its {what} parameter; {shape}",
                    sig.ident
                ),
            );
            None
        }
    };
    let mut takes_meta = false;
    for param in typed {
        match param {
            Type::Reference(r)
                if !takes_meta
                    && r.mutability.is_none()
                    && last_ident(&r.elem).is_some_and(|i| i == "EventMeta") =>
            {
                takes_meta = true;
            }
            Type::Reference(r) if r.mutability.is_none() => errors.spanned(
                param,
                format!(
                    "unexpected parameter: a reactor reaches its services through `&self` (put \
                     them in its fields); {shape}"
                ),
            ),
            other => errors.spanned(other, format!("unexpected parameter; {shape}")),
        }
    }
    let output = match &sig.output {
        ReturnType::Type(_, ty) => (**ty).clone(),
        ReturnType::Default => syn::parse_quote!(()),
    };
    input.map(|input| Handler {
        ident: sig.ident.clone(),
        output_span: output_span(sig),
        is_async: sig.asyncness.is_some(),
        takes_meta,
        input,
        output,
    })
}
