//! One slot of the pool: owns at most one worker process and runs jobs on it, one at a time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::process::WorkerProcess;
use super::{Job, PoolConfig, PoolError, PoolStats, RunOutcome, RunSpec, Work, WorkResult};
use crate::ipc::{CapturedStream, FromWorker, RunRequest, ToWorker};

/// How often a busy worker's memory is checked against the limit.
const MEMORY_POLL: Duration = Duration::from_millis(50);
/// Longest wait between attempts to start a worker that keeps failing.
const MAX_SPAWN_BACKOFF: Duration = Duration::from_secs(10);

pub(super) struct Slot {
    index: usize,
    config: PoolConfig,
    stats: Arc<PoolStats>,
    jobs: async_channel::Receiver<Job>,
    shutdown: CancellationToken,
    worker: Option<WorkerProcess>,
    /// Set once a worker has started, so later starts count as restarts.
    started_before: bool,
}

/// Why the supervisor interrupted a run.
#[derive(Clone, Copy)]
enum InterruptReason {
    Deadline,
    CallerGone,
}

impl Slot {
    pub(super) fn new(
        index: usize,
        config: PoolConfig,
        stats: Arc<PoolStats>,
        jobs: async_channel::Receiver<Job>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            index,
            config,
            stats,
            jobs,
            shutdown,
            worker: None,
            started_before: false,
        }
    }

    pub(super) async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.worker.is_none() {
                if let Err(error) = self.start_worker().await {
                    tracing::error!(slot = self.index, %error, "worker failed to start");
                    self.stats.set_start_error(Some(error.to_string()));
                    // Fail one waiting job with the reason rather than leave callers hanging.
                    let job = tokio::select! {
                        job = self.jobs.recv() => job,
                        () = self.shutdown.cancelled() => return,
                    };
                    let Ok(job) = job else { return };
                    let _ = job
                        .reply
                        .send(Err(PoolError::WorkerUnavailable(error.to_string())));
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_SPAWN_BACKOFF);
                    continue;
                }
                backoff = Duration::from_millis(100);
            }

            let job = tokio::select! {
                job = self.jobs.recv() => job,
                () = self.shutdown.cancelled() => break,
            };
            let Ok(mut job) = job else { break };
            if job.reply.is_closed() {
                continue; // the caller gave up while waiting in the queue
            }
            self.stats.workers_busy.fetch_add(1, Ordering::Relaxed);
            let result = match job.work {
                Work::Run(spec) => self
                    .execute(*spec, &mut job.reply)
                    .await
                    .map(WorkResult::Run),
                Work::CheckModules(modules) => {
                    self.check_modules(modules).await.map(WorkResult::Modules)
                }
            };
            self.stats.workers_busy.fetch_sub(1, Ordering::Relaxed);
            self.stats.runs_completed.fetch_add(1, Ordering::Relaxed);
            let _ = job.reply.send(result);
        }
        self.retire_worker();
    }

    async fn start_worker(&mut self) -> Result<(), super::SpawnError> {
        let worker = WorkerProcess::spawn(&self.config.worker, self.config.startup_timeout).await?;
        let _ = self.stats.python_version.set(worker.python_version.clone());
        if self.started_before {
            self.stats.worker_restarts.fetch_add(1, Ordering::Relaxed);
        }
        self.started_before = true;
        tracing::debug!(slot = self.index, pid = worker.pid(), "worker ready");
        self.worker = Some(worker);
        self.stats.workers_ready.fetch_add(1, Ordering::Relaxed);
        self.stats.set_start_error(None);
        Ok(())
    }

    fn retire_worker(&mut self) -> Option<WorkerProcess> {
        let worker = self.worker.take()?;
        self.stats.workers_ready.fetch_sub(1, Ordering::Relaxed);
        Some(worker)
    }

    async fn worker_died(&mut self) -> String {
        match self.retire_worker() {
            Some(worker) => worker.exit_cause().await,
            None => "no worker".to_owned(),
        }
    }

    fn kill_worker(&mut self) {
        if let Some(mut worker) = self.retire_worker() {
            worker.kill();
        }
    }

    async fn check_modules(
        &mut self,
        modules: Vec<String>,
    ) -> Result<Vec<crate::ipc::ModuleCheck>, PoolError> {
        let worker = self
            .worker
            .as_mut()
            .ok_or_else(|| PoolError::WorkerUnavailable("no worker".into()))?;
        if worker
            .send(&ToWorker::CheckModules { modules })
            .await
            .is_err()
        {
            return Err(PoolError::WorkerUnavailable(self.worker_died().await));
        }
        match worker_reply(self.worker.as_mut()).await {
            Ok(FromWorker::ModulesChecked { modules }) => Ok(modules),
            _ => Err(PoolError::WorkerUnavailable(self.worker_died().await)),
        }
    }

    /// Runs one program under its deadline, the caller's presence and the memory limit.
    async fn execute(
        &mut self,
        spec: RunSpec,
        reply: &mut tokio::sync::oneshot::Sender<Result<WorkResult, PoolError>>,
    ) -> Result<RunOutcome, PoolError> {
        let run_id = super::Pool::next_run_id();
        let request = RunRequest {
            run_id,
            code: spec.code,
            filename: spec.filename,
            upstream_json: spec.upstream_json,
            glyph_id: spec.glyph_id,
            max_output_bytes: spec.max_output_bytes,
            python_paths: spec.python_paths,
            handler: spec.handler,
            host: spec.host,
        };
        let started = Instant::now();
        let Some(worker) = self.worker.as_mut() else {
            return Err(PoolError::WorkerUnavailable("no worker".into()));
        };
        if worker
            .send(&ToWorker::Run(Box::new(request)))
            .await
            .is_err()
        {
            return Ok(RunOutcome::WorkerDied {
                cause: self.worker_died().await,
            });
        }

        let deadline = tokio::time::sleep(spec.timeout);
        tokio::pin!(deadline);
        let mut memory_check = tokio::time::interval(MEMORY_POLL);
        let mut interrupted: Option<(InterruptReason, Instant)> = None;
        loop {
            let grace_over = async {
                match interrupted {
                    Some((_, at)) => {
                        tokio::time::sleep_until((at + self.config.interrupt_grace).into()).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                message = worker_reply(self.worker.as_mut()) => match message {
                    Ok(FromWorker::Done(output)) if output.run_id == run_id => {
                        if !output.leftovers.is_empty() {
                            tracing::warn!(slot = self.index, leftovers = ?output.leftovers,
                                "a program left threads or processes running; replacing its worker");
                            self.kill_worker();
                        }
                        return Ok(match interrupted {
                            Some((InterruptReason::Deadline, _)) => RunOutcome::TimedOut {
                                after: spec.timeout, killed: false, stdout: output.stdout, stderr: output.stderr,
                            },
                            _ => RunOutcome::Finished(output),
                        });
                    }
                    Ok(_) => continue, // stale message; cannot happen with one run at a time
                    Err(_) => return Ok(RunOutcome::WorkerDied { cause: self.worker_died().await }),
                },
                () = &mut deadline, if interrupted.is_none() => {
                    interrupted = Some((InterruptReason::Deadline, Instant::now()));
                    self.send_interrupt(run_id).await;
                }
                () = reply.closed(), if interrupted.is_none() => {
                    interrupted = Some((InterruptReason::CallerGone, Instant::now()));
                    self.send_interrupt(run_id).await;
                }
                () = grace_over => {
                    self.kill_worker();
                    let reason = interrupted.map(|(reason, _)| reason);
                    tracing::warn!(slot = self.index, elapsed_ms = started.elapsed().as_millis() as u64,
                        "program did not stop after an interrupt; worker killed");
                    return Ok(match reason {
                        Some(InterruptReason::CallerGone) | None => RunOutcome::WorkerDied { cause: "the caller went away".into() },
                        Some(InterruptReason::Deadline) => RunOutcome::TimedOut {
                            after: spec.timeout, killed: true, stdout: CapturedStream::default(), stderr: CapturedStream::default(),
                        },
                    });
                }
                _ = memory_check.tick() => {
                    if let Some(cause) = self.memory_exceeded(spec.memory_limit_bytes) {
                        self.kill_worker();
                        return Ok(RunOutcome::WorkerDied { cause });
                    }
                }
                () = self.shutdown.cancelled() => {
                    self.kill_worker();
                    return Err(PoolError::ShuttingDown);
                }
            }
        }
    }

    async fn send_interrupt(&mut self, run_id: u64) {
        if let Some(worker) = self.worker.as_mut() {
            // A failed send means the worker is gone; the reply branch reports that.
            let _ = worker.interrupt(run_id).await;
        }
    }

    fn memory_exceeded(&self, limit: Option<u64>) -> Option<String> {
        let limit = limit?;
        let used = self.worker.as_ref()?.resident_bytes()?;
        (used > limit).then(|| {
            format!(
                "the worker exceeded the memory limit of {} MiB (resident {} MiB) and was killed",
                limit / (1024 * 1024),
                used / (1024 * 1024)
            )
        })
    }
}

async fn worker_reply(
    worker: Option<&mut WorkerProcess>,
) -> Result<FromWorker, crate::ipc::FrameError> {
    match worker {
        Some(worker) => worker.next().await,
        None => Err(crate::ipc::FrameError::Closed),
    }
}
