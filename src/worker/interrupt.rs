//! Delivers the supervisor's "interrupt run N" as a real SIGINT to the worker's main thread.
//!
//! A real signal (rather than only setting Python's pending-interrupt flag) also wakes blocking
//! system calls such as `time.sleep`, which then raise KeyboardInterrupt. SIGINT is blocked in
//! the main thread outside runs, and the run id is checked under a lock, so an interrupt meant
//! for a finished run can never leak into the next one: `end_run` clears the id, then takes any
//! SIGINT still pending and any flag Python already set.

use std::sync::{Mutex, PoisonError};

pub struct Interrupter {
    main_thread: libc::pthread_t,
    current_run: Mutex<Option<u64>>,
}

fn sigint_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

fn set_sigint_blocked(blocked: bool) {
    let set = sigint_set();
    let how = if blocked {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: changes only the calling thread's mask.
    unsafe { libc::pthread_sigmask(how, &set, std::ptr::null_mut()) };
}

impl Interrupter {
    /// Call on the main thread before any other thread starts, so every later thread inherits
    /// a mask with SIGINT blocked and the signal can only ever land on the main thread.
    pub fn for_main_thread() -> Self {
        set_sigint_blocked(true);
        // SAFETY: pthread_self has no preconditions.
        Self {
            main_thread: unsafe { libc::pthread_self() },
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
            // SAFETY: the main thread lives as long as the process.
            unsafe { libc::pthread_kill(self.main_thread, libc::SIGINT) };
        }
    }

    /// Ends the run: no interrupt for it can arrive after this returns.
    pub fn end_run(&self, py: pyo3::Python<'_>) {
        *self
            .current_run
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        set_sigint_blocked(true);
        let set = sigint_set();
        let no_wait = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: takes a pending SIGINT (if any) without running its handler.
        while unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &no_wait) } == libc::SIGINT {}
        // The handler may already have run and set Python's flag: let it fire now, and drop the
        // KeyboardInterrupt it raises.
        // SAFETY: called with the GIL held (we have `py`).
        if unsafe { pyo3::ffi::PyErr_CheckSignals() } != 0 {
            drop(pyo3::PyErr::fetch(py));
        }
    }
}
