//! The supervisor side of the workers: a bounded queue of runs and N slots, each owning one
//! worker process that it starts, feeds, interrupts, kills and replaces.

mod process;
mod slot;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::ipc::{
    CapturedStream, FromWorker, HandlerEntry, HostAccess, ModuleCheck, RunOutput, Script, ToWorker,
};
pub use process::{SpawnError, WorkerCommand, WorkerProcess};

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub workers: usize,
    pub queue_capacity: usize,
    pub worker: WorkerCommand,
    /// How long an interrupted program gets to stop before its worker is killed.
    pub interrupt_grace: Duration,
    pub startup_timeout: Duration,
}

/// Counters read by Health without touching any lock a run can hold.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub workers_total: AtomicUsize,
    pub workers_ready: AtomicUsize,
    pub workers_busy: AtomicUsize,
    pub worker_restarts: AtomicU64,
    pub runs_completed: AtomicU64,
    pub python_version: OnceLock<String>,
    /// Why the last worker start failed; cleared when a worker starts.
    pub start_error: std::sync::RwLock<Option<String>>,
}

impl PoolStats {
    pub fn start_error(&self) -> Option<String> {
        self.start_error
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_start_error(&self, error: Option<String>) {
        *self
            .start_error
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }
}

/// One program for a worker.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub code: String,
    pub filename: String,
    pub upstream_json: Option<String>,
    pub glyph_id: String,
    pub max_output_bytes: usize,
    pub timeout: Duration,
    /// A worker whose resident memory passes this during the run is killed.
    pub memory_limit_bytes: Option<u64>,
    pub python_paths: Vec<String>,
    pub handler: Option<HandlerEntry>,
    pub host: Option<HostAccess>,
}

/// How a run ended, from the supervisor's point of view.
#[derive(Debug)]
pub enum RunOutcome {
    /// The worker answered: the program finished, raised, or exited.
    Finished(RunOutput),
    /// The deadline passed. `output` is what the program printed before it stopped;
    /// `killed` says whether the worker had to be killed because it did not stop.
    TimedOut {
        after: Duration,
        killed: bool,
        stdout: CapturedStream,
        stderr: CapturedStream,
    },
    /// The worker died during the run: `cause` names the exit status, signal or memory limit.
    WorkerDied { cause: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("all {workers} workers are busy and {queued} runs are already waiting (queue_capacity); try again later")]
    QueueFull { workers: usize, queued: usize },
    #[error("the plugin is shutting down")]
    ShuttingDown,
    #[error("no worker could be started: {0}")]
    WorkerUnavailable(String),
}

enum Work {
    Run(Box<RunSpec>),
    CheckModules(Vec<String>),
}

enum WorkResult {
    Run(RunOutcome),
    Modules(Vec<ModuleCheck>),
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<WorkResult, PoolError>>,
}

pub struct Pool {
    queue: async_channel::Sender<Job>,
    stats: Arc<PoolStats>,
    config: PoolConfig,
    shutdown: CancellationToken,
}

impl Pool {
    /// Starts the slots; workers come up in the background, so this returns at once.
    pub fn start(config: PoolConfig) -> Arc<Self> {
        let (queue, jobs) = async_channel::bounded(config.queue_capacity.max(1));
        let stats = Arc::new(PoolStats::default());
        stats.workers_total.store(config.workers, Ordering::Relaxed);
        let shutdown = CancellationToken::new();
        for index in 0..config.workers {
            let slot = slot::Slot::new(
                index,
                config.clone(),
                Arc::clone(&stats),
                jobs.clone(),
                shutdown.clone(),
            );
            tokio::spawn(slot.run());
        }
        Arc::new(Self {
            queue,
            stats,
            config,
            shutdown,
        })
    }

    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    async fn submit(&self, work: Work) -> Result<WorkResult, PoolError> {
        if self.shutdown.is_cancelled() {
            return Err(PoolError::ShuttingDown);
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Job { work, reply })
            .map_err(|e| match e {
                async_channel::TrySendError::Full(_) => PoolError::QueueFull {
                    workers: self.config.workers,
                    queued: self.queue.len(),
                },
                async_channel::TrySendError::Closed(_) => PoolError::ShuttingDown,
            })?;
        // Dropping this future (the caller went away) drops `answer`; the slot notices through
        // `reply.closed()` and cancels the run.
        answer.await.map_err(|_| PoolError::ShuttingDown)?
    }

    pub async fn run(&self, spec: RunSpec) -> Result<RunOutcome, PoolError> {
        match self.submit(Work::Run(Box::new(spec))).await? {
            WorkResult::Run(outcome) => Ok(outcome),
            WorkResult::Modules(_) => Err(PoolError::WorkerUnavailable("unexpected reply".into())),
        }
    }

    pub async fn check_modules(&self, modules: Vec<String>) -> Result<Vec<ModuleCheck>, PoolError> {
        match self.submit(Work::CheckModules(modules)).await? {
            WorkResult::Modules(report) => Ok(report),
            WorkResult::Run(_) => Err(PoolError::WorkerUnavailable("unexpected reply".into())),
        }
    }

    /// Reads handler scripts' declarations in a worker process of their own, so a catalog
    /// read never waits behind running programs (Initialize must answer within seconds).
    pub async fn declare(
        &self,
        scripts: Vec<Script>,
    ) -> Result<Vec<Result<String, String>>, PoolError> {
        let unavailable = |e: &dyn std::fmt::Display| PoolError::WorkerUnavailable(e.to_string());
        let mut worker = WorkerProcess::spawn(&self.config.worker, self.config.startup_timeout)
            .await
            .map_err(|e| unavailable(&e))?;
        worker
            .send(&ToWorker::Declare { scripts })
            .await
            .map_err(|e| unavailable(&e))?;
        match worker.next().await {
            Ok(FromWorker::Declared { results }) => Ok(results),
            Ok(_) => Err(PoolError::WorkerUnavailable(
                "unexpected answer to Declare".into(),
            )),
            Err(error) => Err(unavailable(&error)),
        }
    }

    /// Refuses new work and kills every worker (running programs included) right away.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
        self.queue.close();
    }

    pub fn next_run_id() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
