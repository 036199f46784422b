//! `#[process(..)]` input: the process manager's name, key, services and refusal policy,
//! its `#[on]` handlers, its `#[deadline]` handlers and its `#[rejected]` handler.

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
    /// `services = T`, or the type the services-taking handlers name; `None`: `()`.
    pub services: Option<Type>,
    /// `rejected = stop | ignore`; `None` when not given.
    pub policy: Option<Ident>,
    pub handlers: Vec<Handler>,
    pub deadlines: Vec<Handler>,
    pub rejected: Option<Handler>,
}

pub struct Handler {
    pub ident: Ident,
    /// Where a wrong return type is reported.
    pub output_span: Span,
    pub is_async: bool,
    pub takes_meta: bool,
    pub takes_ctx: bool,
    /// `T` of the first parameter `&T`: the event of an `#[on]` handler, the `Rejection` of
    /// the `#[rejected]` one; `None` for deadlines.
    pub input: Option<Type>,
    /// `T` of a services parameter `&T`.
    pub services: Option<Type>,
    /// The declared return type; `()` when none.
    pub output: Type,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    On,
    Deadline,
    Rejected,
}

const ON_SHAPE: &str = "a process manager's `#[on]` handler looks like `async fn name(&mut self, \
                        event: &Event, meta: &EventMeta, services: &Services, ctx: &mut Ctx) \
                        -> Commands`; `meta`, `services`, `ctx` and `async` are optional";

const DEADLINE_SHAPE: &str = "a `#[deadline]` handler looks like `async fn name(&mut self, \
                              services: &Services, ctx: &mut Ctx) -> Commands`; `services`, \
                              `ctx` and `async` are optional";

const REJECTED_SHAPE: &str = "a process manager's `#[rejected]` handler looks like `async fn \
                              name(&mut self, rejection: &Rejection, services: &Services, ctx: \
                              &mut Ctx) -> Commands`; `services`, `ctx` and `async` are optional";

impl Role {
    fn shape(self) -> &'static str {
        match self {
            Role::On => ON_SHAPE,
            Role::Deadline => DEADLINE_SHAPE,
            Role::Rejected => REJECTED_SHAPE,
        }
    }
}

impl Process {
    pub fn parse(args: TokenStream, mut item: ItemImpl, errors: &mut Errors) -> Self {
        let mut name = Once::<LitStr>::new("name");
        let mut krate = Once::new("crate");
        let mut key = Once::<Ident>::new("key");
        let mut services = Once::<Type>::new("services");
        let mut policy = Once::<Ident>::new("rejected");
        let parser = syn::meta::parser(|meta| {
            let span = attr::key_span(&meta);
            if meta.path.is_ident("name") {
                name.set(errors, span, attr::string_value(&meta)?);
            } else if meta.path.is_ident("crate") {
                krate.set(errors, span, CratePath::parse_value(&meta)?);
            } else if meta.path.is_ident("key") {
                key.set(errors, span, meta.value()?.parse()?);
            } else if meta.path.is_ident("services") {
                services.set(errors, span, meta.value()?.parse()?);
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
                attr::unknown_key(
                    errors,
                    &meta,
                    "process",
                    &["name", "key", "services", "rejected", "crate"],
                )?;
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
        let mut rejected = Once::<Handler>::new("#[rejected]");
        for impl_item in &mut item.items {
            let ImplItem::Fn(method) = impl_item else {
                continue;
            };
            let mut role = None::<(Role, Span)>;
            method.attrs.retain(|a| {
                let (found, label) = if a.path().is_ident("on") {
                    (Role::On, "on")
                } else if a.path().is_ident("deadline") {
                    (Role::Deadline, "deadline")
                } else if a.path().is_ident("rejected") {
                    (Role::Rejected, "rejected")
                } else {
                    return true;
                };
                if let syn::Meta::List(list) = &a.meta {
                    errors.spanned(list, format!("`#[{label}]` takes no arguments"));
                }
                if role.is_some() {
                    errors.spanned(
                        a,
                        "a method is one of `#[on]`, `#[deadline]` or `#[rejected]`, once",
                    );
                } else {
                    role = Some((found, attr::key_span_of(a)));
                }
                false
            });
            let Some((role, span)) = role else {
                continue;
            };
            let Some(handler) = parse_handler(method, role, errors) else {
                continue;
            };
            match role {
                Role::On => handlers.push(handler),
                Role::Deadline => deadlines.push(handler),
                Role::Rejected => rejected.set(errors, span, handler),
            }
        }
        for (i, handler) in handlers.iter().enumerate() {
            let Some(event) = &handler.input else {
                continue;
            };
            let key = type_key(event);
            if let Some(first) = handlers[..i]
                .iter()
                .find(|h| h.input.as_ref().map(type_key) == Some(key.clone()))
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
        let services = resolve_services(
            services.take(),
            handlers.iter().chain(&deadlines).chain(&rejected),
            errors,
        );
        Process {
            item,
            krate: crate_path,
            name,
            key,
            services,
            policy,
            handlers,
            deadlines,
            rejected,
        }
    }
}

/// The declared services type, or the one every services-taking handler names.
fn resolve_services<'a>(
    declared: Option<Type>,
    handlers: impl Iterator<Item = &'a Handler>,
    errors: &mut Errors,
) -> Option<Type> {
    if declared.is_some() {
        return declared;
    }
    let mut first = None::<(&Type, &Ident)>;
    for handler in handlers {
        let Some(ty) = &handler.services else {
            continue;
        };
        match first {
            None => first = Some((ty, &handler.ident)),
            Some((expected, method)) if type_key(expected) != type_key(ty) => {
                errors.spanned(
                    ty,
                    format!(
                        "handlers take different services types: `{}` here, `{}` in `{method}`; \
                         declare one with `#[process(services = ..)]`",
                        type_key(ty),
                        type_key(expected),
                    ),
                );
            }
            Some(_) => {}
        }
    }
    first.map(|(ty, _)| ty.clone())
}

fn parse_handler(method: &ImplItemFn, role: Role, errors: &mut Errors) -> Option<Handler> {
    let shape = role.shape();
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
    let input = if role == Role::Deadline {
        None
    } else {
        let what = if role == Role::On {
            "event"
        } else {
            "rejection"
        };
        match typed.next() {
            Some(Type::Reference(r)) if r.mutability.is_none() => Some((*r.elem).clone()),
            Some(other) => {
                errors.spanned(
                    other,
                    format!("take the {what} by shared reference; {shape}"),
                );
                return None;
            }
            None => {
                errors.spanned(
                    &sig.ident,
                    format!(
                        "handler `{}` is missing its {what} parameter; {shape}",
                        sig.ident
                    ),
                );
                return None;
            }
        }
    };
    // The optional parameters come in this order: meta (1), services (2), ctx (3).
    let mut stage = 0;
    let (mut takes_meta, mut services, mut takes_ctx) = (false, None, false);
    for param in typed {
        let (at, what) = match param {
            Type::Reference(r)
                if r.mutability.is_none()
                    && last_ident(&r.elem).is_some_and(|i| i == "EventMeta") =>
            {
                if role != Role::On {
                    errors.spanned(
                        param,
                        format!(
                            "only an `#[on]` handler has a triggering event to take the \
                             `&EventMeta` of; {shape}"
                        ),
                    );
                    continue;
                }
                takes_meta = true;
                (1, "meta")
            }
            Type::Reference(r)
                if r.mutability.is_some() && last_ident(&r.elem).is_some_and(|i| i == "Ctx") =>
            {
                takes_ctx = true;
                (3, "ctx")
            }
            Type::Reference(r) if r.mutability.is_none() => {
                services = Some((*r.elem).clone());
                (2, "services")
            }
            Type::Reference(_) => {
                errors.spanned(
                    param,
                    format!(
                        "the services parameter is a shared reference, like `services: \
                         &Services`; {shape}"
                    ),
                );
                continue;
            }
            other => {
                errors.spanned(other, format!("unexpected parameter; {shape}"));
                continue;
            }
        };
        if at <= stage {
            errors.spanned(
                param,
                format!("unexpected `{what}` parameter here (once each, in order); {shape}"),
            );
        }
        stage = stage.max(at);
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
        input,
        services,
        output,
    })
}
