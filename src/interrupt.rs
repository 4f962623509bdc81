//! Ctrl-C and SIGTERM: noticed, not acted on at once.
//!
//! The handler only sets a flag; long-running loops (staging, following the
//! server) check it and clean up before exiting with status 130.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handlers for SIGINT and SIGTERM.
pub fn install() {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let _ = sigaction(signal, &action);
        }
    }
}

/// For commands that only print: the default SIGPIPE action, so that a
/// closed output (`pitr list | head -1`) ends the process quietly, as it
/// ends any Unix filter. Rust ignores SIGPIPE, which turns the next print
/// into a panic. Commands that change anything keep ignoring it: they must
/// not die halfway through their work because a reader went away.
pub fn quiet_on_closed_output() {
    // SAFETY: restoring a signal's default action installs no handler.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
}

pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
