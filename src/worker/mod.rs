//! Worker mode: one process of this binary that embeds CPython and runs one program at a time.
//!
//! Two sockets connect it to the supervisor: the main thread reads work from the first and
//! answers on it (no thread hop on the way to Python), and a small thread reads interrupts
//! from the second, since the main thread is busy in Python exactly when one arrives. That
//! thread also ends the worker when the supervisor goes away: the socket closing is how a
//! worker notices its supervisor's death on every OS (see `platform`). Two more threads drain
//! fds 1 and 2 (output capture).

mod capture;
mod host_bridge;
mod interpreter;
mod interrupt;
mod runtime;

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use crate::ipc::{self, FromWorker, RunOutput, ToWorker};
use capture::StreamCapture;
use interrupt::Interrupter;
use runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "{} is not set; workers are started by the plugin itself",
        ipc::WORKER_FD_ENV
    )]
    NoChannel,
    #[error("cannot capture output: {0}")]
    Capture(std::io::Error),
    #[error("Python failed to start: {0}")]
    Python(String),
    #[error(transparent)]
    Frame(#[from] ipc::FrameError),
}

pub struct WorkerOptions {
    pub python_env: Option<PathBuf>,
}

pub fn run(options: WorkerOptions) -> Result<(), WorkerError> {
    let interrupter = Arc::new(Interrupter::for_main_thread());
    // Orphans of a program's processes (one that daemonises with setsid) stay below this
    // worker, where the supervisor's limits and kills reach them.
    crate::platform::become_subreaper();
    let (mut channel, interrupts) = open_channels()?;
    let stdout = StreamCapture::install(1).map_err(WorkerError::Capture)?;
    let stderr = StreamCapture::install(2).map_err(WorkerError::Capture)?;

    let env = options
        .python_env
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let runtime = match Runtime::start(&env) {
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
    let ready = FromWorker::Ready {
        python_version: runtime.python_version().to_owned(),
    };
    ipc::write_blocking(&mut channel, &ready)?;
    spawn_interrupt_listener(interrupts, Arc::clone(&interrupter))?;

    loop {
        let task = match ipc::read_blocking::<ToWorker>(&mut channel) {
            Ok(task) => task,
            Err(ipc::FrameError::Closed) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let reply = match task {
            ToWorker::Run(request) => {
                stdout.begin(request.max_output_bytes);
                stderr.begin(request.max_output_bytes);
                let ran = runtime.run(&request, &interrupter);
                let mut leftovers: Vec<String> = ran
                    .leftover_threads
                    .into_iter()
                    .map(|name| format!("thread '{name}'"))
                    .collect();
                leftovers.extend(
                    crate::platform::running_children()
                        .into_iter()
                        .map(|pid| format!("process {pid}")),
                );
                FromWorker::Done(RunOutput {
                    run_id: request.run_id,
                    status: ran.status,
                    stdout: stdout.finish(),
                    stderr: stderr.finish(),
                    result_json: ran.result_json,
                    error: ran.error,
                    leftovers,
                })
            }
            ToWorker::CheckModules { modules } => FromWorker::ModulesChecked {
                modules: runtime.check_modules(&modules),
            },
            ToWorker::Declare { scripts } => FromWorker::Declared {
                results: runtime.declare(&scripts),
            },
            // Interrupts come on their own socket; one sent here would be for a finished run.
            ToWorker::Interrupt { .. } => continue,
        };
        ipc::write_blocking(&mut channel, &reply)?;
    }
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

fn spawn_interrupt_listener(
    mut interrupts: UnixStream,
    interrupter: Arc<Interrupter>,
) -> Result<(), WorkerError> {
    std::thread::Builder::new()
        .name("interrupts".into())
        .spawn(move || loop {
            match ipc::read_blocking::<ToWorker>(&mut interrupts) {
                Ok(ToWorker::Interrupt { run_id }) => interrupter.interrupt(run_id),
                Ok(other) => {
                    tracing::error!(?other, "only interrupts belong on the interrupt channel")
                }
                Err(error) => {
                    // The supervisor is gone (or spoke nonsense): nothing may outlive it, and a
                    // program stuck in the main thread must not keep the process alive.
                    if !matches!(error, ipc::FrameError::Closed) {
                        tracing::error!(%error, "worker interrupt channel failed");
                    }
                    // SAFETY: _exit ends the process without running Python or Rust teardown
                    // from this non-main thread.
                    unsafe { libc::_exit(0) };
                }
            }
        })
        .map_err(|e| WorkerError::Frame(ipc::FrameError::Io(e)))?;
    Ok(())
}
