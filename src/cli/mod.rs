//! The command-line layer: clap argument structs and thin functions over the library.

pub mod unlock;
