//! Printing to stdout without `println!`'s panic when the reader has gone away
//! (`facegate users … list | head -1`): `println!` panics with "failed printing to stdout:
//! Broken pipe" and the process exits 101 — for the unlock loop, a way for anyone who can
//! close its stdout to take the lock out of service.
//!
//! Two ways to print, by what the command is for:
//! * [`outln!`] for commands whose stdout *is* the result (lists, JSON, reports): when stdout
//!   is closed it returns [`StdoutClosed`] through `?`, and `main` exits quietly with 0 — the
//!   reader took what it wanted.
//! * [`logln!`] for the long-running commands (`unlock`, `enroll`, `demo`), whose stdout is a
//!   log: it never fails; once stdout is gone the lines go to stderr and the work goes on (the
//!   lock keeps working and stays fail-closed; a stop by signal still locks it).

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Returned through `?` by [`outln!`] when stdout is closed; `main` exits quietly on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout closed by the reader")
    }
}

impl std::error::Error for StdoutClosed {}

/// Set once a write to stdout has failed; later lines do not try it again.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

fn write_stdout(args: fmt::Arguments) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// One line on stdout. A broken pipe is [`StdoutClosed`]; any other failure (a full disk
/// behind a redirect) is an error that says so.
pub fn line(args: fmt::Arguments) -> anyhow::Result<()> {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return Err(StdoutClosed.into());
    }
    write_stdout(args).map_err(|e| {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            anyhow::Error::new(StdoutClosed)
        } else {
            anyhow::anyhow!("writing to stdout: {e}")
        }
    })
}

/// One line on stdout, or on stderr once stdout has failed (said once on stderr). Never
/// fails and never panics: errors writing stderr too are ignored.
pub fn log_line(args: fmt::Arguments) {
    if !STDOUT_GONE.load(Ordering::Relaxed) {
        match write_stdout(args) {
            Ok(()) => return,
            Err(e) => {
                STDOUT_GONE.store(true, Ordering::Relaxed);
                err_line(format_args!(
                    "facegate: stdout failed ({e}); logging to stderr from now on"
                ));
            }
        }
    }
    err_line(args);
}

/// One line on stderr, ignoring failures (there is nowhere left to report them).
pub fn err_line(args: fmt::Arguments) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args);
    let _ = err.write_all(b"\n");
}

/// `println!` that returns `Err(StdoutClosed)` through `?` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))?
    };
}

/// `println!` for logs: never fails, falls back to stderr.
macro_rules! logln {
    ($($arg:tt)*) => {
        $crate::cli::out::log_line(format_args!($($arg)*))
    };
}

pub(crate) use {logln, outln};
