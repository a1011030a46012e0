//! Admission control: how many runs a node holds in memory
//! (`engine.max_running`).
//!
//! Every run's actor holds a [`Slot`] until it is dropped (the run ended
//! or parked). A client's start waits for a free slot (up to
//! `engine.start_wait_ms`, in the caller's task, not in the supervisor's
//! context: see `supervisor::Starter`) and is refused with `overloaded`
//! when none comes; nothing is created then. A run the
//! node starts itself (a child, a wake, a resume, a recovery, a retry)
//! never waits: it takes a free slot or, when there is none, is *forced*
//! over the limit and the node owes the slot back. A debt is paid by the
//! next slots released before any start is admitted again, so runs in
//! memory exceed `max_running` only by what the node itself had to start,
//! and a flood of starts cannot grow past it through children or timers.
//!
//! The accounting, with A slots free, P runs holding a permit, F forced
//! runs and D of them still owed: A + P + (F - D) = max_running at every
//! step (a run that ends hands its permit to an owed run, or an owed run's
//! end cancels one debt).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::EngineError;
use crate::metrics::EngineMetrics;
use crate::store::Store;

/// A node's slots for runs. See the module documentation.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    owed: AtomicUsize,
    /// Starts waiting for a slot now.
    waiting: AtomicUsize,
    max: u32,
    wait: Duration,
    metrics: Arc<EngineMetrics>,
}

/// One run's place under `engine.max_running`, given back when dropped.
pub struct Slot {
    admission: Arc<Admission>,
    permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("forced", &self.permit.is_none())
            .finish()
    }
}

/// What a client's start was admitted with.
#[derive(Debug)]
pub enum Admitted {
    /// A slot for the run it creates.
    Slot(Slot),
    /// No slot needed: its `execution_id` names an execution that exists.
    Repeat,
}

impl Admission {
    /// `max` runs in memory (at least 1); a start waits up to `wait`.
    pub fn new(max: u32, wait: Duration, metrics: Arc<EngineMetrics>) -> Arc<Admission> {
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(max.max(1) as usize)),
            owed: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            max: max.max(1),
            wait,
            metrics,
        })
    }

    /// Slots free now (none while any is owed).
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }

    /// Starts waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Runs over the limit the node had to start and has not paid back.
    pub fn owed(&self) -> usize {
        self.owed.load(Ordering::Relaxed)
    }

    /// A free slot now, if there is one.
    pub fn try_slot(self: &Arc<Self>) -> Option<Slot> {
        self.slots
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| Slot {
                admission: self.clone(),
                permit: Some(permit),
            })
    }

    /// The refusal of a start that found no slot within `wait`.
    fn refusal(&self, wait: Duration) -> EngineError {
        EngineMetrics::inc(&self.metrics.starts_refused_overloaded);
        EngineError::Overloaded(format!(
            "{} runs are in memory on this node (engine.max_running) and none ended or parked \
             within {} ms (engine.start_wait_ms); nothing was started",
            self.max,
            wait.as_millis()
        ))
    }

    /// A slot for a run the node starts itself: a free one, or forced.
    pub fn take(self: &Arc<Self>) -> Slot {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Slot {
                admission: self.clone(),
                permit: Some(permit),
            },
            Err(_) => {
                self.owed.fetch_add(1, Ordering::AcqRel);
                Slot {
                    admission: self.clone(),
                    permit: None,
                }
            }
        }
    }

    /// Admits a client's start: a free slot at once, or the first one
    /// released within `engine.start_wait_ms`. A start whose
    /// `execution_id` exists needs none (a repeat starts nothing), even
    /// when its twin created it while this one waited.
    pub async fn admit(
        self: &Arc<Self>,
        store: &Store,
        execution_id: Option<&str>,
    ) -> Result<Admitted, EngineError> {
        self.admit_within(store, execution_id, self.wait).await
    }

    /// [`Admission::admit`] waiting at most `wait` (zero: a free slot now
    /// or refused).
    pub async fn admit_within(
        self: &Arc<Self>,
        store: &Store,
        execution_id: Option<&str>,
        wait: Duration,
    ) -> Result<Admitted, EngineError> {
        if let Some(slot) = self.try_slot() {
            return Ok(Admitted::Slot(slot));
        }
        let exists = async |id: Option<&str>| -> Result<bool, EngineError> {
            Ok(match id {
                Some(id) => store.execution(id).await?.is_some(),
                None => false,
            })
        };
        if exists(execution_id).await? {
            return Ok(Admitted::Repeat);
        }
        if wait.is_zero() {
            return Err(self.refusal(wait));
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let waited = tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        if let Ok(Ok(permit)) = waited {
            return Ok(Admitted::Slot(Slot {
                admission: self.clone(),
                permit: Some(permit),
            }));
        }
        if exists(execution_id).await? {
            return Ok(Admitted::Repeat);
        }
        Err(self.refusal(wait))
    }

    /// Takes one debt off, if any is owed.
    fn pay_one(&self) -> bool {
        self.owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self.permit.take() {
            // Its permit goes to a forced run while any is owed.
            Some(permit) => {
                if self.admission.pay_one() {
                    permit.forget();
                }
            }
            // A forced run: its end cancels one debt, or, all paid, gives
            // back the permit that paid for it.
            None => {
                if !self.admission.pay_one() {
                    self.admission.slots.add_permits(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: u32) -> Arc<Admission> {
        Admission::new(max, Duration::ZERO, Arc::default())
    }

    #[test]
    fn forced_runs_are_paid_back_before_a_slot_is_free_again() {
        let a = admission(2);
        let s1 = a.take();
        let s2 = a.take();
        assert_eq!(a.free(), 0);
        // Two over the limit: a child and a wake the node had to start.
        let f1 = a.take();
        let f2 = a.take();
        assert_eq!(a.owed(), 2);
        // Two runs end: their permits pay the debts, nothing is free.
        drop(s1);
        drop(s2);
        assert_eq!((a.free(), a.owed()), (0, 0));
        // The forced runs end: their paid permits come back.
        drop(f1);
        assert_eq!(a.free(), 1);
        drop(f2);
        assert_eq!((a.free(), a.owed()), (2, 0));
    }

    #[test]
    fn a_forced_run_that_ends_first_cancels_its_own_debt() {
        let a = admission(1);
        let s = a.take();
        let f = a.take();
        assert_eq!(a.owed(), 1);
        drop(f);
        assert_eq!((a.free(), a.owed()), (0, 0));
        drop(s);
        assert_eq!((a.free(), a.owed()), (1, 0));
    }

    #[test]
    fn the_count_holds_whatever_the_order() {
        // 3 held and 3 forced runs (max 3) ending in various orders: no
        // slot is free while runs in memory are at or over the limit, and
        // in the end all 3 are free and nothing is owed.
        let orders: Vec<Vec<usize>> = vec![
            vec![0, 1, 2, 3, 4, 5],
            vec![5, 4, 3, 2, 1, 0],
            vec![3, 0, 4, 1, 5, 2],
            vec![0, 3, 4, 1, 2, 5],
        ];
        for order in orders {
            let a = admission(3);
            let mut slots: Vec<Option<Slot>> = (0..6).map(|_| Some(a.take())).collect();
            assert_eq!((a.free(), a.owed()), (0, 3));
            for i in order {
                slots[i].take();
                let held = slots.iter().flatten().count();
                // In memory: held runs; admitted again only below the limit.
                assert!(a.free() + held >= 3 || a.owed() == 0, "{held}");
                assert!(a.free() <= 3usize.saturating_sub(held));
            }
            assert_eq!((a.free(), a.owed()), (3, 0));
        }
    }
}
