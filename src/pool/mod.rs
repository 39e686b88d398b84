//! The supervisor side of the workers for one Python environment: a bounded queue of runs and
//! slots that each own at most one worker process, which they start, feed, interrupt, kill and
//! replace. Slots are started on demand and give their worker back when it idles, within a
//! worker [`Budget`] shared by every environment.

mod budget;
mod process;
mod slot;
mod work_socket;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::ipc::{
    CheckModules, Declare, FromWorker, ModuleCheck, Program, Request, RunOutput, Script,
};
pub use budget::{Budget, PoolId};
pub use process::{describe_exit, Incoming, SpawnError, WorkerCommand, WorkerProcess};

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub queue_capacity: usize,
    pub worker: WorkerCommand,
    /// How long an interrupted program gets to stop before its worker is killed.
    pub interrupt_grace: Duration,
    pub startup_timeout: Duration,
    /// A worker with nothing to do for this long is stopped and its permit given back.
    pub idle_timeout: Duration,
    /// Modules imported once, after the environment's first run, for Health's package report.
    pub check_modules: Vec<String>,
}

/// Counters read by Health without touching any lock a run can hold.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Worker processes alive (idle or busy).
    pub workers_ready: AtomicUsize,
    pub workers_busy: AtomicUsize,
    /// Workers replaced because one crashed, was killed or left a thread or process running.
    pub worker_restarts: AtomicU64,
    /// Workers replaced because a request left state behind a later one could see (residue).
    pub worker_refreshes: AtomicU64,
    pub runs_completed: AtomicU64,
    pub python_version: OnceLock<String>,
    /// Why the last worker start failed, and when; cleared when a worker starts.
    start_error: RwLock<Option<(Instant, String)>>,
    /// The package check, once it ran.
    pub packages: RwLock<Option<Vec<ModuleCheck>>>,
}

/// After a failed start, runs fail at once with its reason for this long instead of each
/// trying (and failing) to start a worker again.
const START_FAILURE_HOLD: Duration = Duration::from_secs(2);

impl PoolStats {
    pub fn start_error(&self) -> Option<String> {
        self.start_error
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, error)| error.clone())
    }

    /// The last start failure, if it is recent enough that trying again is pointless.
    fn recent_start_error(&self) -> Option<String> {
        self.start_error
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < START_FAILURE_HOLD)
            .map(|(_, error)| error.clone())
    }

    fn set_start_error(&self, error: Option<String>) {
        *self
            .start_error
            .write()
            .unwrap_or_else(PoisonError::into_inner) = error.map(|e| (Instant::now(), e));
    }

    pub fn packages(&self) -> Option<Vec<ModuleCheck>> {
        self.packages
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What the supervisor holds a run to; the worker never sees these.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    /// The latest moment the run may go on (a caller's deadline), however long it waited for
    /// a worker: its limit is `timeout` or what is left until then, whichever is less.
    pub stop_by: Option<Instant>,
    /// A worker whose resident memory passes this during the run is killed.
    pub memory_limit_bytes: Option<u64>,
    /// A run whose processes (besides its worker) pass this is stopped with its worker.
    pub max_processes: Option<usize>,
}

/// How a run ended, from the supervisor's point of view.
#[derive(Debug)]
pub enum RunOutcome {
    /// The worker answered: the program finished, raised, or exited.
    Finished(RunOutput),
    /// The deadline passed. `output` is the worker's answer when the interrupt stopped the
    /// program (what it printed before it stopped); None when it did not stop and its worker
    /// was killed.
    TimedOut {
        after: Duration,
        output: Option<RunOutput>,
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

/// Where a job's result goes: to the caller waiting for it.
type Caller<R> = oneshot::Sender<Result<R, PoolError>>;

/// A job's work, and where its result goes.
struct Asked<W, R> {
    work: W,
    reply: Caller<R>,
}

/// A job in the queue: each kind of work with the channel for its own kind of result.
enum Job {
    Run(Asked<(Box<Program>, Limits), RunOutcome>),
    CheckModules(Asked<CheckModules, Vec<ModuleCheck>>),
}

impl Job {
    /// Whether the caller went away.
    fn is_closed(&self) -> bool {
        match self {
            Job::Run(asked) => asked.reply.is_closed(),
            Job::CheckModules(asked) => asked.reply.is_closed(),
        }
    }

    fn fail(self, error: PoolError) {
        // A caller that went away needs no answer.
        match self {
            Job::Run(asked) => {
                let _ = asked.reply.send(Err(error));
            }
            Job::CheckModules(asked) => {
                let _ = asked.reply.send(Err(error));
            }
        }
    }
}

/// The slots waiting for a run, in the order they became idle. A queued run wakes the latest:
/// its worker is the warmest (caches, and the pages it touched), and when runs come one after
/// another the same worker takes each, instead of each worker in turn. Turn by turn, a worker
/// finishing one run's residue check (worker/residue.rs) and another starting the next run
/// competed for the cores with the supervisor and the caller.
#[derive(Default)]
pub(crate) struct IdleSlots(std::sync::Mutex<Vec<(usize, Arc<tokio::sync::Notify>)>>);

impl IdleSlots {
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Arc<tokio::sync::Notify>)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, slot: usize, wakeup: Arc<tokio::sync::Notify>) {
        self.slots().push((slot, wakeup));
    }

    pub(crate) fn remove(&self, slot: usize) {
        self.slots().retain(|(index, _)| *index != slot);
    }

    /// Wakes the slot that became idle last. Its wake-up is kept if it is not waiting yet, and
    /// a slot that finds the run gone (another took it) just waits again.
    pub(crate) fn wake_latest(&self) {
        if let Some((_, wakeup)) = self.slots().last() {
            wakeup.notify_one();
        }
    }
}

/// What a pool's slots share.
pub(crate) struct Shared {
    id: PoolId,
    config: PoolConfig,
    stats: Arc<PoolStats>,
    budget: Arc<Budget>,
    jobs: async_channel::Receiver<Job>,
    idle_slots: IdleSlots,
    shutdown: CancellationToken,
    /// Slot tasks alive, slots idle with a worker, and slots waiting for a permit.
    slots: AtomicUsize,
    idle: AtomicUsize,
    pending: AtomicUsize,
    next_slot: AtomicUsize,
    /// Workers lost to crashes, kills or leftovers and not yet replaced: the next starts count
    /// as restarts (an idle worker that stopped and a new one later is not a restart).
    lost_workers: AtomicUsize,
}

pub struct Pool {
    queue: async_channel::Sender<Job>,
    shared: Arc<Shared>,
}

impl Shared {
    /// Starts a slot when queued runs outnumber the slots that could take them (idle ones, and
    /// ones already waiting for a worker), up to the whole budget.
    ///
    /// Called by a submitter after it queued a run, and by a slot after it took one: a slot
    /// that took a run still counts as idle until it says otherwise, so a submitter can see
    /// "one idle slot" for a run it queued just behind, and leave it without a slot; the slot,
    /// no longer idle, then sees that run in the queue.
    fn add_slot_if_needed(self: &Arc<Self>) {
        let ready_for_work = self.idle.load(Ordering::SeqCst) + self.pending.load(Ordering::SeqCst);
        if ready_for_work >= self.jobs.len() {
            return;
        }
        let total = self.budget.total();
        let grew = self
            .slots
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < total).then_some(n + 1)
            })
            .is_ok();
        if grew {
            let index = self.next_slot.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(slot::Slot::new(index, Arc::clone(self)).run());
        }
    }
}

impl Pool {
    /// A pool with no worker yet: the first run starts one. `id` names the pool to `budget`.
    pub fn new(id: PoolId, config: PoolConfig, budget: Arc<Budget>) -> Arc<Self> {
        let (queue, jobs) = async_channel::bounded(config.queue_capacity.max(1));
        Arc::new(Self {
            queue,
            shared: Arc::new(Shared {
                id,
                config,
                stats: Arc::new(PoolStats::default()),
                budget,
                jobs,
                idle_slots: IdleSlots::default(),
                shutdown: CancellationToken::new(),
                slots: AtomicUsize::new(0),
                idle: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                next_slot: AtomicUsize::new(0),
                lost_workers: AtomicUsize::new(0),
            }),
        })
    }

    pub fn stats(&self) -> &PoolStats {
        &self.shared.stats
    }

    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// The modules of the environment's variant (checked once, for Health).
    pub fn declared_modules(&self) -> &[String] {
        &self.shared.config.check_modules
    }

    /// Slots waiting for a permit to start a worker.
    pub fn starting(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Queues `work` as the kind of job `job` makes of it, and waits for its result.
    async fn submit<W, R>(&self, work: W, job: fn(Asked<W, R>) -> Job) -> Result<R, PoolError> {
        let shared = &self.shared;
        if shared.shutdown.is_cancelled() {
            return Err(PoolError::ShuttingDown);
        }
        if shared.stats.workers_ready.load(Ordering::SeqCst) == 0 {
            if let Some(error) = shared.stats.recent_start_error() {
                return Err(PoolError::WorkerUnavailable(error));
            }
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(job(Asked { work, reply }))
            .map_err(|e| match e {
                async_channel::TrySendError::Full(_) => PoolError::QueueFull {
                    workers: shared.budget.total(),
                    queued: self.queue.len(),
                },
                async_channel::TrySendError::Closed(_) => PoolError::ShuttingDown,
            })?;
        self.shared.idle_slots.wake_latest();
        self.shared.add_slot_if_needed();
        // Dropping this future (the caller went away) drops `answer`; the slot notices through
        // `reply.closed()` and cancels the run.
        answer.await.map_err(|_| PoolError::ShuttingDown)?
    }

    pub async fn run(&self, program: Program, limits: Limits) -> Result<RunOutcome, PoolError> {
        self.submit((Box::new(program), limits), Job::Run).await
    }

    /// Imports the environment's declared packages once, in the background, so Health can
    /// report them without a worker started just for that at start-up (an environment nobody
    /// uses costs nothing); called after the environment's first run. The check is an ordinary
    /// job of this pool, and leaves the packages imported in the worker that ran it.
    pub fn check_packages_once(self: &Arc<Self>) {
        let modules = self.declared_modules().to_vec();
        if modules.is_empty() {
            return;
        }
        {
            let mut packages = self
                .shared
                .stats
                .packages
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if packages.is_some() {
                return;
            }
            // Claimed with an empty report, so only one check runs.
            *packages = Some(Vec::new());
        }
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            let report = pool
                .check_modules(modules.clone())
                .await
                .unwrap_or_else(|error| {
                    let error = error.to_string();
                    modules
                        .into_iter()
                        .map(|module| ModuleCheck {
                            module,
                            version: None,
                            error: Some(error.clone()),
                        })
                        .collect()
                });
            for failure in report.iter().filter(|m| m.error.is_some()) {
                tracing::warn!(module = %failure.module, error = ?failure.error, "package does not import");
            }
            *pool
                .shared
                .stats
                .packages
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Some(report);
        });
    }

    pub async fn check_modules(&self, modules: Vec<String>) -> Result<Vec<ModuleCheck>, PoolError> {
        self.submit(CheckModules { modules }, Job::CheckModules)
            .await
    }

    /// Reads handler scripts' declarations in a worker process of their own, so a catalog
    /// read never waits behind running programs (Initialize must answer within seconds).
    pub async fn declare(
        &self,
        scripts: Vec<Script>,
    ) -> Result<Vec<Result<String, String>>, PoolError> {
        let unavailable = |e: &dyn std::fmt::Display| PoolError::WorkerUnavailable(e.to_string());
        let config = &self.shared.config;
        let mut worker = WorkerProcess::spawn(&config.worker, config.startup_timeout)
            .await
            .map_err(|e| unavailable(&e))?;
        worker
            .send(&Declare { scripts }.into())
            .await
            .map_err(|e| unavailable(&e))?;
        // A fresh worker that said Ready answers the one request it was sent, first.
        let results = match worker.next().await.map_err(|e| unavailable(&e))? {
            Incoming::Message(FromWorker::Answer(answer)) => Declare::reply(answer),
            _ => None,
        };
        results.ok_or_else(|| PoolError::WorkerUnavailable("unexpected answer to Declare".into()))
    }

    /// Refuses new work and kills every worker (running programs included) right away.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
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
