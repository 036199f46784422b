//! `#[aggregate(..)]`: `impl Aggregate` with the apply dispatch, `impl Handle<C>` for each
//! `#[command]` method, and the serializable `<Aggregate>Command` enum.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{ItemImpl, Type};

use crate::ast::aggregate::{Aggregate, CommandEnum, Handler, Policy};
use crate::attr::{last_ident, type_key, Errors};

pub fn attribute(args: TokenStream, item: TokenStream) -> TokenStream {
    let item_impl = match syn::parse2::<ItemImpl>(item.clone()) {
        Ok(item_impl) => item_impl,
        Err(_) => {
            let mut tokens = syn::Error::new(
                Span::call_site(),
                "`#[aggregate]` goes on the aggregate's impl block: `impl Account { .. }`",
            )
            .to_compile_error();
            tokens.extend(item);
            return tokens;
        }
    };
    let mut errors = Errors::new();
    let aggregate = Aggregate::parse(args, item_impl, &mut errors);
    match errors.finish() {
        Ok(()) => generate(&aggregate),
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(fallback(&aggregate));
            tokens
        }
    }
}

/// The expansion, or every error (for the snapshot tests; the macro itself uses
/// [`attribute`]).
#[cfg(test)]
pub fn expand(args: TokenStream, item: ItemImpl) -> syn::Result<TokenStream> {
    let mut errors = Errors::new();
    let aggregate = Aggregate::parse(args, item, &mut errors);
    errors.finish()?;
    Ok(generate(&aggregate))
}

/// Everything is known to be present once parsing reported no error.
struct Parts<'a> {
    root: TokenStream,
    private: TokenStream,
    self_ty: &'a Type,
    id: &'a Type,
    event: &'a Type,
    error: &'a Type,
    services: TokenStream,
}

fn parts(aggregate: &Aggregate) -> Option<Parts<'_>> {
    Some(Parts {
        root: aggregate.krate.root(),
        private: aggregate.krate.private(),
        self_ty: &aggregate.item.self_ty,
        id: aggregate.id.as_ref()?,
        event: aggregate.event.as_ref()?,
        error: aggregate.error.as_ref()?,
        services: aggregate
            .services
            .as_ref()
            .map_or_else(|| quote!(()), ToTokens::to_token_stream),
    })
}

fn generate(aggregate: &Aggregate) -> TokenStream {
    let item = &aggregate.item;
    let Some(parts) = parts(aggregate) else {
        return item.to_token_stream();
    };
    let aggregate_impl = aggregate_impl(aggregate, &parts);
    let apply_impls = apply_impls(aggregate, &parts);
    let handle_impls = aggregate.handlers.iter().map(|h| handle_impl(h, &parts));
    let command_enum = aggregate
        .command_enum
        .as_ref()
        .map(|c| command_enum(c, aggregate, &parts));
    let declared = declared(&parts);
    quote! {
        #item
        #declared
        #aggregate_impl
        #apply_impls
        #(#handle_impls)*
        #command_enum
    }
}

fn aggregate_impl(aggregate: &Aggregate, parts: &Parts<'_>) -> TokenStream {
    let Parts {
        root,
        private,
        self_ty,
        id,
        event,
        error,
        services,
    } = parts;
    let name = &aggregate.name;
    let event_var = Ident::new("event", Span::call_site());
    let this = quote!(self);
    // A missing `#[apply]` surfaces here as "event `X` is neither applied nor ignored",
    // pointing at `event = ..`.
    let dispatch = quote_spanned! {event.span()=>
        <#event as #private::DispatchEvents<Self>>::dispatch(#event_var, #this)
    };
    let snapshots = if aggregate.snapshot.is_some() {
        quote!(#root::Snapshots)
    } else {
        quote!(#root::NoSnapshots)
    };
    let snapshot = aggregate.snapshot.as_ref().map(|snapshot| {
        let every = snapshot.every;
        let version = snapshot.version;
        let state = Ident::new("state", Span::call_site());
        let this = Ident::new("self", Span::call_site().located_at(snapshot.span));
        let encode = quote_spanned!(snapshot.span=> #private::serde_json::to_string::<Self>(#this));
        let decode = quote_spanned!(snapshot.span=> #private::serde_json::from_str::<Self>(#state));
        quote! {
            const SNAPSHOT_EVERY: u64 = #every;
            const SNAPSHOT_VERSION: u32 = #version;

            fn encode_snapshot(
                &self,
            ) -> ::core::option::Option<
                ::core::result::Result<::std::string::String, #private::serde_json::Error>,
            > {
                ::core::option::Option::Some(#encode)
            }

            fn decode_snapshot(
                #state: &str,
            ) -> ::core::option::Option<::core::result::Result<Self, #private::serde_json::Error>>
            {
                ::core::option::Option::Some(#decode)
            }
        }
    });
    let where_clause = default_guard(self_ty);
    quote! {
        #[automatically_derived]
        impl #root::Aggregate for #self_ty #where_clause {
            const NAME: &'static str = #name;
            type Id = #id;
            type Event = #event;
            type Error = #error;
            type Services = #services;
            type Snapshots = #snapshots;

            #[inline]
            fn apply(&mut self, #event_var: &Self::Event) {
                #dispatch
            }

            #snapshot
        }
    }
}

/// `DeclaredAggregate` (so commands naming this type are not told it is no aggregate) and
/// the check that the aggregate is `Default`, at the impl block's type.
fn declared(parts: &Parts<'_>) -> TokenStream {
    let Parts {
        private, self_ty, ..
    } = parts;
    let check = quote_spanned! {self_ty.span()=>
        #private::assert_aggregate_default::<#self_ty>();
    };
    quote! {
        #[automatically_derived]
        impl #private::DeclaredAggregate for #self_ty {}

        const _: () = { #check };
    }
}

/// The `Aggregate` impl holds only for a `Default` type, so a missing `Default` is the one
/// error of [`declared`]'s check, not one per place that needs the aggregate.
/// `for<'__annals>` keeps rustc from rejecting a bound that does not hold on a concrete type.
fn default_guard(self_ty: &Type) -> TokenStream {
    quote!(where for<'__annals> #self_ty: ::core::default::Default)
}

/// Bounds under which the impls for `commands` hold: the type is an aggregate and each
/// command is a command of it. When one does not hold the mistake is reported once, by
/// `#[aggregate]`'s or `#[derive(Command)]`'s checks or by [`command_check`].
fn command_guard<'a>(
    self_ty: &Type,
    commands: impl IntoIterator<Item = &'a Type>,
    root: &TokenStream,
) -> TokenStream {
    let commands = commands.into_iter();
    quote! {
        where
            for<'__annals> #self_ty: #root::Aggregate,
            #(for<'__annals> #commands: #root::Command<Aggregate = #self_ty>,)*
    }
}

/// The check that a handler's command names this aggregate, at the handler's parameter.
fn command_check(command: &Type, self_ty: &Type, private: &TokenStream) -> TokenStream {
    quote_spanned! {command.span()=>
        const _: () = #private::assert_command_of::<#command, #self_ty>();
    }
}

/// `ApplyEvent<E>` for each `#[apply]` method and (as a no-op) each ignored event, and a
/// check that each of those types is an event of the aggregate's enum.
fn apply_impls(aggregate: &Aggregate, parts: &Parts<'_>) -> TokenStream {
    let Parts {
        private,
        self_ty,
        event: event_enum,
        ..
    } = parts;
    let event_var = Ident::new("event", Span::call_site());
    let this = quote!(self);
    let applied = aggregate.appliers.iter().map(|applier| {
        let (method, event) = (&applier.method, &applier.event);
        quote! {
            #[automatically_derived]
            impl #private::ApplyEvent<#event> for #self_ty {
                #[inline]
                fn apply_event(&mut self, #event_var: &#event) {
                    Self::#method(#this, #event_var)
                }
            }
        }
    });
    let ignored = aggregate.ignore.iter().map(|event| {
        quote! {
            #[automatically_derived]
            impl #private::ApplyEvent<#event> for #self_ty {
                #[inline]
                fn apply_event(&mut self, _: &#event) {}
            }
        }
    });
    let checked = aggregate
        .appliers
        .iter()
        .map(|a| &a.event)
        .chain(&aggregate.ignore)
        .map(|event| {
            quote_spanned! {event.span()=>
                #private::assert_event_of::<#event, #event_enum>();
            }
        })
        .collect::<Vec<_>>();
    let checks = (!checked.is_empty()).then(|| quote!(const _: () = { #(#checked)* };));
    quote! {
        #(#applied)*
        #(#ignored)*
        #checks
    }
}

fn policy_tokens(policy: Policy, root: &TokenStream) -> TokenStream {
    match policy {
        Policy::Create => quote!(#root::StreamPolicy::Create),
        Policy::Existing => quote!(#root::StreamPolicy::Existing),
        Policy::Any => quote!(#root::StreamPolicy::Any),
    }
}

/// The `handle` signature shared by every `Handle` impl. `services` is `_services` where
/// the body does not use it.
fn handle_signature(command: &TokenStream, root: &TokenStream, services: &Ident) -> TokenStream {
    let command_var = Ident::new("command", Span::call_site());
    quote! {
        fn handle(
            &self,
            #command_var: #command,
            #services: &<Self as #root::Aggregate>::Services,
        ) -> impl ::core::future::Future<
            Output = ::core::result::Result<
                ::std::vec::Vec<<Self as #root::Aggregate>::Event>,
                <Self as #root::Aggregate>::Error,
            >,
        > + ::core::marker::Send
    }
}

fn handle_impl(handler: &Handler, parts: &Parts<'_>) -> TokenStream {
    let Parts {
        root,
        private,
        self_ty,
        ..
    } = parts;
    let Handler {
        method,
        policy,
        is_async,
        command,
        services,
        output,
    } = handler;
    let policy = policy_tokens(*policy, root);
    let this = quote!(self);
    let command_var = Ident::new("command", Span::call_site());
    let result_var = Ident::new("result", Span::call_site());
    // Located at the user's parameter so a services type mismatch points there.
    let services_arg = services.as_ref().map(|ty| {
        let var = Ident::new("services", Span::call_site().located_at(ty.span()));
        quote!(, #var)
    });
    let call = quote!(Self::#method(#this, #command_var #services_arg));
    let call = if *is_async {
        quote_spanned!(method.span()=> #call.await)
    } else {
        call
    };
    let output_span = output.as_ref().map_or_else(|| method.span(), Spanned::span);
    let events = quote_spanned! {output_span=>
        ::core::result::Result::map(
            <_ as #private::HandlerResult<<Self as #root::Aggregate>::Error>>::into_result(
                #result_var,
            ),
            #root::IntoEvents::<<Self as #root::Aggregate>::Event>::into_events,
        )
    };
    let services_param = if services.is_some() {
        Ident::new("services", Span::call_site())
    } else {
        Ident::new("_services", Span::call_site())
    };
    let signature = handle_signature(&command.to_token_stream(), root, &services_param);
    let body = quote_spanned! {method.span()=>
        async move {
            let #result_var = #call;
            #events
        }
    };
    let where_clause = command_guard(self_ty, [command], root);
    let check = command_check(command, self_ty, private);
    quote! {
        #check

        #[automatically_derived]
        impl #root::Handle<#command> for #self_ty #where_clause {
            #[inline]
            fn policy(_: &#command) -> #root::StreamPolicy {
                #policy
            }

            #signature {
                #body
            }
        }
    }
}

/// The `<Aggregate>Command` enum: one newtype variant per handled command, serde-tagged,
/// with `From`, `Command` and `Handle` impls.
fn command_enum(
    command_enum: &CommandEnum,
    aggregate: &Aggregate,
    parts: &Parts<'_>,
) -> TokenStream {
    let Parts {
        root,
        private,
        self_ty,
        ..
    } = parts;
    let CommandEnum {
        ident,
        vis,
        tag,
        content,
    } = command_enum;
    let handlers = &aggregate.handlers;
    let variants: Vec<(&Ident, &Type)> = handlers
        .iter()
        .filter_map(|h| Some((last_ident(&h.command)?, &h.command)))
        .collect();
    let serde_crate = quote!(#private::serde).to_string().replace(' ', "");
    let content_name = content.as_ref();
    let content = content.as_ref().map(|c| quote!(content = #c,));
    let aggregate_name = aggregate
        .self_ident
        .as_ref()
        .map_or_else(String::new, ToString::to_string);
    let doc = format!(
        " Every command of [`{aggregate_name}`], for transports: deserialize one from a request or \
         message body (tagged by `\"{tag}\"`) and execute it."
    );
    let variant_defs = variants.iter().map(|(variant, ty)| {
        let doc = format!(" [`{}`]", type_key(ty));
        quote!(#[doc = #doc] #variant(#ty),)
    });
    let this = quote!(self);
    let command_var = Ident::new("command", Span::call_site());
    let services_var = if variants.is_empty() {
        Ident::new("_services", Span::call_site())
    } else {
        Ident::new("services", Span::call_site())
    };
    let inner = Ident::new("inner", Span::call_site());
    let from_impls = variants.iter().map(|(variant, ty)| {
        quote! {
            #[automatically_derived]
            impl ::core::convert::From<#ty> for #ident {
                #[inline]
                fn from(#command_var: #ty) -> Self {
                    #ident::#variant(#command_var)
                }
            }
        }
    });
    let id_arms = variants.iter().map(|(variant, ty)| {
        quote!(#ident::#variant(ref #inner) => <#ty as #root::Command>::aggregate_id(#inner),)
    });
    // The command inside: the same fingerprint as executing it directly.
    let fingerprint_arms = variants.iter().map(|(variant, ty)| {
        quote!(#ident::#variant(ref #inner) => <#ty as #root::Command>::fingerprint(#inner),)
    });
    let handle_path = |ty: &Type| quote!(<Self as #root::Handle<#ty>>);
    let clone_arms = variants.iter().map(|(variant, _)| {
        quote! {
            #ident::#variant(ref #inner) => {
                #ident::#variant(::core::clone::Clone::clone(#inner))
            }
        }
    });
    let clone_guard = variants
        .iter()
        .map(|(_, ty)| quote!(for<'__annals> #ty: ::core::clone::Clone,));
    // Each impl holds only when every command is one of this aggregate, so a mistake in
    // one command is reported once, at the command or its handler.
    let where_clause = command_guard(self_ty, variants.iter().map(|(_, ty)| *ty), root);
    let policy_arms = variants.iter().map(|(variant, ty)| {
        let handle = handle_path(ty);
        quote!(#ident::#variant(ref #inner) => #handle::policy(#inner),)
    });
    let handle_arms = variants.iter().map(|(variant, ty)| {
        let handle = handle_path(ty);
        quote! {
            #ident::#variant(#inner) => {
                #handle::handle(#this, #inner, #services_var).await
            }
        }
    });
    let signature = handle_signature(&ident.to_token_stream(), root, &services_var);
    let names: Vec<String> = variants
        .iter()
        .map(|(variant, _)| variant.to_string())
        .collect();
    let content_const = match content_name {
        Some(c) => quote!(::core::option::Option::Some(#c)),
        None => quote!(::core::option::Option::None),
    };
    let deserializer_var = Ident::new("deserializer", Span::call_site());
    let variant_arms = variants.iter().zip(&names).map(|((variant, ty), name)| {
        quote! {
            #name => ::core::result::Result::map(
                <#ty as #private::serde::Deserialize<'de>>::deserialize(#deserializer_var),
                |#inner| ::core::option::Option::Some(#ident::#variant(#inner)),
            ),
        }
    });
    let tagged = quote! {
        #[automatically_derived]
        impl #root::TaggedCommand for #ident #where_clause {
            const TAG: &'static str = #tag;
            const CONTENT: ::core::option::Option<&'static str> = #content_const;
            const VARIANTS: &'static [&'static str] = &[#(#names),*];

            fn deserialize_variant<'de, __D>(
                variant: &str,
                #deserializer_var: __D,
            ) -> ::core::result::Result<::core::option::Option<Self>, __D::Error>
            where
                __D: #private::serde::Deserializer<'de>,
            {
                match variant {
                    #(#variant_arms)*
                    _ => {
                        let _ = #deserializer_var;
                        ::core::result::Result::Ok(::core::option::Option::None)
                    }
                }
            }
        }
    };
    quote! {
        #[doc = #doc]
        #[derive(
            #private::serde::Serialize,
            #private::serde::Deserialize,
        )]
        #[serde(crate = #serde_crate, tag = #tag, #content)]
        // Variants are named after the command types, which often share a suffix.
        #[allow(clippy::enum_variant_names, clippy::large_enum_variant)]
        #vis enum #ident {
            #(#variant_defs)*
        }

        #[automatically_derived]
        impl ::core::clone::Clone for #ident
        where
            #(#clone_guard)*
        {
            fn clone(&self) -> Self {
                match *self {
                    #(#clone_arms)*
                }
            }
        }

        #(#from_impls)*

        #[automatically_derived]
        impl #root::Command for #ident #where_clause {
            type Aggregate = #self_ty;

            fn aggregate_id(&self) -> &<#self_ty as #root::Aggregate>::Id {
                match *self {
                    #(#id_arms)*
                }
            }

            fn fingerprint(&self) -> ::core::option::Option<::std::string::String> {
                match *self {
                    #(#fingerprint_arms)*
                }
            }
        }

        #[automatically_derived]
        impl #root::Handle<#ident> for #self_ty #where_clause {
            fn policy(#command_var: &#ident) -> #root::StreamPolicy {
                match *#command_var {
                    #(#policy_arms)*
                }
            }

            #signature {
                async move {
                    match #command_var {
                        #(#handle_arms)*
                    }
                }
            }
        }

        #tagged
    }
}

/// The impl block as written (minus helper attributes) and stub impls, so that a mistake in
/// the attribute shows as one error instead of a cascade of "not implemented" errors.
fn fallback(aggregate: &Aggregate) -> TokenStream {
    let item = &aggregate.item;
    // Commands naming this type are not also told it is no aggregate.
    let declared = item.generics.params.is_empty().then(|| {
        let (private, self_ty) = (aggregate.krate.private(), &item.self_ty);
        quote! {
            #[automatically_derived]
            impl #private::DeclaredAggregate for #self_ty {}
        }
    });
    let Some(parts) = parts(aggregate) else {
        return quote!(#item #declared);
    };
    let Parts {
        root,
        self_ty,
        id,
        event,
        error,
        services,
        ..
    } = &parts;
    let name = &aggregate.name;
    let mut seen = Vec::new();
    let handle_stubs = aggregate
        .handlers
        .iter()
        .filter(|h| {
            let key = type_key(&h.command);
            let fresh = !seen.contains(&key);
            seen.push(key);
            fresh
        })
        .map(|h| {
            let command = &h.command;
            let services = Ident::new("_services", Span::call_site());
            let signature = handle_signature(&command.to_token_stream(), root, &services);
            let where_clause = command_guard(self_ty, [command], root);
            quote! {
                #[automatically_derived]
                impl #root::Handle<#command> for #self_ty #where_clause {
                    fn policy(_: &#command) -> #root::StreamPolicy {
                        #root::StreamPolicy::Any
                    }

                    #signature {
                        let _ = command;
                        ::core::future::pending()
                    }
                }
            }
        });
    let where_clause = default_guard(self_ty);
    quote! {
        #item
        #declared

        #[automatically_derived]
        impl #root::Aggregate for #self_ty #where_clause {
            const NAME: &'static str = #name;
            type Id = #id;
            type Event = #event;
            type Error = #error;
            type Services = #services;
            type Snapshots = #root::NoSnapshots;

            fn apply(&mut self, _: &Self::Event) {}
        }

        #(#handle_stubs)*
    }
}
