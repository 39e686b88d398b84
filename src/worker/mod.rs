//! Worker mode: one process of this binary that embeds CPython and runs one program at a time.
//!
//! Threads: the main thread owns Python (signals only reach it, so KeyboardInterrupt lands in
//! the program); a channel thread reads the supervisor's messages and forwards interrupts; two
//! capture threads drain fds 1 and 2.

mod capture;
mod host_bridge;
mod interrupt;
mod runtime;

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

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
    let channel = open_channel()?;
    let stdout = StreamCapture::install(1).map_err(WorkerError::Capture)?;
    let stderr = StreamCapture::install(2).map_err(WorkerError::Capture)?;

    let env = options
        .python_env
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut writer = channel.try_clone().map_err(ipc::FrameError::Io)?;
    let runtime = match Runtime::start(&env) {
        Ok(runtime) => runtime,
        Err(error) => {
            // Tell the supervisor why, so the caller sees the reason and not just an exit code.
            let failed = FromWorker::StartupFailed {
                error: error.clone(),
            };
            let _ = ipc::write_blocking(&mut writer, &failed);
            return Err(WorkerError::Python(error));
        }
    };
    ipc::write_blocking(
        &mut writer,
        &FromWorker::Ready {
            python_version: runtime.python_version().to_owned(),
        },
    )?;

    let (tasks_tx, tasks) = mpsc::channel();
    spawn_channel_reader(channel, tasks_tx, Arc::clone(&interrupter))?;

    // The channel thread forwards everything but interrupts, which it handles itself.
    while let Ok(task) = tasks.recv() {
        let reply = match task {
            ToWorker::Run(request) => {
                stdout.begin(request.max_output_bytes);
                stderr.begin(request.max_output_bytes);
                let (status, result_json, error) = runtime.run(&request, &interrupter);
                FromWorker::Done(RunOutput {
                    run_id: request.run_id,
                    status,
                    stdout: stdout.finish(),
                    stderr: stderr.finish(),
                    result_json,
                    error,
                })
            }
            ToWorker::CheckModules { modules } => FromWorker::ModulesChecked {
                modules: runtime.check_modules(&modules),
            },
            ToWorker::Declare { scripts } => FromWorker::Declared {
                results: runtime.declare(&scripts),
            },
            ToWorker::Interrupt { .. } => continue,
        };
        ipc::write_blocking(&mut writer, &reply)?;
    }
    Ok(())
}

fn open_channel() -> Result<UnixStream, WorkerError> {
    let fd: i32 = std::env::var(ipc::WORKER_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or(WorkerError::NoChannel)?;
    // The variable must not leak into programs' subprocesses.
    std::env::remove_var(ipc::WORKER_FD_ENV);
    // SAFETY: the supervisor placed our end of the socket pair on this descriptor for us alone.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: mark it close-on-exec so subprocesses started by programs do not inherit it.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(stream)
}

fn spawn_channel_reader(
    mut channel: UnixStream,
    tasks: mpsc::Sender<ToWorker>,
    interrupter: Arc<Interrupter>,
) -> Result<(), WorkerError> {
    std::thread::Builder::new()
        .name("channel".into())
        .spawn(move || loop {
            match ipc::read_blocking::<ToWorker>(&mut channel) {
                Ok(ToWorker::Interrupt { run_id }) => interrupter.interrupt(run_id),
                Ok(task) => {
                    if tasks.send(task).is_err() {
                        break;
                    }
                }
                Err(error) => {
                    // The supervisor is gone (or spoke nonsense): nothing may outlive it, and a
                    // program stuck in the main thread must not keep the process alive.
                    if !matches!(error, ipc::FrameError::Closed) {
                        tracing::error!(%error, "worker channel failed");
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
