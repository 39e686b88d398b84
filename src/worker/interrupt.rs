//! SIGINT, the supervisor's "interrupt this run", and when a run's process may take it.
//!
//! The template sends a real SIGINT to the main thread of the process running the run (a real
//! signal, rather than only Python's pending-interrupt flag, also wakes blocking system calls
//! such as `time.sleep`, which then raise KeyboardInterrupt). SIGINT stays blocked in the
//! template and in a run's process outside the program itself: one sent early waits until the
//! program starts, and one arriving after it ended is dropped. A process runs one program only,
//! so an interrupt can never reach another run.

use nix::sys::signal::{SigSet, Signal};

fn set_sigint_blocked(blocked: bool) {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    // Changes only the calling thread's mask; fails only for an invalid `how`.
    let _ = if blocked {
        set.thread_block()
    } else {
        set.thread_unblock()
    };
}

/// Call on the template's main thread before anything else, so every process forked from it
/// (and every thread they start outside a program) begins with SIGINT blocked.
pub fn block_in_main_thread() {
    set_sigint_blocked(true);
}

/// The program is about to start: interrupts may land.
pub fn begin_run() {
    set_sigint_blocked(false);
}

/// The program ended: no interrupt lands after this returns.
pub fn end_run(py: pyo3::Python<'_>) {
    set_sigint_blocked(true);
    crate::platform::discard_pending(Signal::SIGINT);
    // The handler may already have run and set Python's flag: let it fire now, and drop the
    // KeyboardInterrupt it raises.
    // SAFETY: called with the GIL held (we have `py`).
    if unsafe { pyo3::ffi::PyErr_CheckSignals() } != 0 {
        drop(pyo3::PyErr::fetch(py));
    }
}
