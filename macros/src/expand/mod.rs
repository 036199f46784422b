//! Code generation, one module per macro. Each entry point takes and returns
//! `proc_macro2` tokens, so it can be unit-tested.

pub mod aggregate;
pub mod command;
pub mod event;
pub mod events;
pub mod projection;
