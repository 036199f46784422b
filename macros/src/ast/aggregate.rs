//! `#[aggregate(..)]` input: the attribute's arguments and the impl block's `#[command]`
//! and `#[apply]` methods.
//!
//! Parsing is lenient: it records every error and keeps what it could read, so the
//! fallback expansion can still declare the parts that are well formed.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, LitInt, LitStr, ReturnType, Token,
    Type, Visibility,
};

use crate::attr::{self, last_ident, type_key, CratePath, Errors, Once};

pub struct Aggregate {
    /// The impl block with the helper attributes removed.
    pub item: ItemImpl,
    pub krate: CratePath,
    pub self_ident: Option<Ident>,
    /// The stream type name.
    pub name: String,
    pub id: Option<Type>,
    pub event: Option<Type>,
    pub error: Option<Type>,
    /// `None`: no handler takes services and none were declared, so `()`.
    pub services: Option<Type>,
    pub snapshot: Option<Snapshot>,
    pub ignore: Vec<Type>,
    /// `None` when `command_enum(skip)`.
    pub command_enum: Option<CommandEnum>,
    pub handlers: Vec<Handler>,
    pub appliers: Vec<Applier>,
}

pub struct Snapshot {
    /// The `snapshot` key, where serde errors on the aggregate land.
    pub span: Span,
    pub every: u64,
    pub version: u32,
}

pub struct CommandEnum {
    pub ident: Ident,
    pub vis: Visibility,
    pub tag: String,
    pub content: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Policy {
    Create,
    Existing,
    Any,
}

pub struct Handler {
    pub method: Ident,
    pub policy: Policy,
    pub is_async: bool,
    /// The command type (second parameter).
    pub command: Type,
    /// `T` of a third parameter `&T`.
    pub services: Option<Type>,
    /// The declared return type.
    pub output: Option<Type>,
}

pub struct Applier {
    pub method: Ident,
    /// `T` of the parameter `&T`.
    pub event: Type,
}

const KEYS: &[&str] = &[
    "id",
    "event",
    "error",
    "services",
    "ignore",
    "snapshot",
    "name",
    "command_enum",
    "crate",
];

#[derive(Default)]
struct Args {
    krate: Option<syn::Path>,
    name: Option<LitStr>,
    id: Option<Type>,
    event: Option<Type>,
    error: Option<Type>,
    services: Option<Type>,
    ignore: Vec<Type>,
    snapshot: Option<Snapshot>,
    command_enum: CommandEnumArgs,
}

#[derive(Default)]
struct CommandEnumArgs {
    skip: bool,
    name: Option<Ident>,
    vis: Option<Visibility>,
    tag: Option<LitStr>,
    content: Option<LitStr>,
}

impl Aggregate {
    pub fn parse(args: TokenStream, mut item: ItemImpl, errors: &mut Errors) -> Self {
        let args = parse_args(args, errors);
        let mut krate = CratePath::from_attrs(&item.attrs, errors);
        item.attrs.retain(|a| !a.path().is_ident("annals"));
        if let Some(path) = args.krate {
            krate = CratePath::from_path(path);
        }

        if let Some((path, _)) = &item.trait_ {
            errors.spanned(
                path,
                "`#[aggregate]` goes on the aggregate's inherent impl block (`impl Account { .. }`), \
                 not on a trait impl",
            );
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            errors.spanned(&item.generics, "aggregates cannot be generic");
        }
        let self_ident = match &*item.self_ty {
            Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
            other => {
                errors.spanned(
                    other,
                    "`#[aggregate]` expects the impl block of a named struct",
                );
                None
            }
        };
        let name = match &args.name {
            Some(lit) => {
                let value = lit.value();
                if value.is_empty() {
                    errors.spanned(lit, "aggregate name must not be empty");
                }
                value
            }
            None => self_ident
                .as_ref()
                .map(Ident::to_string)
                .unwrap_or_default(),
        };

        let mut handlers: Vec<Handler> = Vec::new();
        let mut appliers: Vec<Applier> = Vec::new();
        for impl_item in &mut item.items {
            match impl_item {
                ImplItem::Fn(method) => {
                    parse_method(method, errors, &mut handlers, &mut appliers);
                }
                ImplItem::Const(c) => strip_misplaced(&mut c.attrs, errors),
                ImplItem::Type(t) => strip_misplaced(&mut t.attrs, errors),
                ImplItem::Macro(m) => strip_misplaced(&mut m.attrs, errors),
                _ => {}
            }
        }
        check_duplicates(&handlers, &appliers, &args.ignore, errors);
        let services = resolve_services(args.services, &handlers, errors);

        let missing =
            |key: &str, example: &str| format!("`#[aggregate]` is missing `{key} = {example}`");
        for (value, key, example) in [
            (&args.id, "id", "IdType"),
            (&args.event, "event", "EventEnum"),
            (&args.error, "error", "ErrorType"),
        ] {
            if value.is_none() {
                errors.at(Span::call_site(), missing(key, example));
            }
        }

        let command_enum = match (&args.command_enum, &self_ident) {
            (c, _) if c.skip => None,
            (_, None) => None,
            (c, Some(ident)) => Some(CommandEnum {
                ident: c
                    .name
                    .clone()
                    .unwrap_or_else(|| quote::format_ident!("{}Command", ident)),
                vis: c.vis.clone().unwrap_or(Visibility::Inherited),
                tag: c
                    .tag
                    .as_ref()
                    .map_or_else(|| "command".to_owned(), LitStr::value),
                content: c.content.as_ref().map(LitStr::value),
            }),
        };
        if let Some(command_enum) = &command_enum {
            check_variant_names(command_enum, &handlers, errors);
        }

        Aggregate {
            item,
            krate,
            self_ident,
            name,
            id: args.id,
            event: args.event,
            error: args.error,
            services,
            snapshot: args.snapshot,
            ignore: args.ignore,
            command_enum,
            handlers,
            appliers,
        }
    }
}

fn parse_args(args: TokenStream, errors: &mut Errors) -> Args {
    let mut krate = Once::new("crate");
    let mut name = Once::new("name");
    let mut id = Once::new("id");
    let mut event = Once::new("event");
    let mut error = Once::new("error");
    let mut services = Once::new("services");
    let mut ignore = Once::<Vec<Type>>::new("ignore");
    let mut snapshot = Once::new("snapshot");
    let mut command_enum = Once::new("command_enum");
    let parser = syn::meta::parser(|meta| {
        let span = attr::key_span(&meta);
        if meta.path.is_ident("id") {
            id.set(errors, span, meta.value()?.parse::<Type>()?);
        } else if meta.path.is_ident("event") {
            event.set(errors, span, meta.value()?.parse::<Type>()?);
        } else if meta.path.is_ident("error") {
            error.set(errors, span, meta.value()?.parse::<Type>()?);
        } else if meta.path.is_ident("services") {
            services.set(errors, span, meta.value()?.parse::<Type>()?);
        } else if meta.path.is_ident("name") {
            name.set(errors, span, attr::string_value(&meta)?);
        } else if meta.path.is_ident("crate") {
            krate.set(errors, span, CratePath::parse_value(&meta)?);
        } else if meta.path.is_ident("ignore") {
            let content;
            syn::parenthesized!(content in meta.input);
            let types = Punctuated::<Type, Token![,]>::parse_terminated(&content)?;
            ignore.set(errors, span, types.into_iter().collect());
        } else if meta.path.is_ident("snapshot") {
            let value = parse_snapshot(&meta, errors)?;
            snapshot.set(errors, span, value);
        } else if meta.path.is_ident("command_enum") {
            let value = parse_command_enum(&meta, errors)?;
            command_enum.set(errors, span, value);
        } else {
            attr::unknown_key(errors, &meta, "aggregate", KEYS)?;
        }
        Ok(())
    });
    let parsed = parser.parse2(args);
    errors.ok(parsed);
    Args {
        krate: krate.take(),
        name: name.take(),
        id: id.take(),
        event: event.take(),
        error: error.take(),
        services: services.take(),
        ignore: ignore.take().unwrap_or_default(),
        snapshot: snapshot.take().flatten(),
        command_enum: command_enum.take().unwrap_or_default(),
    }
}

/// `snapshot(every = N, version = M)`; `version` defaults to 1.
fn parse_snapshot(
    meta: &syn::meta::ParseNestedMeta<'_>,
    errors: &mut Errors,
) -> syn::Result<Option<Snapshot>> {
    let span = attr::key_span(meta);
    let mut every = Once::<(LitInt, u64)>::new("every");
    let mut version = Once::<(LitInt, u32)>::new("version");
    meta.parse_nested_meta(|inner| {
        let key = attr::key_span(&inner);
        if inner.path.is_ident("every") {
            every.set(errors, key, attr::u64_value(&inner)?);
        } else if inner.path.is_ident("version") {
            version.set(errors, key, attr::u32_value(&inner)?);
        } else {
            attr::unknown_key(errors, &inner, "snapshot", &["every", "version"])?;
        }
        Ok(())
    })?;
    let every = match every.take() {
        Some((lit, 0)) => {
            errors.spanned(
                lit,
                "`every` must be at least 1 (leave out `snapshot` for none)",
            );
            return Ok(None);
        }
        Some((_, n)) => n,
        None => {
            errors.at(span, "snapshot is missing `every = <number of events>`");
            return Ok(None);
        }
    };
    let version = version.take().map_or(1, |(_, v)| v);
    Ok(Some(Snapshot {
        span,
        every,
        version,
    }))
}

/// `command_enum(skip)` or `command_enum(name = Ident, vis = pub, tag = "..", content = "..")`.
fn parse_command_enum(
    meta: &syn::meta::ParseNestedMeta<'_>,
    errors: &mut Errors,
) -> syn::Result<CommandEnumArgs> {
    let mut skip = Once::new("skip");
    let mut name = Once::new("name");
    let mut vis = Once::new("vis");
    let mut tag = Once::new("tag");
    let mut content = Once::new("content");
    meta.parse_nested_meta(|inner| {
        let key = attr::key_span(&inner);
        if inner.path.is_ident("skip") {
            skip.set(errors, key, ());
        } else if inner.path.is_ident("name") {
            name.set(errors, key, inner.value()?.parse::<Ident>()?);
        } else if inner.path.is_ident("vis") {
            vis.set(errors, key, inner.value()?.parse::<Visibility>()?);
        } else if inner.path.is_ident("tag") {
            tag.set(errors, key, attr::string_value(&inner)?);
        } else if inner.path.is_ident("content") {
            content.set(errors, key, attr::string_value(&inner)?);
        } else {
            attr::unknown_key(
                errors,
                &inner,
                "command_enum",
                &["skip", "name", "vis", "tag", "content"],
            )?;
        }
        Ok(())
    })?;
    let skip_span = skip.span();
    let args = CommandEnumArgs {
        skip: skip.take().is_some(),
        name: name.take(),
        vis: vis.take(),
        tag: tag.take(),
        content: content.take(),
    };
    if let Some(span) = skip_span {
        if args.name.is_some() || args.vis.is_some() || args.tag.is_some() || args.content.is_some()
        {
            errors.at(
                span,
                "`skip` cannot be combined with other `command_enum` keys",
            );
        }
    }
    for lit in [&args.tag, &args.content].into_iter().flatten() {
        if lit.value().is_empty() {
            errors.spanned(lit, "serde tag names must not be empty");
        }
    }
    Ok(args)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Command(Policy),
    Apply,
}

/// Reads and strips `#[command]` / `#[apply]` from one method, then checks its signature.
fn parse_method(
    method: &mut ImplItemFn,
    errors: &mut Errors,
    handlers: &mut Vec<Handler>,
    appliers: &mut Vec<Applier>,
) {
    let mut role = None::<(Span, Role)>;
    let mut kept = Vec::with_capacity(method.attrs.len());
    for attribute in std::mem::take(&mut method.attrs) {
        let found = if attribute.path().is_ident("command") {
            parse_command_attr(&attribute, errors).map(Role::Command)
        } else if attribute.path().is_ident("apply") {
            if let syn::Meta::Path(_) = attribute.meta {
                Some(Role::Apply)
            } else {
                errors.spanned(&attribute, "`#[apply]` takes no arguments");
                Some(Role::Apply)
            }
        } else {
            kept.push(attribute);
            continue;
        };
        let span = attribute.path().span();
        match (role, found) {
            (Some(_), Some(_)) => errors.at(
                span,
                "a method is either one `#[command]` handler or one `#[apply]` method",
            ),
            (None, Some(found)) => role = Some((span, found)),
            (_, None) => {}
        }
    }
    method.attrs = kept;
    match role {
        Some((_, Role::Command(policy))) => {
            if let Some(handler) = parse_handler(method, policy, errors) {
                handlers.push(handler);
            }
        }
        Some((_, Role::Apply)) => {
            if let Some(applier) = parse_applier(method, errors) {
                appliers.push(applier);
            }
        }
        None => {}
    }
}

/// `#[command]`, `#[command(create)]`, `#[command(existing)]` or `#[command(any)]`.
fn parse_command_attr(attribute: &Attribute, errors: &mut Errors) -> Option<Policy> {
    if let syn::Meta::Path(_) = attribute.meta {
        return Some(Policy::Existing);
    }
    let mut policy = Once::<Policy>::new("policy");
    let parsed = attribute.parse_nested_meta(|meta| {
        let span = attr::key_span(&meta);
        let value = if meta.path.is_ident("create") {
            Policy::Create
        } else if meta.path.is_ident("existing") {
            Policy::Existing
        } else if meta.path.is_ident("any") {
            Policy::Any
        } else {
            return attr::unknown_key(errors, &meta, "command", &["create", "existing", "any"]);
        };
        if policy.get().is_some() {
            errors.at(
                span,
                "a handler has one stream policy: `create`, `existing` or `any`",
            );
        } else {
            policy.set(errors, span, value);
        }
        Ok(())
    });
    errors.ok(parsed);
    Some(policy.take().unwrap_or(Policy::Existing))
}

const HANDLER_SHAPE: &str =
    "a command handler looks like `fn name(&self, command: Command) -> Result<T, Error>`, \
     optionally `async` and with a third parameter `services: &Services`";

fn parse_handler(method: &ImplItemFn, policy: Policy, errors: &mut Errors) -> Option<Handler> {
    let sig = &method.sig;
    check_plain_fn(sig, "command handlers", errors);
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if receiver_ref(r) == Some(false) => {}
        Some(FnArg::Receiver(r)) if receiver_ref(r) == Some(true) => {
            errors.spanned(
                r,
                "command handlers take `&self`, not `&mut self`: state changes only through \
                 the events they return",
            );
        }
        Some(FnArg::Receiver(r)) => {
            errors.spanned(r, format!("command handlers take `&self`; {HANDLER_SHAPE}"));
        }
        _ => {
            errors.spanned(
                &sig.ident,
                format!(
                    "command handler `{}` must take `&self`; {HANDLER_SHAPE}",
                    sig.ident
                ),
            );
        }
    }
    let command = match sig.inputs.iter().find_map(typed_arg) {
        Some(ty) => match ty {
            Type::Reference(r) => {
                errors.spanned(
                    r,
                    "command handlers take the command by value (it is cloned when a conflict \
                     makes the handler run again)",
                );
                None
            }
            ty => Some(ty.clone()),
        },
        None => {
            errors.spanned(
                &sig.ident,
                format!(
                    "command handler `{}` is missing its command parameter; {HANDLER_SHAPE}",
                    sig.ident
                ),
            );
            None
        }
    };
    let mut typed = sig.inputs.iter().filter_map(typed_arg).skip(1);
    let services = match typed.next() {
        Some(Type::Reference(r)) if r.mutability.is_none() => Some((*r.elem).clone()),
        Some(other) => {
            errors.spanned(
                other,
                "the services parameter is a shared reference, like `services: &Services`",
            );
            None
        }
        None => None,
    };
    for extra in typed {
        errors.spanned(extra, format!("unexpected parameter; {HANDLER_SHAPE}"));
    }
    let output = match &sig.output {
        ReturnType::Type(_, ty) => Some((**ty).clone()),
        ReturnType::Default => {
            errors.spanned(
                &sig.ident,
                format!(
                    "command handler `{}` must return `Result<T, Error>` where `T` is the \
                     events to append (an event, the enum, a `Vec` or `Option` of those, or `()`)",
                    sig.ident
                ),
            );
            None
        }
    };
    command.map(|command| Handler {
        method: sig.ident.clone(),
        policy,
        is_async: sig.asyncness.is_some(),
        command,
        services,
        output,
    })
}

const APPLY_SHAPE: &str = "an `#[apply]` method looks like `fn name(&mut self, event: &Event)`";

fn parse_applier(method: &ImplItemFn, errors: &mut Errors) -> Option<Applier> {
    let sig = &method.sig;
    check_plain_fn(sig, "`#[apply]` methods", errors);
    if let Some(asyncness) = &sig.asyncness {
        errors.spanned(
            asyncness,
            "`#[apply]` methods cannot be async: they only fold an event into the state",
        );
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if receiver_ref(r) == Some(true) => {}
        Some(FnArg::Receiver(r)) => {
            errors.spanned(
                r,
                format!("`#[apply]` methods take `&mut self`; {APPLY_SHAPE}"),
            );
        }
        _ => errors.spanned(
            &sig.ident,
            format!(
                "`#[apply]` method `{}` must take `&mut self`; {APPLY_SHAPE}",
                sig.ident
            ),
        ),
    }
    let mut typed = sig.inputs.iter().filter_map(typed_arg);
    let event = match typed.next() {
        Some(Type::Reference(r)) if r.mutability.is_none() => Some((*r.elem).clone()),
        Some(other) => {
            errors.spanned(
                other,
                format!("`#[apply]` methods take the event by shared reference; {APPLY_SHAPE}"),
            );
            None
        }
        None => {
            errors.spanned(
                &sig.ident,
                format!(
                    "`#[apply]` method `{}` is missing its event parameter; {APPLY_SHAPE}",
                    sig.ident
                ),
            );
            None
        }
    };
    for extra in typed {
        errors.spanned(extra, format!("unexpected parameter; {APPLY_SHAPE}"));
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        let unit = matches!(&**ty, Type::Tuple(t) if t.elems.is_empty());
        if !unit {
            errors.spanned(ty, "`#[apply]` methods return nothing: they cannot fail");
        }
    }
    event.map(|event| Applier {
        method: sig.ident.clone(),
        event,
    })
}

/// No generics, `unsafe`, `extern` or variadics.
fn check_plain_fn(sig: &syn::Signature, what: &str, errors: &mut Errors) {
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(&sig.generics, format!("{what} cannot be generic"));
    }
    if let syn::Safety::Unsafe(unsafety) = &sig.safety {
        errors.spanned(unsafety, format!("{what} cannot be `unsafe`"));
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, format!("{what} cannot have an `extern` ABI"));
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, format!("{what} cannot be variadic"));
    }
}

fn typed_arg(arg: &FnArg) -> Option<&Type> {
    match arg {
        FnArg::Typed(pat) => Some(&pat.ty),
        FnArg::Receiver(_) => None,
    }
}

fn strip_misplaced(attrs: &mut Vec<Attribute>, errors: &mut Errors) {
    attrs.retain(|a| {
        let helper = a.path().is_ident("command") || a.path().is_ident("apply");
        if helper {
            errors.spanned(a, "`#[command]` and `#[apply]` go on methods");
        }
        !helper
    });
}

/// One handler per command type, one `#[apply]` per event, and nothing both applied and
/// ignored.
fn check_duplicates(
    handlers: &[Handler],
    appliers: &[Applier],
    ignore: &[Type],
    errors: &mut Errors,
) {
    for (i, handler) in handlers.iter().enumerate() {
        let key = type_key(&handler.command);
        if let Some(first) = handlers[..i].iter().find(|h| type_key(&h.command) == key) {
            errors.spanned(
                &handler.command,
                format!("command `{key}` is already handled by `{}`", first.method),
            );
        }
    }
    for (i, applier) in appliers.iter().enumerate() {
        let key = type_key(&applier.event);
        if let Some(first) = appliers[..i].iter().find(|a| type_key(&a.event) == key) {
            errors.spanned(
                &applier.event,
                format!("event `{key}` is already applied by `{}`", first.method),
            );
        }
    }
    for (i, ignored) in ignore.iter().enumerate() {
        let key = type_key(ignored);
        if let Some(applier) = appliers.iter().find(|a| type_key(&a.event) == key) {
            errors.spanned(
                ignored,
                format!(
                    "event `{key}` is ignored but also applied by `{}`",
                    applier.method
                ),
            );
        } else if ignore[..i].iter().any(|t| type_key(t) == key) {
            errors.spanned(ignored, format!("event `{key}` is ignored twice"));
        }
    }
}

/// The declared services type, or the one every services-taking handler names.
fn resolve_services(
    declared: Option<Type>,
    handlers: &[Handler],
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
            None => first = Some((ty, &handler.method)),
            Some((expected, method)) if type_key(expected) != type_key(ty) => {
                errors.spanned(
                    ty,
                    format!(
                        "handlers take different services types: `{}` here, `{}` in `{method}`; \
                         declare one with `#[aggregate(services = ..)]`",
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

/// The command enum's variants are named after the command types.
fn check_variant_names(command_enum: &CommandEnum, handlers: &[Handler], errors: &mut Errors) {
    for (i, handler) in handlers.iter().enumerate() {
        let Some(ident) = last_ident(&handler.command) else {
            errors.spanned(
                &handler.command,
                format!(
                    "`{}` needs a variant named after the command type, which must be a path; \
                     or leave the enum out with `command_enum(skip)`",
                    command_enum.ident
                ),
            );
            continue;
        };
        let clash = handlers[..i].iter().any(|h| {
            last_ident(&h.command) == Some(ident)
                && type_key(&h.command) != type_key(&handler.command)
        });
        if clash {
            errors.spanned(
                &handler.command,
                format!(
                    "two command types are named `{ident}`, so `{}` cannot have a variant for \
                     each; rename one, or leave the enum out with `command_enum(skip)`",
                    command_enum.ident
                ),
            );
        }
    }
}

/// `Some(is_mut)` for a `&self` / `&mut self` receiver, `None` for `self`, `mut self` and
/// typed receivers.
pub(crate) fn receiver_ref(receiver: &syn::Receiver) -> Option<bool> {
    match &receiver.kind {
        syn::ReceiverKind::Reference(_, _, mutability) => Some(mutability.is_some()),
        _ => None,
    }
}
