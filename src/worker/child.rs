//! A process forked from the template: it answers exactly one request, then exits.
//!
//! Everything a program changes (modules, builtins, `sys`, `os.environ`, the working directory,
//! threads it started) lives in this process only and ends with it.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::runtime::Runtime;
use crate::ipc::{self, FromWorker, RunOutput, RunRequest, ToWorker};

/// The descriptors a run's process starts from: its socket to the template and the write ends
/// of its output pipes, plus the template's descriptors it must close.
pub struct Inherited {
    pub socket: UnixStream,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub template_only: Vec<RawFd>,
    pub template_pid: i32,
}

/// Ends the process without Python's or Rust's teardown: nothing of the template's state is
/// this process's to clean up, and the answer is already written.
fn exit() -> ! {
    // SAFETY: _exit ends the process at once; every answer was flushed before.
    unsafe { libc::_exit(0) }
}

/// Runs a fixed, trivial program through the whole run path while this process waits for its
/// request. A forked process pays a page fault and a page copy for every page of the template
/// it writes to (Python writes reference counts on every object it touches), about 0.8 ms on
/// the first run after the fork and 0.05 ms on a second: this takes that cost before the
/// request arrives instead of after. The program is the same for every process and prints
/// nothing, so what it leaves behind is the same for every run and comes from no other run.
fn warm_up(runtime: &Runtime) {
    let request = RunRequest {
        run_id: 0,
        code: "_ = 1 + 1\n_".into(),
        filename: "<warm-up>".into(),
        upstream_json: None,
        glyph_id: String::new(),
        max_output_bytes: 0,
        python_paths: Vec::new(),
        handler: None,
        host: None,
    };
    let _ = runtime.run(&request);
}

pub fn serve_one(runtime: &Runtime, inherited: Inherited) -> ! {
    crate::platform::die_with_parent();
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != inherited.template_pid {
        exit(); // the template died before the parent-death signal was set
    }
    for fd in &inherited.template_only {
        // SAFETY: these descriptors belong to the template (its sockets to the supervisor, the
        // read ends of output pipes); this process never uses them and must not hold them.
        unsafe { libc::close(*fd) };
    }
    for (end, target) in [(&inherited.stdout, 1), (&inherited.stderr, 2)] {
        // SAFETY: dup2 of a descriptor we own onto the stream's fixed descriptor; the copy has
        // no close-on-exec, so subprocesses write into the same pipe.
        unsafe { libc::dup2(end.as_raw_fd(), target) };
    }
    drop((inherited.stdout, inherited.stderr));
    let mut socket = inherited.socket;
    let me = std::process::id();
    warm_up(runtime);

    let reply = match ipc::read_blocking::<ToWorker>(&mut socket) {
        Ok(ToWorker::Run(request)) => {
            let ran = runtime.run(&request);
            if std::process::id() != me {
                exit(); // a process the program forked returned here: only the run answers
            }
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
                // The template fills these from the pipes.
                stdout: Default::default(),
                stderr: Default::default(),
                result_json: ran.result_json,
                error: ran.error,
                leftovers,
            })
        }
        Ok(ToWorker::CheckModules { modules }) => FromWorker::ModulesChecked {
            modules: runtime.check_modules(&modules),
        },
        Ok(ToWorker::Declare { scripts }) => FromWorker::Declared {
            results: runtime.declare(&scripts),
        },
        // Nothing to do: the template closed the socket (it is stopping) or sent no request.
        Ok(ToWorker::Interrupt { .. } | ToWorker::Kill { .. }) | Err(_) => exit(),
    };
    if std::process::id() == me {
        if let Err(error) = ipc::write_blocking(&mut socket, &reply) {
            tracing::debug!(%error, "could not answer the template");
        }
    }
    exit()
}
