//! The claims waiting for a job on this node (a worker's long poll, a report that asks
//! for the next job) and which of them a queued task wakes: the oldest whose worker's
//! labels meet the task's needs, one claim per task. Every waiting claim was woken for
//! each task before, and each then claimed at the store (a write) for one to get it.
//!
//! A claim registers ([`Waiting::enter`]) before it tries the store, so a task queued in
//! between wakes it. A claim woken for a task and then gone without trying again (its
//! worker hung up) hands the wake to the next claim that the task's needs match.
//!
//! It also keeps which workers claimed here lately, with their labels: whether a worker
//! that may take a task is connected is then known without reading the store (which
//! is asked only about workers on other nodes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::store::tasks::{self, Labels};

/// The claims waiting, oldest first.
#[derive(Default)]
pub(super) struct Waiting {
    list: Mutex<Vec<Entry>>,
    ids: AtomicU64,
    /// Each worker that claimed here: its labels, and when it last claimed.
    claimed: Mutex<HashMap<String, (Labels, Instant)>>,
}

struct Entry {
    id: u64,
    labels: Labels,
    wake: Arc<Wake>,
}

/// How one waiting claim is woken, and what for.
#[derive(Default)]
struct Wake {
    notify: Notify,
    /// The needs of the task it was woken for; `None` while not woken, or woken with
    /// every claim (nothing to hand on).
    needs: Mutex<Option<Labels>>,
}

/// One claim's place among the waiting. Dropped: gone from the list; woken for a task
/// and not [`Ticket::tried`], the wake goes to another claim.
pub(super) struct Ticket<'a> {
    waiting: &'a Waiting,
    id: u64,
    wake: Arc<Wake>,
    tried: bool,
}

impl Waiting {
    /// A place for a claim by a worker with `labels`, from now on.
    pub(super) fn enter(&self, labels: &Labels) -> Ticket<'_> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Wake::default());
        self.lock().push(Entry {
            id,
            labels: labels.clone(),
            wake: wake.clone(),
        });
        Ticket {
            waiting: self,
            id,
            wake,
            tried: false,
        }
    }

    /// A task needing `needs` was queued: the oldest claim that may take it is woken
    /// (and leaves the list); none waits, none is. Whether one was.
    pub(super) fn queued(&self, needs: &Labels) -> bool {
        let mut list = self.lock();
        let Some(at) = list.iter().position(|e| tasks::matches(&e.labels, needs)) else {
            return false;
        };
        let e = list.remove(at);
        drop(list);
        *e.wake.needs.lock().unwrap_or_else(|p| p.into_inner()) = Some(needs.clone());
        e.wake.notify.notify_one();
        true
    }

    /// Tasks were queued that this node does not know (another node's, after its
    /// connection to them was back, or given back by a worker's claim after a call of
    /// it went unanswered): every waiting claim tries again.
    pub(super) fn queued_unknown(&self) {
        for e in std::mem::take(&mut *self.lock()) {
            e.wake.notify.notify_one();
        }
    }

    /// Worker `name`, with `labels`, claims here now.
    pub(super) fn claims(&self, name: &str, labels: &Labels) {
        let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        match claimed.get_mut(name) {
            Some(seen) if seen.0 == *labels => seen.1 = Instant::now(),
            _ => {
                claimed.insert(name.to_string(), (labels.clone(), Instant::now()));
            }
        }
    }

    /// A worker whose labels meet `needs` claimed here within `within`.
    pub(super) fn claimed_within(&self, needs: &Labels, within: Duration) -> bool {
        self.claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|(labels, at)| tasks::matches(labels, needs) && at.elapsed() < within)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Ticket<'_> {
    /// Until this claim is woken (at once if it was already).
    pub(super) async fn woken(&self) {
        self.wake.notify.notified().await
    }

    /// The claim tried the store after its wake: the wake was used.
    pub(super) fn tried(mut self) {
        self.tried = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.waiting.lock().retain(|e| e.id != self.id);
        if self.tried {
            return;
        }
        let needs = self
            .wake
            .needs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(needs) = needs {
            self.waiting.queued(&needs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Whether `t` was woken, without waiting.
    fn is_woken(t: &Ticket<'_>) -> bool {
        let f = t.woken();
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        f.as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_ready()
    }

    use std::future::Future;

    #[test]
    fn a_queued_task_wakes_the_oldest_claim_that_may_take_it_and_no_other() {
        let w = Waiting::default();
        let linux = labels(&[("os", "linux")]);
        let arm = labels(&[("os", "linux"), ("arch", "arm64")]);
        let (a, b, c) = (w.enter(&linux), w.enter(&arm), w.enter(&arm));
        w.queued(&labels(&[("arch", "arm64")]));
        assert!(!is_woken(&a), "its labels do not meet the needs");
        assert!(is_woken(&b), "the oldest that may take it");
        assert!(!is_woken(&c), "one claim per task");
        w.queued(&labels(&[("os", "linux")]));
        assert!(is_woken(&a));
        assert!(!is_woken(&c));
        // Nobody left who may take it: nobody woken, nothing kept for later claims.
        b.tried();
        w.queued(&labels(&[("os", "mac")]));
        let d = w.enter(&linux);
        assert!(!is_woken(&c) && !is_woken(&d));
    }

    #[test]
    fn a_claim_gone_without_trying_hands_its_wake_on_and_one_that_tried_does_not() {
        let w = Waiting::default();
        let any = Labels::new();
        let (a, b) = (w.enter(&any), w.enter(&any));
        w.queued(&any);
        assert!(is_woken(&a) && !is_woken(&b));
        drop(a);
        assert!(
            is_woken(&b),
            "handed on: its worker hung up before claiming"
        );
        b.tried();
        let c = w.enter(&any);
        assert!(!is_woken(&c), "a wake used is not handed on");
        // A claim that leaves unwoken takes nothing with it.
        let d = w.enter(&any);
        drop(c);
        w.queued(&any);
        assert!(is_woken(&d));
    }

    #[test]
    fn a_worker_that_claimed_lately_with_the_labels_a_task_needs_is_known_connected() {
        let w = Waiting::default();
        let linux = labels(&[("os", "linux")]);
        let lately = Duration::from_secs(60);
        assert!(!w.claimed_within(&linux, lately), "no claim yet");
        w.claims("mac-mini", &labels(&[("os", "mac")]));
        assert!(!w.claimed_within(&linux, lately), "its labels do not meet");
        w.claims("box", &labels(&[("os", "linux"), ("arch", "amd64")]));
        assert!(w.claimed_within(&linux, lately));
        assert!(
            !w.claimed_within(&linux, Duration::ZERO),
            "not lately enough"
        );
        // A worker that came back with other labels is known by those.
        w.claims("box", &labels(&[("os", "windows")]));
        assert!(!w.claimed_within(&linux, lately));
    }

    #[test]
    fn tasks_this_node_does_not_know_wake_every_claim() {
        let w = Waiting::default();
        let (a, b) = (
            w.enter(&labels(&[("os", "linux")])),
            w.enter(&labels(&[("os", "mac")])),
        );
        w.queued_unknown();
        assert!(is_woken(&a) && is_woken(&b));
        drop(a);
        let c = w.enter(&Labels::new());
        assert!(!is_woken(&c), "nothing handed on from a wake of all");
    }
}
