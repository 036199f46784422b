//! Code generation, one module per macro. Each entry point takes and returns
//! `proc_macro2` tokens, so it can be unit-tested.

pub mod aggregate;
pub mod command;
pub mod event;
pub mod events;
pub mod process;
pub mod projection;
pub mod reactor;

use proc_macro2::TokenStream;
use syn::DeriveInput;

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
