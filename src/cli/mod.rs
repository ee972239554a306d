//! Subcommands as library functions with their clap arguments, so `main.rs` stays a thin
//! dispatcher and the commands can be tested without spawning the binary.

pub mod bench;
