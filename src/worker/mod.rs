//! Worker mode: one process of this binary that embeds CPython and serves one environment.
//!
//! The worker is a warm *template*: it starts CPython, loads the plugin's runtime modules (and
//! the environment's preloaded modules), and then never runs a program itself. Each request is
//! handed to a fresh process forked from it, which runs exactly that request and exits, so no
//! state of one run (threads, patched modules, builtins, `sys`, `os.environ`, the working
//! directory) can reach another. One such process is forked ahead of time (the spare), so a
//! request does not wait for a fork.
//!
//! Two sockets connect the template to the supervisor: requests and answers on the first,
//! interrupts and kills on the second. The template has one thread (it must, to fork safely)
//! and waits on both sockets, the running process's socket and its output pipes with `poll`.
//! The sockets closing is how it notices its supervisor's death on every OS (see `platform`).

mod capture;
mod child;
mod host_bridge;
mod interpreter;
mod interrupt;
mod runtime;
mod template;

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use crate::ipc::{self, FromWorker};
use runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "{} is not set; workers are started by the plugin itself",
        ipc::WORKER_FD_ENV
    )]
    NoChannel,
    #[error("the template cannot serve runs: {0}")]
    Template(std::io::Error),
    #[error("Python failed to start: {0}")]
    Python(String),
    #[error(transparent)]
    Frame(#[from] ipc::FrameError),
}

pub struct WorkerOptions {
    pub python_env: Option<PathBuf>,
    /// Imported once in the template, so every run finds them loaded.
    pub preload: Vec<String>,
}

pub fn run(options: WorkerOptions) -> Result<(), WorkerError> {
    interrupt::block_in_main_thread();
    let (mut channel, interrupts) = open_channels()?;

    let env = options
        .python_env
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let started = Runtime::start(&env).and_then(|runtime| {
        runtime.preload(&options.preload)?;
        Ok(runtime)
    });
    let runtime = match started {
        Ok(runtime) => runtime,
        Err(error) => {
            // Tell the supervisor why, so the caller sees the reason and not just an exit code.
            let failed = FromWorker::StartupFailed {
                error: error.clone(),
            };
            let _ = ipc::write_blocking(&mut channel, &failed);
            return Err(WorkerError::Python(error));
        }
    };
    let mut template = match template::Template::new(&runtime, channel, interrupts) {
        Ok(template) => template,
        Err(error) => return Err(WorkerError::Template(error)),
    };
    template.ready()?;
    template.serve()
}

/// The two sockets the supervisor placed on the descriptors named by `QNTX_WORKER_FD`
/// (`<work>,<interrupts>`).
fn open_channels() -> Result<(UnixStream, UnixStream), WorkerError> {
    let value = std::env::var(ipc::WORKER_FD_ENV).map_err(|_| WorkerError::NoChannel)?;
    // The variable must not leak into programs' subprocesses.
    std::env::remove_var(ipc::WORKER_FD_ENV);
    let (work, interrupts) = value.split_once(',').ok_or(WorkerError::NoChannel)?;
    let open = |fd: &str| -> Result<UnixStream, WorkerError> {
        let fd: i32 = fd.parse().map_err(|_| WorkerError::NoChannel)?;
        // SAFETY: mark it close-on-exec so subprocesses started by programs do not inherit it;
        // the supervisor placed the socket on this descriptor for us alone.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            Ok(UnixStream::from_raw_fd(fd))
        }
    };
    Ok((open(work)?, open(interrupts)?))
}
