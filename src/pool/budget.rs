//! The worker budget shared by every environment's pool: at most `total` worker processes exist
//! at once, whichever environments they serve.
//!
//! A worker holds one permit for its whole life. An environment that needs a worker while the
//! budget is spent takes one from another environment when that evens out the split (it has
//! none, or two fewer: [`takes_from`]): an idle worker is stopped at once, a busy one after its
//! run. A worker that has idled for [`IDLE_GRACE`] gives way to any waiting environment, since
//! its own has stopped asking. A freed permit goes to the waiting pool that holds the fewest.
//! So an environment nobody uses costs nothing, a busy one can use every permit, and busy ones
//! settle on an even share instead of trading workers back and forth (each trade costs a
//! worker start; a worker is idle for a moment between the runs of a busy client).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Which pool asks; pools are numbered by the environments that own them.
pub type PoolId = usize;

/// How long a worker idles before any waiting environment may have its permit. Far longer
/// than the gap between back-to-back runs of one client, far shorter than a worker start.
pub const IDLE_GRACE: Duration = Duration::from_millis(50);

/// Whether a pool holding `taker` permits may take one from a pool holding `giver`: when it
/// has none, or when moving one leaves the giver at least as many as the taker.
fn takes_from(taker: usize, giver: usize) -> bool {
    taker == 0 || taker + 1 < giver
}

pub struct Budget {
    total: usize,
    state: Mutex<State>,
    next_ticket: AtomicU64,
}

struct State {
    free: usize,
    /// Idle workers, longest idle first, each with the token that asks it to stop.
    idle: Vec<IdleEntry>,
    /// Slots waiting for a permit, oldest first.
    waiters: Vec<Waiter>,
    /// Permits held, per pool.
    held: Vec<usize>,
}

struct IdleEntry {
    ticket: u64,
    pool: PoolId,
    since: Instant,
    give_back: CancellationToken,
}

struct Waiter {
    ticket: u64,
    pool: PoolId,
    granted: oneshot::Sender<()>,
}

impl State {
    /// Whether a pool waiting for a permit may take one of `pool`'s.
    fn taker_waits(&mut self, pool: PoolId) -> bool {
        let giver = *self.held(pool);
        self.waiters.iter().any(|w| {
            w.pool != pool && takes_from(self.held.get(w.pool).copied().unwrap_or(0), giver)
        })
    }

    fn held(&mut self, pool: PoolId) -> &mut usize {
        if self.held.len() <= pool {
            self.held.resize(pool + 1, 0);
        }
        &mut self.held[pool]
    }

    /// Gives a freed permit to the waiting pool holding the fewest (the oldest waiter among
    /// equals), or keeps it free.
    fn hand_out(&mut self) {
        loop {
            let best = (0..self.waiters.len()).min_by_key(|&i| {
                let pool = self.waiters[i].pool;
                (self.held.get(pool).copied().unwrap_or(0), i)
            });
            let Some(index) = best else {
                self.free += 1;
                return;
            };
            let waiter = self.waiters.remove(index);
            // A waiter whose wait was dropped has also left the list; a send can only fail for
            // one that is being dropped right now, and then the next waiter is tried.
            if waiter.granted.send(()).is_ok() {
                *self.held(waiter.pool) += 1;
                return;
            }
        }
    }
}

/// A worker's share of the budget; given back when dropped.
pub struct Permit {
    budget: Arc<Budget>,
    pool: PoolId,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.budget.state();
        let held = state.held(self.pool);
        *held = held.saturating_sub(1);
        state.hand_out();
    }
}

/// An idle worker's registration: `give_back` is cancelled when another pool needs its permit.
/// Dropping the ticket withdraws the registration.
pub struct IdleTicket<'a> {
    budget: &'a Budget,
    ticket: u64,
    pub give_back: CancellationToken,
}

impl Drop for IdleTicket<'_> {
    fn drop(&mut self) {
        self.budget
            .state()
            .idle
            .retain(|entry| entry.ticket != self.ticket);
    }
}

/// A wait for a permit. If it is dropped before it completes, it withdraws, or passes on a
/// permit granted in the meantime.
struct Wait<'a> {
    budget: &'a Budget,
    ticket: u64,
    pool: PoolId,
    granted: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.budget.state();
        let before = state.waiters.len();
        state.waiters.retain(|w| w.ticket != self.ticket);
        // Not in the list any more and a grant is waiting: it was counted for this pool.
        if state.waiters.len() == before && self.granted.try_recv().is_ok() {
            let held = state.held(self.pool);
            *held = held.saturating_sub(1);
            state.hand_out();
        }
    }
}

impl Budget {
    pub fn new(total: usize) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Self {
            total,
            state: Mutex::new(State {
                free: total,
                idle: Vec::new(),
                waiters: Vec::new(),
                held: Vec::new(),
            }),
            next_ticket: AtomicU64::new(1),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit for one worker of `pool`. When none is free, the longest-idle worker of another
    /// pool is asked to stop, and busy ones may give theirs back after their run (see
    /// [`Budget::should_give_back`]).
    pub async fn acquire(self: &Arc<Self>, pool: PoolId) -> Permit {
        let mut wait = {
            let mut state = self.state();
            if state.free > 0 {
                state.free -= 1;
                *state.held(pool) += 1;
                return Permit {
                    budget: Arc::clone(self),
                    pool,
                };
            }
            let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
            let (granted, receiver) = oneshot::channel();
            state.waiters.push(Waiter {
                ticket,
                pool,
                granted,
            });
            let taker = *state.held(pool);
            let held = state.held.clone();
            let giving = state.idle.iter().position(|entry| {
                entry.pool != pool
                    && (entry.since.elapsed() >= IDLE_GRACE
                        || takes_from(taker, held.get(entry.pool).copied().unwrap_or(0)))
            });
            if let Some(index) = giving {
                state.idle.remove(index).give_back.cancel();
            }
            Wait {
                budget: self,
                ticket,
                pool,
                granted: receiver,
                done: false,
            }
        };
        // The sender lives in the list until it grants, so this only ends with a grant; a
        // closed channel would mean the budget itself is gone.
        let _ = (&mut wait.granted).await;
        wait.done = true;
        Permit {
            budget: Arc::clone(self),
            pool,
        }
    }

    /// Registers an idle worker of `pool`. If a waiting pool may take its permit
    /// ([`takes_from`]), the ticket's token is cancelled at once: the worker should give its
    /// permit back rather than idle. Later waiters cancel it through [`Budget::acquire`].
    pub fn idle(&self, pool: PoolId) -> IdleTicket<'_> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let give_back = CancellationToken::new();
        let mut state = self.state();
        if state.taker_waits(pool) {
            give_back.cancel();
        } else {
            state.idle.push(IdleEntry {
                ticket,
                pool,
                since: Instant::now(),
                give_back: give_back.clone(),
            });
        }
        IdleTicket {
            budget: self,
            ticket,
            give_back,
        }
    }

    /// Whether a worker of `pool` that just finished a run should give its permit to a waiting
    /// pool ([`takes_from`]) instead of taking its own pool's next run.
    pub fn should_give_back(&self, pool: PoolId) -> bool {
        self.state().taker_waits(pool)
    }

    /// Whether any other pool waits for a permit (an idle worker past [`IDLE_GRACE`] yields
    /// to it).
    pub fn others_waiting(&self, pool: PoolId) -> bool {
        self.state().waiters.iter().any(|w| w.pool != pool)
    }

    /// Permits not held by any worker.
    pub fn available(&self) -> usize {
        self.state().free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn waiting(budget: &Budget, pool: PoolId) -> usize {
        budget
            .state()
            .waiters
            .iter()
            .filter(|w| w.pool == pool)
            .count()
    }

    async fn until_waiting(budget: &Budget, pool: PoolId) {
        while waiting(budget, pool) == 0 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_waiting_pool_takes_back_an_idle_worker_of_another() {
        let budget = Budget::new(1);
        let held = budget.acquire(0).await;
        let ticket = budget.idle(0);
        assert!(!ticket.give_back.is_cancelled());
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(1).await })
        };
        tokio::time::timeout(Duration::from_secs(5), ticket.give_back.cancelled())
            .await
            .expect("the idle worker is asked to stop");
        assert!(budget.should_give_back(0), "pool 1 has no worker");
        assert!(!budget.should_give_back(1));
        drop(ticket);
        drop(held);
        let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter gets the permit")
            .unwrap();
        assert_eq!(waiting(&budget, 1), 0, "no one waits any more");
        assert_eq!(budget.available(), 0);
        drop(permit);
        assert_eq!(budget.available(), 1);
        assert_eq!(*budget.state().held(1), 0);
    }

    #[tokio::test]
    async fn an_idle_worker_of_the_same_pool_is_not_taken_back() {
        let budget = Budget::new(1);
        let _held = budget.acquire(0).await;
        let ticket = budget.idle(0);
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(0).await })
        };
        until_waiting(&budget, 0).await;
        assert!(!ticket.give_back.is_cancelled());
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(waiting(&budget, 0), 0, "a cancelled wait is withdrawn");
    }

    #[tokio::test]
    async fn a_worker_that_turns_idle_while_another_pool_waits_is_told_at_once() {
        let budget = Budget::new(1);
        let held = budget.acquire(0).await;
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(1).await })
        };
        until_waiting(&budget, 1).await;
        let ticket = budget.idle(0);
        assert!(ticket.give_back.is_cancelled());
        drop(held);
        let _permit = waiter.await.unwrap();
    }

    #[tokio::test]
    async fn busy_pools_settle_on_an_even_split() {
        let budget = Budget::new(3);
        let a1 = budget.acquire(0).await;
        let a2 = budget.acquire(0).await;
        let _b1 = budget.acquire(1).await;
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(1).await })
        };
        until_waiting(&budget, 1).await;
        // 2 against 1: moving one would only swap the imbalance.
        assert!(!budget.should_give_back(0));
        drop(a2);
        let _b2 = waiter.await.unwrap();
        // 1 against 2, and pool 0 waits: still left alone.
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(0).await })
        };
        until_waiting(&budget, 0).await;
        assert!(!budget.should_give_back(1));
        drop(a1);
        let _a = waiter.await.unwrap();
    }

    #[tokio::test]
    async fn a_freed_permit_goes_to_the_pool_holding_fewest() {
        let budget = Budget::new(2);
        let a1 = budget.acquire(0).await;
        let _a2 = budget.acquire(0).await;
        let first = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(0).await })
        };
        until_waiting(&budget, 0).await;
        let second = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(1).await })
        };
        until_waiting(&budget, 1).await;
        drop(a1);
        let _b = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("pool 1, holding none, is served first")
            .unwrap();
        assert_eq!(waiting(&budget, 0), 1, "pool 0 still waits");
        first.abort();
        let _ = first.await;
        assert_eq!(waiting(&budget, 0), 0);
    }

    #[tokio::test]
    async fn a_permit_granted_to_a_dropped_wait_is_passed_on() {
        let budget = Budget::new(1);
        let held = budget.acquire(0).await;
        let mut dropped = Box::pin(budget.acquire(1));
        // Register the wait, then grant it without polling it again, then drop it.
        assert!(futures_poll_once(dropped.as_mut()).await.is_none());
        drop(held);
        drop(dropped);
        assert_eq!(budget.available(), 1, "the grant came back");
        assert_eq!(*budget.state().held(1), 0);
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(out) => Some(out),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn an_evenly_held_idle_worker_gives_way_after_the_grace() {
        let budget = Budget::new(2);
        let _a = budget.acquire(0).await;
        let _b = budget.acquire(1).await;
        let ticket = budget.idle(0);
        let first = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(1).await })
        };
        until_waiting(&budget, 1).await;
        assert!(
            !ticket.give_back.is_cancelled(),
            "1 against 1: a moment of idleness between runs is not given away"
        );
        assert!(budget.others_waiting(0));
        first.abort();
        let _ = first.await;
        tokio::time::advance(IDLE_GRACE).await;
        let second = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(1).await })
        };
        until_waiting(&budget, 1).await;
        assert!(
            ticket.give_back.is_cancelled(),
            "idle past the grace: taken"
        );
        second.abort();
    }
}
