//! The command-line front end: one module per group of subcommands, each a thin layer that
//! parses, validates and calls the library.

pub mod detect;
pub mod verify;
