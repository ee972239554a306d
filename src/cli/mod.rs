//! Subcommands as library functions with their clap arguments, so `main.rs` stays a thin
//! dispatcher and the commands can be tested without spawning the binary. Each module is a
//! thin layer that parses, validates and calls the rest of the library.

pub mod attempts;
pub mod bench;
pub mod detect;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod liveness;
pub mod out;
pub mod unlock;
pub mod verify;
pub mod wider;
