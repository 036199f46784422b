//! Code generation, one module per macro. Each entry point takes and returns
//! `proc_macro2` tokens, so it can be unit-tested.

pub mod aggregate;
pub mod command;
pub mod event;
pub mod events;
pub mod process;
pub mod projection;
pub mod reactor;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::{DeriveInput, ItemImpl};

use crate::attr::Errors;

/// The body of every derive: parse, expand, and on error emit the errors plus a fallback
/// impl that keeps follow-on errors away from the user's other code.
pub fn derive(
    input: TokenStream,
    expand: fn(&DeriveInput) -> syn::Result<TokenStream>,
    fallback: fn(&DeriveInput) -> TokenStream,
) -> TokenStream {
    let input = match syn::parse2::<DeriveInput>(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    match expand(&input) {
        Ok(tokens) => tokens,
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(fallback(&input));
            tokens
        }
    }
}

/// The body of the attributes on an impl block (`#[projection]`, `#[reactor]`,
/// `#[process]`): parse, expand, and on error emit the errors plus the impl block alone, so
/// a wrong handler gives one error and the type keeps its methods. `misplaced` is the
/// message when the item is not an impl block.
pub fn impl_attribute<T>(
    args: TokenStream,
    item: TokenStream,
    misplaced: &str,
    parse: fn(TokenStream, ItemImpl, &mut Errors) -> T,
    item_of: fn(&T) -> &ItemImpl,
    generate: fn(&T) -> TokenStream,
) -> TokenStream {
    let Ok(item_impl) = syn::parse2::<ItemImpl>(item.clone()) else {
        let mut tokens = syn::Error::new(Span::call_site(), misplaced).to_compile_error();
        tokens.extend(item);
        return tokens;
    };
    let mut errors = Errors::new();
    let parsed = parse(args, item_impl, &mut errors);
    match errors.finish() {
        Ok(()) => generate(&parsed),
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(item_of(&parsed).to_token_stream());
            tokens
        }
    }
}
