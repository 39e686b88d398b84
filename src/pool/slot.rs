//! One slot of a pool: owns at most one worker process (and the budget permit it lives on) and
//! runs jobs on it, one at a time. A slot ends when its worker idles out or is given back to
//! another environment, unless its own pool still has runs waiting.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::budget::{Permit, IDLE_GRACE};
use super::process::{Incoming, WorkerProcess};
use super::{Asked, Caller, Job, Limits, PoolError, RunOutcome, Shared};
use crate::ipc::{Answer, FrameError, FromWorker, Program, Request, Run, ToWorker};

/// How often a busy worker's memory is checked against the limit.
const MEMORY_POLL: Duration = Duration::from_millis(50);

pub(super) struct Slot {
    index: usize,
    shared: Arc<Shared>,
    worker: Option<WorkerProcess>,
    /// Held for as long as `worker` lives.
    permit: Option<Permit>,
    /// Where the worker is in its life, as far as the slot has heard.
    succession: Succession,
    /// Woken when a run is queued while this slot is the latest idle one.
    wakeup: Arc<tokio::sync::Notify>,
}

/// A worker's life as its slot follows it. After each answer a worker checks what the request
/// left and only then reads the next one, retiring (it says so) instead when something was
/// left. The slot does not wait for that: a request it sends meanwhile waits in the socket, and
/// goes to the successor if the worker retires (see `execute`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Succession {
    /// Takes the next request sent.
    Serving,
    /// Said it retires (it will not read another request) or was killed: its end comes next.
    Ending,
    /// Ended: its successor's `Ready` comes next.
    Awaiting,
}

/// What one message from a worker slot's processes means for the request in flight.
enum Observed {
    /// An answer (to the request in flight, or a stale one).
    Answer(Answer),
    /// The worker retires without reading another request: one sent to it goes to its successor.
    Retired,
    /// A successor is ready.
    Ready,
    /// The worker ended unexpectedly, with this cause.
    Lost(String),
    Nothing,
}

/// A request sent to the slot's worker and not yet answered. A worker that retires without
/// reading it leaves it to its successor, which is sent the same message once it is ready.
struct Exchange<R> {
    message: ToWorker,
    /// Sent to a worker that then retired before reading it.
    untaken: bool,
    request: std::marker::PhantomData<R>,
}

impl<R: Request> Exchange<R> {
    fn new(request: R) -> Self {
        Self {
            message: request.into(),
            untaken: false,
            request: std::marker::PhantomData,
        }
    }
}

/// What one message from the worker's side means for an [`Exchange`].
enum Heard<T> {
    /// The reply to the request (or, for a run, to an earlier one: the caller checks the id).
    Reply(T),
    /// The worker ended, or could not be sent the request; the cause.
    Lost(String),
    /// A verdict, a successor, or an answer of another kind (to an earlier request).
    Nothing,
}

/// Why the supervisor interrupted a run.
#[derive(Clone, Copy)]
enum InterruptReason {
    Deadline,
    CallerGone,
}

/// What ended an idle wait.
enum Wake {
    Job(Job),
    GiveBack,
    Stop,
    /// The worker's template is gone; the slot starts another.
    WorkerGone,
}

impl Slot {
    pub(super) fn new(index: usize, shared: Arc<Shared>) -> Self {
        Self {
            index,
            shared,
            worker: None,
            permit: None,
            succession: Succession::Serving,
            wakeup: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub(super) async fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        loop {
            if self.worker.is_none() && !self.start_worker().await {
                if self.leave() {
                    return;
                }
                continue;
            }
            let wake = self.wait_idle().await;
            let job = match wake {
                Wake::Job(job) => job,
                Wake::GiveBack => {
                    self.release_worker();
                    if self.leave() {
                        return;
                    }
                    continue;
                }
                Wake::Stop => break,
                Wake::WorkerGone => continue,
            };
            if job.is_closed() {
                continue; // the caller gave up while waiting in the queue
            }
            shared.stats.workers_busy.fetch_add(1, Ordering::Relaxed);
            match job {
                Job::Run(Asked {
                    work: (program, limits),
                    mut reply,
                }) => {
                    let outcome = self.execute(program, limits, &mut reply).await;
                    self.done(reply, outcome);
                }
                Job::CheckModules(Asked { work, reply }) => {
                    let report = self.request(work).await;
                    self.done(reply, report);
                }
            }
            // Another environment has fewer workers: hand this permit over rather than take this
            // pool's next run (which then waits its turn for a permit like everyone else).
            if self.worker.is_some() && shared.budget.should_give_back(shared.id) {
                self.release_worker();
                if self.leave() {
                    return;
                }
            }
        }
        self.release_worker();
        shared.slots.fetch_sub(1, Ordering::SeqCst);
    }

    /// Waits for a run while idle; gives the worker back after `idle_timeout`, when another
    /// environment may take its permit, or, once idle for [`IDLE_GRACE`], when any other
    /// environment waits for one.
    async fn wait_idle(&mut self) -> Wake {
        let shared = Arc::clone(&self.shared);
        shared.idle.fetch_add(1, Ordering::SeqCst);
        let ticket = shared.budget.idle(shared.id);
        let idle_over = tokio::time::sleep(shared.config.idle_timeout);
        let grace = tokio::time::sleep(IDLE_GRACE);
        tokio::pin!(idle_over, grace);
        let mut in_grace = true;
        shared.idle_slots.push(self.index, Arc::clone(&self.wakeup));
        let wake = loop {
            match shared.jobs.try_recv() {
                Ok(job) => break Wake::Job(job),
                Err(async_channel::TryRecvError::Closed) => break Wake::Stop,
                Err(async_channel::TryRecvError::Empty) => {}
            }
            tokio::select! {
                biased;
                () = shared.shutdown.cancelled() => break Wake::Stop,
                // A run was queued for this slot (see `IdleSlots`): look again.
                () = self.wakeup.notified() => continue,
                () = ticket.give_back.cancelled() => break Wake::GiveBack,
                () = &mut idle_over => break Wake::GiveBack,
                // The last request's verdict, and a successor when the worker retires.
                incoming = worker_reply(self.worker.as_mut()) => match incoming {
                    Ok(incoming) => {
                        if let Observed::Lost(cause) = self.observe(incoming) {
                            tracing::warn!(slot = self.index, %cause, "an idle worker ended");
                        }
                    }
                    Err(_) => {
                        let cause = self.worker_died().await;
                        tracing::warn!(slot = self.index, %cause, "a worker's template ended");
                        break Wake::WorkerGone;
                    }
                },
                () = &mut grace, if in_grace => {
                    in_grace = false;
                    if shared.budget.others_waiting(shared.id) {
                        break Wake::GiveBack;
                    }
                }
            }
        };
        drop(ticket);
        shared.idle_slots.remove(self.index);
        shared.idle.fetch_sub(1, Ordering::SeqCst);
        if matches!(wake, Wake::Job(_)) {
            // A run queued just behind the one taken may have counted this slot as idle: it
            // goes to the next idle slot, or gets a new one.
            if !shared.jobs.is_empty() {
                shared.idle_slots.wake_latest();
            }
            shared.add_slot_if_needed();
        }
        wake
    }

    /// Ends this slot unless runs are still queued for its pool (then it goes on, to start a
    /// worker for them). Checked after the count drops, so a run submitted meanwhile is never
    /// left without a slot: either the submitter saw no idle slot and added one, or this sees
    /// the run.
    fn leave(&self) -> bool {
        let shared = &self.shared;
        shared.slots.fetch_sub(1, Ordering::SeqCst);
        if shared.jobs.is_empty() || shared.shutdown.is_cancelled() {
            return true;
        }
        shared.slots.fetch_add(1, Ordering::SeqCst);
        false
    }

    /// Gets a permit and starts a worker. On failure every queued run fails with the reason
    /// (they could not start one either), and false is returned.
    async fn start_worker(&mut self) -> bool {
        let shared = Arc::clone(&self.shared);
        shared.pending.fetch_add(1, Ordering::SeqCst);
        let permit = tokio::select! {
            permit = shared.budget.acquire(shared.id) => Some(permit),
            () = shared.shutdown.cancelled() => None,
        };
        shared.pending.fetch_sub(1, Ordering::SeqCst);
        let Some(permit) = permit else { return false };
        if shared.jobs.is_empty() {
            return false; // another slot took the run this one was started for
        }
        let config = &shared.config;
        match WorkerProcess::spawn(&config.worker, config.startup_timeout).await {
            Ok(worker) => {
                let _ = shared
                    .stats
                    .python_version
                    .set(worker.python_version.clone());
                let owed =
                    shared
                        .lost_workers
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
                if owed.is_ok() {
                    shared.stats.worker_restarts.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(slot = self.index, pid = worker.pid(), "worker ready");
                self.worker = Some(worker);
                self.permit = Some(permit);
                shared.stats.workers_ready.fetch_add(1, Ordering::SeqCst);
                shared.stats.set_start_error(None);
                true
            }
            Err(error) => {
                tracing::error!(slot = self.index, %error, "worker failed to start");
                shared.stats.set_start_error(Some(error.to_string()));
                while let Ok(job) = shared.jobs.try_recv() {
                    job.fail(PoolError::WorkerUnavailable(error.to_string()));
                }
                false
            }
        }
    }

    /// Stops the worker (if any) and frees its permit, without counting it as a restart.
    fn release_worker(&mut self) {
        drop(self.retire_worker());
        self.permit = None;
    }

    fn retire_worker(&mut self) -> Option<WorkerProcess> {
        let worker = self.worker.take()?;
        self.succession = Succession::Serving;
        self.permit = None;
        self.shared
            .stats
            .workers_ready
            .fetch_sub(1, Ordering::SeqCst);
        Some(worker)
    }

    /// A template lost: the next start (in any slot) replaces it.
    fn lost_worker(&self) {
        self.shared.lost_workers.fetch_add(1, Ordering::SeqCst);
    }

    /// The template is gone (its sockets closed): why, and the slot starts a new one later.
    async fn worker_died(&mut self) -> String {
        self.lost_worker();
        match self.retire_worker() {
            Some(worker) => worker.exit_cause().await,
            None => "no worker".to_owned(),
        }
    }

    /// Kills the current worker and what it started (a deadline, a limit, a caller gone); the
    /// template forks its successor.
    fn kill_worker(&mut self) {
        if let Some(worker) = self.worker.as_mut() {
            worker.kill_worker();
            self.succession = Succession::Ending;
            self.shared
                .stats
                .worker_restarts
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Follows the worker's life through one message (see [`Succession`]).
    fn observe(&mut self, incoming: Incoming) -> Observed {
        match incoming {
            Incoming::Message(FromWorker::Retiring { residue, running }) => {
                tracing::debug!(
                    slot = self.index,
                    ?residue,
                    "a run left state behind; replacing its worker"
                );
                let stats = &self.shared.stats;
                let counter = if running {
                    &stats.worker_restarts
                } else {
                    &stats.worker_refreshes
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.succession = Succession::Ending;
                Observed::Retired
            }
            Incoming::WorkerEnded(cause) => {
                let expected = self.succession != Succession::Serving;
                self.succession = Succession::Awaiting;
                if expected {
                    return Observed::Nothing;
                }
                self.shared
                    .stats
                    .worker_restarts
                    .fetch_add(1, Ordering::Relaxed);
                Observed::Lost(cause)
            }
            Incoming::Message(FromWorker::Ready { .. }) => {
                self.succession = Succession::Serving;
                Observed::Ready
            }
            Incoming::Message(FromWorker::Answer(answer)) => Observed::Answer(answer),
            // Only a worker starting up says it failed to; `WorkerProcess::spawn` reads it.
            Incoming::Message(FromWorker::StartupFailed { .. }) => Observed::Nothing,
        }
    }

    /// Before sending a request: a worker that takes it. A template that forks no successor in
    /// time is killed, and the slot starts another (false).
    async fn wait_until_serving(&mut self) -> bool {
        let startup = self.shared.config.startup_timeout;
        let waited = tokio::time::timeout(startup, async {
            while self.succession != Succession::Serving {
                match worker_reply(self.worker.as_mut()).await {
                    Ok(incoming) => {
                        self.observe(incoming);
                    }
                    Err(_) => return false,
                }
            }
            true
        })
        .await;
        if waited == Ok(true) {
            return true;
        }
        tracing::error!(
            slot = self.index,
            "no successor worker was forked; restarting the template"
        );
        self.lost_worker();
        // Dropped, it kills its template and everything below.
        drop(self.retire_worker());
        false
    }

    /// Counts a job done and answers its caller.
    fn done<R>(&self, reply: Caller<R>, result: Result<R, PoolError>) {
        let stats = &self.shared.stats;
        stats.workers_busy.fetch_sub(1, Ordering::Relaxed);
        stats.runs_completed.fetch_add(1, Ordering::Relaxed);
        // A caller that went away needs no answer.
        let _ = reply.send(result);
    }

    /// Sends a request to a worker that takes it and waits for the reply.
    async fn request<R: Request>(&mut self, request: R) -> Result<R::Reply, PoolError> {
        let unavailable = PoolError::WorkerUnavailable;
        if !self.wait_until_serving().await {
            return Err(unavailable("no worker".into()));
        }
        let mut exchange = Exchange::new(request);
        self.send_exchange(&exchange).await.map_err(unavailable)?;
        loop {
            let incoming = worker_reply(self.worker.as_mut()).await;
            match self.hear(&mut exchange, incoming).await {
                Heard::Reply(reply) => return Ok(reply),
                Heard::Lost(cause) => return Err(unavailable(cause)),
                Heard::Nothing => {}
            }
        }
    }

    /// Sends the exchange's request; on failure, why the worker is gone.
    async fn send_exchange<R>(&mut self, exchange: &Exchange<R>) -> Result<(), String> {
        match self.send(&exchange.message).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.worker_died().await),
        }
    }

    /// Follows one message from the worker's side for an exchange: takes its reply, and sends
    /// the request again to the successor of a worker that retired without reading it. Not
    /// cancel-safe (it may send); `incoming` is read before, by the cancel-safe
    /// [`worker_reply`].
    async fn hear<R: Request>(
        &mut self,
        exchange: &mut Exchange<R>,
        incoming: Result<Incoming, FrameError>,
    ) -> Heard<R::Reply> {
        let incoming = match incoming {
            Ok(incoming) => incoming,
            Err(_) => return Heard::Lost(self.worker_died().await),
        };
        match self.observe(incoming) {
            Observed::Answer(answer) => R::reply(answer).map_or(Heard::Nothing, Heard::Reply),
            Observed::Retired => {
                exchange.untaken = true;
                Heard::Nothing
            }
            Observed::Ready if exchange.untaken => {
                exchange.untaken = false;
                tracing::debug!(
                    slot = self.index,
                    "the request goes to the retired worker's successor"
                );
                match self.send_exchange(exchange).await {
                    Ok(()) => Heard::Nothing,
                    Err(cause) => Heard::Lost(cause),
                }
            }
            Observed::Lost(cause) => Heard::Lost(cause),
            Observed::Ready | Observed::Nothing => Heard::Nothing,
        }
    }

    /// Runs one program under its deadline, the caller's presence and the memory limit.
    async fn execute(
        &mut self,
        program: Box<Program>,
        limits: Limits,
        reply: &mut Caller<RunOutcome>,
    ) -> Result<RunOutcome, PoolError> {
        let run_id = super::Pool::next_run_id();
        let started = Instant::now();
        // Time spent waiting for a worker comes off a caller's deadline.
        let limit = limits.stop_by.map_or(limits.timeout, |at| {
            limits.timeout.min(at.saturating_duration_since(started))
        });
        if !self.wait_until_serving().await {
            return Err(PoolError::WorkerUnavailable("no worker".into()));
        }
        let mut exchange = Exchange::new(Run { run_id, program });
        if let Err(cause) = self.send_exchange(&exchange).await {
            return Ok(RunOutcome::WorkerDied { cause });
        }

        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        // The first check one period in: at the start the worker holds only its baseline, and a
        // check then (what `interval` does) walks /proc on the runtime's one thread for every
        // run, however short.
        let mut memory_check =
            tokio::time::interval_at(tokio::time::Instant::now() + MEMORY_POLL, MEMORY_POLL);
        // A check that took long is not followed by others back to back.
        memory_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut interrupted: Option<(InterruptReason, Instant)> = None;
        loop {
            let grace_over = async {
                match interrupted {
                    Some((_, at)) => {
                        tokio::time::sleep_until((at + self.shared.config.interrupt_grace).into())
                            .await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                incoming = worker_reply(self.worker.as_mut()) => match self.hear(&mut exchange, incoming).await {
                    Heard::Reply(output) if output.run_id == run_id => {
                        // What it left running retires the worker with its verdict.
                        return Ok(match interrupted {
                            Some((InterruptReason::Deadline, _)) => RunOutcome::TimedOut {
                                after: limit, output: Some(output),
                            },
                            _ => RunOutcome::Finished(output),
                        });
                    }
                    Heard::Lost(cause) => return Ok(RunOutcome::WorkerDied { cause }),
                    _ => continue, // a verdict, or an answer to an earlier request
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
                        Some(InterruptReason::Deadline) => RunOutcome::TimedOut { after: limit, output: None },
                    });
                }
                _ = memory_check.tick() => {
                    if let Some(cause) = self.over_limits(limits.memory_limit_bytes, limits.max_processes).await {
                        self.kill_worker();
                        return Ok(RunOutcome::WorkerDied { cause });
                    }
                }
                () = self.shared.shutdown.cancelled() => {
                    drop(self.retire_worker()); // killing its template and everything below
                    return Err(PoolError::ShuttingDown);
                }
            }
        }
    }

    async fn send(&mut self, request: &ToWorker) -> Result<(), FrameError> {
        match self.worker.as_mut() {
            Some(worker) => worker.send(request).await,
            None => Err(FrameError::Closed),
        }
    }

    async fn send_interrupt(&mut self, run_id: u64) {
        if let Some(worker) = self.worker.as_mut() {
            // A failed send means the worker is gone; the reply branch reports that.
            let _ = worker.interrupt(run_id).await;
        }
    }

    /// Whether the run's processes, the worker and all it started, are over the memory or the
    /// process limit; the cause names the limit. The walk through the OS's process table runs
    /// on a blocking thread: a run with thousands of processes makes it long, and the
    /// supervisor's one runtime thread serves every call meanwhile.
    async fn over_limits(&self, memory: Option<u64>, processes: Option<usize>) -> Option<String> {
        if memory.is_none() && processes.is_none() {
            return None;
        }
        let tree = self.worker.as_ref()?.tree();
        let usage = tokio::task::spawn_blocking(move || tree.usage())
            .await
            .ok()??;
        const MIB: u64 = 1024 * 1024;
        if let Some(limit) = memory.filter(|limit| usage.memory_bytes > *limit) {
            return Some(format!(
                "the run's processes exceeded the memory limit of {} MiB (resident {} MiB, the \
                 worker and what the run started) and were killed",
                limit / MIB,
                usage.memory_bytes / MIB
            ));
        }
        processes
            .filter(|limit| usage.descendants > *limit)
            .map(|limit| {
                format!(
                    "the run had {} processes, over the limit of {limit} (max_processes); they \
                     and the worker were killed",
                    usage.descendants
                )
            })
    }
}

async fn worker_reply(worker: Option<&mut WorkerProcess>) -> Result<Incoming, FrameError> {
    match worker {
        Some(worker) => worker.next().await,
        None => Err(FrameError::Closed),
    }
}
