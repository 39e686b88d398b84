//! The template: the process the supervisor starts for a worker slot. It loads Python once and
//! then only forks: the worker that serves requests, and a standby forked ahead of time that
//! takes over the moment the worker ends (it retired after a run left residue, crashed, or was
//! killed for a limit). A successor is therefore ready in well under a millisecond, with every
//! preloaded module warm, instead of a new process starting Python from nothing.
//!
//! The template stays single-threaded and never runs a program (a fork copies only the forking
//! thread, so a lock held by any other thread would stay locked in the child). It waits with
//! `poll` on two things: its control socket, which reaches end-of-file when the supervisor goes
//! away, and a pipe its SIGCHLD handler writes to. The worker and the standby inherit the work
//! and interrupt sockets; the template never reads them, and it writes on its own control socket
//! only after the worker has ended, so nothing it says can land inside a half-written frame.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use pyo3::{ffi, Python};

use super::residue::PythonBaseline;
use super::runtime::Runtime;
use super::{Channels, WorkerError};
use crate::ipc::{self, FromTemplate, ToTemplate};
use crate::platform;

/// The write end of the SIGCHLD pipe, for the signal handler (-1: none).
static CHILD_EVENTS: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_child_signal(_: libc::c_int) {
    let fd = CHILD_EVENTS.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write is async-signal-safe; the pipe is non-blocking, and a full pipe already
        // holds a wake-up, so a failed write loses nothing.
        unsafe { libc::write(fd, [0u8].as_ptr().cast(), 1) };
    }
}

/// A forked process waiting to become the worker; writing a byte to `wake` starts it.
struct Standby {
    pid: i32,
    wake: OwnedFd,
}

struct Template<'a> {
    runtime: &'a Runtime,
    channels: Channels,
    child_events: OwnedFd,
    /// The write end the SIGCHLD handler uses (it reaches it through `CHILD_EVENTS`).
    child_events_writer: OwnedFd,
    worker: Option<i32>,
    standby: Option<Standby>,
    /// What the residue check watches, listed once here; each fork restamps its own copy.
    baseline: PythonBaseline,
}

/// Serves until the supervisor goes away; then ends the worker and the standby.
pub fn serve(runtime: &Runtime, channels: Channels) -> Result<(), WorkerError> {
    let (child_events, writer) = platform::pipe().map_err(WorkerError::Template)?;
    set_nonblocking(&writer).map_err(WorkerError::Template)?;
    CHILD_EVENTS.store(writer.as_raw_fd(), Ordering::Relaxed);
    set_child_handler(on_child_signal as *const () as usize);
    // Orphans of a worker's programs that outlive it come here, to be killed.
    platform::become_subreaper();
    // The template's own code never starts a thread; a preloaded library may have (numpy's
    // OpenBLAS keeps a pool). Forking then relies on that library's fork handlers, as
    // multiprocessing's fork start method does: said once, for whoever debugs a hang.
    if let Some(threads) = platform::thread_count(std::process::id() as i32).filter(|n| *n > 1) {
        tracing::info!(
            threads,
            "the template runs threads started by preloaded modules"
        );
    }
    let mut template = Template {
        runtime,
        channels,
        child_events,
        child_events_writer: writer,
        worker: None,
        standby: None,
        baseline: runtime.watch().map_err(WorkerError::Python)?,
    };
    let result = template.run();
    template.stop();
    match result {
        // The supervisor went away while a worker's end was being reported.
        Err(WorkerError::Frame(ipc::FrameError::Closed)) => Ok(()),
        other => other,
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Installs `handler` (a function address, or SIG_DFL) for SIGCHLD.
fn set_child_handler(handler: usize) {
    // SAFETY: sigaction with a zeroed, then filled, struct; the handler only writes to a pipe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        action.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGCHLD, &action, std::ptr::null_mut());
    }
}

impl Template<'_> {
    fn run(&mut self) -> Result<(), WorkerError> {
        self.start_worker()?;
        loop {
            if self.standby.is_none() {
                match self.fork_standby() {
                    Ok(standby) => self.standby = Some(standby),
                    // Tried again when the worker ends; then it is forked on the spot.
                    Err(error) => tracing::error!(%error, "cannot fork a standby worker"),
                }
            }
            let mut fds = [
                poll_for(self.channels.control.as_raw_fd()),
                poll_for(self.child_events.as_raw_fd()),
            ];
            // SAFETY: two valid pollfds for the duration of the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if ready < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(WorkerError::Template(error));
            }
            if fds[0].revents != 0 {
                // Outside a worker's end the supervisor says nothing here: this is its going
                // away (or a stray Continue, read and ignored).
                match ipc::read_blocking::<ToTemplate>(&mut self.channels.control) {
                    Ok(ToTemplate::Continue) => continue,
                    Err(_) => return Ok(()),
                }
            }
            if fds[1].revents != 0 {
                drain(&self.child_events);
                self.reap()?;
            }
        }
    }

    /// Reaps every child that ended; when it was the worker, cleans up after it, reports it
    /// and puts the standby in its place.
    fn reap(&mut self) -> Result<(), WorkerError> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid on any child of ours, without blocking; `status` is ours.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return Ok(());
            }
            if self.standby.as_ref().is_some_and(|s| s.pid == pid) {
                tracing::warn!(pid, "the standby worker ended; forking another");
                self.standby = None;
            } else if self.worker == Some(pid) {
                self.worker = None;
                self.kill_orphans();
                let cause = crate::pool::describe_exit(exit_status(status));
                let ended = FromTemplate::Exited { pid, cause };
                ipc::write_blocking(&mut self.channels.control, &ended)?;
                // The successor shares the work socket: it may write only once the supervisor
                // has read all the ended worker wrote.
                let ToTemplate::Continue = ipc::read_blocking(&mut self.channels.control)?;
                self.discard_requests();
                self.start_worker()?;
            }
            // Anything else is an orphan of a worker's program, killed and now reaped.
        }
    }

    /// Drops what the supervisor sent the ended worker and it never read (a request sent while
    /// it was retiring): the supervisor sends that again to the successor once it is ready, so
    /// a successor never starts on a request meant for its predecessor.
    fn discard_requests(&self) {
        let mut buffer = [0u8; 64 * 1024];
        loop {
            // SAFETY: a non-blocking read into our buffer from the work socket, which only the
            // template touches until it wakes the successor.
            let read = unsafe {
                libc::recv(
                    self.channels.work.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if read <= 0 {
                return;
            }
        }
    }

    /// Kills every child but the standby: what a finished worker's programs left behind came
    /// here when the worker ended (the template is their subreaper).
    fn kill_orphans(&self) {
        let standby = self.standby.as_ref().map(|s| s.pid as u32);
        for pid in platform::running_children() {
            if Some(pid) != standby {
                platform::ProcessTree::led_by(pid).kill();
            }
        }
    }

    /// Wakes the standby (forking one if there is none) as the new worker.
    fn start_worker(&mut self) -> Result<(), WorkerError> {
        for _ in 0..2 {
            let standby = match self.standby.take() {
                Some(standby) => standby,
                None => self.fork_standby().map_err(WorkerError::Template)?,
            };
            let woken = nix::unistd::write(&standby.wake, &[1]).is_ok();
            if woken {
                self.worker = Some(standby.pid);
                return Ok(());
            }
            // It died while waiting; its exit is reaped with the others.
            platform::ProcessTree::led_by(standby.pid as u32).kill();
        }
        Err(WorkerError::Template(std::io::Error::other(
            "forked workers die before they can start",
        )))
    }

    fn fork_standby(&mut self) -> std::io::Result<Standby> {
        let (wake_read, wake_write) = platform::pipe()?;
        let template_only = [
            self.channels.control.as_raw_fd(),
            self.child_events.as_raw_fd(),
            self.child_events_writer.as_raw_fd(),
            wake_write.as_raw_fd(),
        ];
        match fork()? {
            0 => {
                set_child_handler(libc::SIG_DFL);
                for fd in template_only {
                    // SAFETY: the template's descriptors, which this process must not hold.
                    unsafe { libc::close(fd) };
                }
                std::mem::forget(wake_write); // closed above
                super::standby(self.runtime, wake_read, &self.channels, &mut self.baseline)
            }
            pid => Ok(Standby {
                pid,
                wake: wake_write,
            }),
        }
    }

    /// Ends the worker, the standby and whatever is left below the template, and reaps them,
    /// so none outlives it even as a zombie (within a bound: one stuck in the kernel is left).
    fn stop(&mut self) {
        for pid in platform::running_children() {
            platform::ProcessTree::led_by(pid).kill();
        }
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < give_up {
            // SAFETY: waitpid on any child of ours; a null status pointer is allowed.
            let reaped = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
            match reaped {
                0 => std::thread::sleep(std::time::Duration::from_millis(1)),
                pid if pid > 0 => {}
                _ => return, // no children left
            }
        }
    }
}

/// Forks with CPython's fork protocol (its locks taken before and reset in the child, at-fork
/// callbacks run: `random` reseeds itself in the child). Returns 0 in the child.
fn fork() -> std::io::Result<i32> {
    Python::attach(|_py| {
        // SAFETY: called with the GIL held, from the only thread of this process, as CPython
        // asks of a fork; each branch runs the matching after-fork call at once.
        unsafe {
            ffi::PyOS_BeforeFork();
            let pid = libc::fork();
            if pid == 0 {
                ffi::PyOS_AfterFork_Child();
            } else {
                ffi::PyOS_AfterFork_Parent();
            }
            if pid < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(pid)
            }
        }
    })
}

fn poll_for(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn drain(fd: &OwnedFd) {
    let mut buffer = [0u8; 64];
    while matches!(nix::unistd::read(fd, &mut buffer), Ok(n) if n > 0) {}
}

fn exit_status(raw: i32) -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    std::process::ExitStatus::from_raw(raw)
}
