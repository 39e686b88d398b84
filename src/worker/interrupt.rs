//! Delivers the supervisor's "interrupt run N" as a real SIGINT to the worker's main thread.
//!
//! A real signal (rather than only setting Python's pending-interrupt flag) also wakes blocking
//! system calls such as `time.sleep`, which then raise KeyboardInterrupt. SIGINT is blocked in
//! the main thread outside runs, and the run id is checked under a lock, so an interrupt meant
//! for a finished run can never leak into the next one: `end_run` clears the id, then takes any
//! SIGINT still pending and any flag Python already set.

use std::sync::{Mutex, PoisonError};

use nix::sys::pthread::{pthread_kill, pthread_self, Pthread};
use nix::sys::signal::{SigSet, Signal};

pub struct Interrupter {
    main_thread: Pthread,
    current_run: Mutex<Option<u64>>,
}

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

impl Interrupter {
    /// Call on the main thread before any other thread starts, so every later thread inherits
    /// a mask with SIGINT blocked and the signal can only ever land on the main thread.
    pub fn for_main_thread() -> Self {
        set_sigint_blocked(true);
        Self {
            main_thread: pthread_self(),
            current_run: Mutex::new(None),
        }
    }

    pub fn begin_run(&self, run_id: u64) {
        *self
            .current_run
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(run_id);
        set_sigint_blocked(false);
    }

    /// Called from the channel thread when the supervisor asks for an interrupt.
    pub fn interrupt(&self, run_id: u64) {
        let current = self
            .current_run
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *current == Some(run_id) {
            // The main thread lives as long as the process, so the id stays valid.
            let _ = pthread_kill(self.main_thread, Signal::SIGINT);
        }
    }

    /// Ends the run: no interrupt for it can arrive after this returns.
    pub fn end_run(&self, py: pyo3::Python<'_>) {
        *self
            .current_run
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        set_sigint_blocked(true);
        crate::platform::discard_pending(Signal::SIGINT);
        // The handler may already have run and set Python's flag: let it fire now, and drop the
        // KeyboardInterrupt it raises.
        // SAFETY: called with the GIL held (we have `py`).
        if unsafe { pyo3::ffi::PyErr_CheckSignals() } != 0 {
            drop(pyo3::PyErr::fetch(py));
        }
    }
}
