//! SIGTERM / SIGINT for the whole process, installed as the first thing `main` does.
//!
//! Until a loop that can stop cleanly claims them ([`claim`]), a signal ends the process at
//! once with exit status 128 + signal, from the handler: there is nothing to clean up while
//! models load or a store is read (the lock is only ever opened inside the loop), and a
//! command like `detect` that never looks at a flag must still stop on Ctrl-C. Once claimed,
//! a signal only raises the flag; the loop sees it before its next frame, drives the lock
//! LOCKED and returns, so a stop never leaves the door open.
//!
//! Before this module the handlers were installed by the loop itself, after the models had
//! loaded: a SIGTERM in the first ~0.1 s killed the process by the default action.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

static STOP: AtomicBool = AtomicBool::new(false);
static CLAIMED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    if CLAIMED.load(Ordering::SeqCst) {
        // Only an atomic store: async-signal-safe.
        STOP.store(true, Ordering::SeqCst);
        return;
    }
    // write(2) and _exit(2) are async-signal-safe; nothing else is called here.
    let msg: &[u8] = if sig == libc::SIGINT {
        b"facegate: interrupted (SIGINT)\n"
    } else {
        b"facegate: terminated (SIGTERM)\n"
    };
    // SAFETY: a valid buffer of that length; fd 2 may be closed, then write fails harmlessly.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(128 + sig);
    }
}

/// Installs the SIGTERM and SIGINT handlers (idempotent).
pub fn install() -> Result<()> {
    #[cfg(unix)]
    {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: `on_signal` only calls async-signal-safe functions and has the
            // signature `signal` expects.
            let prev = unsafe { libc::signal(sig, handler) };
            if prev == libc::SIG_ERR {
                return Err(Error::Msg(format!(
                    "cannot install the handler for signal {sig}: {}",
                    std::io::Error::last_os_error()
                )));
            }
        }
    }
    Ok(())
}

/// From now on a signal raises the returned flag instead of ending the process; the caller
/// checks it and stops cleanly. Installs the handlers if `main` has not.
pub fn claim() -> Result<&'static AtomicBool> {
    install()?;
    CLAIMED.store(true, Ordering::SeqCst);
    Ok(&STOP)
}
