//! The one error type of the library. Every variant carries what a user needs to fix the
//! problem (the file, the device, the key, the sizes), because on a headless board the
//! message is often all there is to go on.

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An image could not be decoded (truncated, not an image, unsupported).
    #[error("{path}: not a readable image: {reason}")]
    Image { path: PathBuf, reason: String },
    /// A model file (ONNX or converted safetensors) is unreadable or not what was expected.
    #[error("{path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// A tensor or buffer has the wrong shape or size.
    #[error("{what}: expected {expected}, got {got}")]
    Shape {
        what: String,
        expected: String,
        got: String,
    },
    /// A camera or replay source failed (missing device, unsupported format, ended).
    #[error("{source_name}: {reason}")]
    Camera { source_name: String, reason: String },
    /// The template store is missing, corrupt or could not be written.
    #[error("template store {path}: {reason}")]
    Store { path: PathBuf, reason: String },
    /// A board profile or command-line setting is invalid.
    #[error("{path}: key `{key}`: {reason}")]
    Config {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// The lock actuator (GPIO) failed, but the lock was left LOCKED (or never left it):
    /// driving OPEN failed and LOCKED was driven again, or the GPIO line could not be opened.
    /// The lock is treated as locked and the unlock loop goes on.
    #[error("actuator: {0}")]
    Actuator(String),
    /// Driving the lock LOCKED failed on every retry, so whether the door is locked is
    /// unknown. Unlike [`Error::Actuator`] this is not "treated as locked": the caller should
    /// alarm and stop opening.
    #[error("actuator: {0}")]
    LockStateUnknown(String),
    /// An error inside candle's tensor code.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// Anything else, with a message that names what failed.
    #[error("{0}")]
    Msg(String),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
