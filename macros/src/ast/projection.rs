//! `#[projection(..)]` input: the projection's name and its `#[on]` and `#[reset]` methods.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::{FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, LitStr, ReturnType, Type};

use crate::attr::{self, last_ident, type_key, CratePath, Errors, Once};

pub struct Projection {
    /// The impl block with the helper attributes removed.
    pub item: ItemImpl,
    pub krate: CratePath,
    /// The checkpoint name.
    pub name: String,
    /// The transaction type the methods take; `None` when none takes one (then the
    /// projection works with any store).
    pub tx: Option<Type>,
    pub handlers: Vec<OnHandler>,
    pub reset: Option<Method>,
}

/// How a method is called: which of the optional parameters it takes.
pub struct Method {
    pub ident: Ident,
    /// Where a wrong return type is reported: the declared type, or the method's name.
    pub output_span: Span,
    pub is_async: bool,
    pub takes_meta: bool,
    pub takes_tx: bool,
}

pub struct OnHandler {
    pub method: Method,
    /// `T` of the event parameter `&T`.
    pub event: Type,
}

const ON_SHAPE: &str = "an `#[on]` handler looks like `async fn name(&mut self, event: &Event, \
                        meta: &EventMeta, tx: &mut Tx) -> Result<(), E>`; `meta` and `tx` are \
                        optional, `async` too";

const RESET_SHAPE: &str =
    "a `#[reset]` method looks like `async fn name(&mut self, tx: &mut Tx) -> Result<(), E>`";

impl Projection {
    pub fn parse(args: TokenStream, mut item: ItemImpl, errors: &mut Errors) -> Self {
        let mut name = Once::<LitStr>::new("name");
        let mut krate = Once::new("crate");
        let parser = syn::meta::parser(|meta| {
            let span = attr::key_span(&meta);
            if meta.path.is_ident("name") {
                name.set(errors, span, attr::string_value(&meta)?);
            } else if meta.path.is_ident("crate") {
                krate.set(errors, span, CratePath::parse_value(&meta)?);
            } else {
                attr::unknown_key(errors, &meta, "projection", &["name", "crate"])?;
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
                "`#[projection]` goes on the read model's inherent impl block, not on a trait impl",
            );
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.spanned(&item.generics, "projections cannot be generic");
        }
        let name = match name.take() {
            Some(lit) if lit.value().is_empty() => {
                errors.spanned(&lit, "projection name must not be empty");
                String::new()
            }
            Some(lit) => lit.value(),
            None => last_ident(&item.self_ty)
                .map(Ident::to_string)
                .unwrap_or_default(),
        };

        let mut handlers = Vec::new();
        let mut marked_on = 0usize;
        let mut reset = Once::<Method>::new("#[reset]");
        let mut tx = None::<Type>;
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else {
                continue;
            };
            let mut role = None::<(&'static str, Span)>;
            method.attrs.retain(|a| {
                let found = if a.path().is_ident("on") {
                    "on"
                } else if a.path().is_ident("reset") {
                    "reset"
                } else {
                    return true;
                };
                if let syn::Meta::List(list) = &a.meta {
                    errors.spanned(list, format!("`#[{found}]` takes no arguments"));
                }
                if role.is_some() {
                    errors.spanned(a, "a method is one of `#[on]` or `#[reset]`, once");
                } else {
                    role = Some((found, attr::key_span_of(a)));
                }
                false
            });
            match role {
                Some(("on", _)) => {
                    marked_on += 1;
                    if let Some(handler) = parse_on(method, &mut tx, errors) {
                        handlers.push(handler);
                    }
                }
                Some((_, span)) => {
                    if let Some(method) = parse_reset(method, &mut tx, errors) {
                        reset.set(errors, span, method);
                    }
                }
                None => {}
            }
        }
        for (i, handler) in handlers.iter().enumerate() {
            let key = type_key(&handler.event);
            if let Some(first) = handlers[..i].iter().find(|h| type_key(&h.event) == key) {
                errors.spanned(
                    &handler.event,
                    format!(
                        "event `{key}` is already handled by `{}`",
                        first.method.ident
                    ),
                );
            }
        }
        if marked_on == 0 {
            errors.spanned(
                &item.self_ty,
                "a projection needs at least one `#[on]` handler",
            );
        }
        Projection {
            item,
            krate: crate_path,
            name,
            tx,
            handlers,
            reset: reset.take(),
        }
    }
}

fn parse_on(method: &ImplItemFn, tx: &mut Option<Type>, errors: &mut Errors) -> Option<OnHandler> {
    let sig = &method.sig;
    check_receiver(sig, ON_SHAPE, errors);
    let mut typed = sig.inputs.iter().filter_map(typed_arg);
    let event = match typed.next() {
        Some(Type::Reference(r)) if r.mutability.is_none() => Some((*r.elem).clone()),
        Some(other) => {
            errors.spanned(
                other,
                format!("take the event by shared reference; {ON_SHAPE}"),
            );
            None
        }
        None => {
            errors.spanned(
                &sig.ident,
                format!(
                    "handler `{}` is missing its event parameter; {ON_SHAPE}",
                    sig.ident
                ),
            );
            None
        }
    };
    let (takes_meta, takes_tx) = parse_extras(typed, tx, true, ON_SHAPE, errors);
    check_output(sig, errors);
    event.map(|event| OnHandler {
        method: Method {
            ident: sig.ident.clone(),
            output_span: output_span(sig),
            is_async: sig.asyncness.is_some(),
            takes_meta,
            takes_tx,
        },
        event,
    })
}

fn parse_reset(method: &ImplItemFn, tx: &mut Option<Type>, errors: &mut Errors) -> Option<Method> {
    let sig = &method.sig;
    check_receiver(sig, RESET_SHAPE, errors);
    let typed = sig.inputs.iter().filter_map(typed_arg);
    let (_, takes_tx) = parse_extras(typed, tx, false, RESET_SHAPE, errors);
    check_output(sig, errors);
    Some(Method {
        ident: sig.ident.clone(),
        output_span: output_span(sig),
        is_async: sig.asyncness.is_some(),
        takes_meta: false,
        takes_tx,
    })
}

/// `&EventMeta` (when allowed) then `&mut Tx`, each optional, in that order; records the
/// transaction type and checks every method names the same one.
fn parse_extras<'a>(
    params: impl Iterator<Item = &'a Type>,
    tx: &mut Option<Type>,
    meta_allowed: bool,
    shape: &str,
    errors: &mut Errors,
) -> (bool, bool) {
    let (mut takes_meta, mut takes_tx) = (false, false);
    for param in params {
        match param {
            Type::Reference(r)
                if meta_allowed
                    && !takes_meta
                    && !takes_tx
                    && r.mutability.is_none()
                    && last_ident(&r.elem).is_some_and(|i| i == "EventMeta") =>
            {
                takes_meta = true;
            }
            Type::Reference(r) if r.mutability.is_some() && !takes_tx => {
                takes_tx = true;
                match tx {
                    None => *tx = Some((*r.elem).clone()),
                    Some(expected) if type_key(expected) != type_key(&r.elem) => errors.spanned(
                        &r.elem,
                        format!(
                            "every method of a projection takes the same transaction type: \
                             `{}` here, `{}` before",
                            type_key(&r.elem),
                            type_key(expected)
                        ),
                    ),
                    Some(_) => {}
                }
            }
            other => errors.spanned(other, format!("unexpected parameter; {shape}")),
        }
    }
    (takes_meta, takes_tx)
}

pub(crate) fn check_receiver(sig: &syn::Signature, shape: &str, errors: &mut Errors) {
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(&sig.generics, "projection methods cannot be generic");
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if super::aggregate::receiver_ref(r).is_some() => {}
        Some(FnArg::Receiver(r)) => {
            errors.spanned(r, format!("take `&mut self` or `&self`; {shape}"));
        }
        _ => errors.spanned(
            &sig.ident,
            format!("`{}` must take `&mut self`; {shape}", sig.ident),
        ),
    }
}

/// Nothing, `()` or a `Result<(), E>`; the compiler checks `E` through
/// `__private::ProjectionOutcome`.
fn check_output(sig: &syn::Signature, errors: &mut Errors) {
    if let ReturnType::Type(_, ty) = &sig.output {
        let ok = match &**ty {
            Type::Tuple(t) => t.elems.is_empty(),
            other => last_ident(other).is_some_and(|i| i == "Result"),
        };
        if !ok {
            errors.spanned(
                ty,
                "projection methods return nothing or `Result<(), E>` with an error `E` that \
                 converts into `Box<dyn Error + Send + Sync>`",
            );
        }
    }
}

pub(crate) fn output_span(sig: &syn::Signature) -> Span {
    match &sig.output {
        ReturnType::Type(_, ty) => syn::spanned::Spanned::span(&**ty),
        ReturnType::Default => sig.ident.span(),
    }
}

pub(crate) fn typed_arg(arg: &FnArg) -> Option<&Type> {
    match arg {
        FnArg::Typed(pat) => Some(&pat.ty),
        FnArg::Receiver(_) => None,
    }
}
