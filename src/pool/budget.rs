//! The worker budget shared by every environment's pool: at most `total` worker processes exist
//! at once, whichever environments they serve.
//!
//! A worker holds one permit for its whole life. An environment that needs a worker while the
//! budget is spent takes one back from another environment: the longest-idle worker is stopped
//! at once, and a busy one is given back as soon as its run ends. So an environment nobody uses
//! costs nothing, and a busy one can use every permit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Which pool asks; pools are numbered by the environments that own them.
pub type PoolId = usize;

pub struct Budget {
    total: usize,
    permits: Arc<Semaphore>,
    state: Mutex<State>,
    next_ticket: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Idle workers, longest idle first, each with the token that asks it to stop.
    idle: Vec<IdleEntry>,
    /// Slots waiting for a permit, per pool.
    waiting: Vec<(PoolId, usize)>,
}

struct IdleEntry {
    ticket: u64,
    pool: PoolId,
    give_back: CancellationToken,
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

/// Counts a slot as waiting for as long as it waits, even if its wait is cancelled.
struct Waiting<'a> {
    budget: &'a Budget,
    pool: PoolId,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.budget.state();
        if let Some(entry) = state.waiting.iter_mut().find(|(p, _)| *p == self.pool) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

impl Budget {
    pub fn new(total: usize) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Self {
            total,
            permits: Arc::new(Semaphore::new(total)),
            state: Mutex::new(State::default()),
            next_ticket: AtomicU64::new(1),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A permit for one worker of `pool`. When none is free, the longest-idle worker of another
    /// pool is asked to stop, and busy ones give theirs back after their run (see
    /// [`Budget::others_waiting`]). Permits are handed out first come, first served.
    pub async fn acquire(&self, pool: PoolId) -> OwnedSemaphorePermit {
        if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            return permit;
        }
        let _waiting = {
            let mut state = self.state();
            match state.waiting.iter_mut().find(|(p, _)| *p == pool) {
                Some(entry) => entry.1 += 1,
                None => state.waiting.push((pool, 1)),
            }
            if let Some(index) = state.idle.iter().position(|entry| entry.pool != pool) {
                state.idle.remove(index).give_back.cancel();
            }
            Waiting { budget: self, pool }
        };
        loop {
            // The semaphore is never closed, so this only fails in theory; wait again then.
            if let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await {
                return permit;
            }
        }
    }

    /// Registers an idle worker of `pool`. If another pool is already waiting, the ticket's
    /// token is cancelled at once: the worker should give its permit back rather than idle.
    pub fn idle(&self, pool: PoolId) -> IdleTicket<'_> {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let give_back = CancellationToken::new();
        let mut state = self.state();
        if others_waiting(&state, pool) {
            give_back.cancel();
        } else {
            state.idle.push(IdleEntry {
                ticket,
                pool,
                give_back: give_back.clone(),
            });
        }
        IdleTicket {
            budget: self,
            ticket,
            give_back,
        }
    }

    /// Whether a slot of another pool waits for a permit: then a worker that just finished a run
    /// gives its permit back instead of taking its own pool's next run.
    pub fn others_waiting(&self, pool: PoolId) -> bool {
        others_waiting(&self.state(), pool)
    }

    /// Permits not held by any worker.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

fn others_waiting(state: &State, pool: PoolId) -> bool {
    state.waiting.iter().any(|&(p, n)| p != pool && n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        assert!(budget.others_waiting(0));
        assert!(!budget.others_waiting(1));
        drop(ticket);
        drop(held);
        let permit = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter gets the permit")
            .unwrap();
        assert!(!budget.others_waiting(0), "no one waits any more");
        assert_eq!(budget.available(), 0);
        drop(permit);
        assert_eq!(budget.available(), 1);
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
        // The waiter registers before it blocks; wait until it has.
        while !budget.state().waiting.iter().any(|&(_, n)| n > 0) {
            tokio::task::yield_now().await;
        }
        assert!(!ticket.give_back.is_cancelled());
        waiter.abort();
        let _ = waiter.await;
        assert!(budget.state().waiting.iter().all(|&(_, n)| n == 0));
    }

    #[tokio::test]
    async fn a_worker_that_turns_idle_while_another_pool_waits_is_told_at_once() {
        let budget = Budget::new(1);
        let held = budget.acquire(0).await;
        let waiter = {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move { budget.acquire(1).await })
        };
        while !budget.others_waiting(0) {
            tokio::task::yield_now().await;
        }
        let ticket = budget.idle(0);
        assert!(ticket.give_back.is_cancelled());
        drop(held);
        let _permit = waiter.await.unwrap();
    }
}
