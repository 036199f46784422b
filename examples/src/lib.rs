//! Domains shared by the runnable examples.

pub mod bank;
pub mod serverless;
pub mod shop;
