//! The typed input of each macro, parsed and validated, keeping the user's tokens for spans.

pub mod aggregate;
pub mod command;
pub mod event;
pub mod events;
pub mod process;
pub mod projection;
pub mod reactor;
