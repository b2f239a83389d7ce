//! A build's cancel switch. Whoever cancels (Ctrl-C, `POST /api/builds/N/cancel`, a
//! server stopping) calls [`Cancel::cancel`]; everything waiting on the build (a job's
//! shell, a job waiting for a slot, a git fetch) registered a waker with
//! [`Cancel::on_cancel`] and is woken at once. Nothing polls the flag.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

type Waker = Box<dyn Fn() + Send>;

#[derive(Default)]
struct Inner {
    set: AtomicBool,
    next: AtomicU64,
    wakers: Mutex<Vec<(u64, Waker)>>,
}

/// A cancel switch shared by everything that runs for one build.
#[derive(Clone, Default)]
pub struct Cancel(Arc<Inner>);

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cancel({})", self.is_canceled())
    }
}

/// Keeps a waker registered; dropping it unregisters the waker.
#[must_use = "the waker is unregistered when this is dropped"]
pub struct Registration {
    cancel: Cancel,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut w = self
            .cancel
            .0
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        w.retain(|(id, _)| *id != self.id);
    }
}

impl Cancel {
    /// A switch not yet set.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Sets the switch and wakes every registered waiter. True the first time.
    pub fn cancel(&self) -> bool {
        if self.0.set.swap(true, Ordering::SeqCst) {
            return false;
        }
        let wakers = self.0.wakers.lock().unwrap_or_else(|p| p.into_inner());
        for (_, wake) in wakers.iter() {
            wake();
        }
        true
    }

    /// True once canceled.
    pub fn is_canceled(&self) -> bool {
        self.0.set.load(Ordering::SeqCst)
    }

    /// Calls `wake` when the switch is set (at once when it is set already), until
    /// the returned registration is dropped. `wake` must not block.
    pub fn on_cancel(&self, wake: impl Fn() + Send + 'static) -> Registration {
        let id = self.0.next.fetch_add(1, Ordering::SeqCst);
        {
            let mut w = self.0.wakers.lock().unwrap_or_else(|p| p.into_inner());
            w.push((id, Box::new(wake)));
            // Set before the push took the lock: `cancel` may have run its wakers
            // already, so this one is called here.
            if self.is_canceled() {
                (w.last().expect("just pushed").1)();
            }
        }
        Registration {
            cancel: self.clone(),
            id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_is_woken_by_a_cancel_and_not_after_it_left() {
        let c = Cancel::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        let kept = c.on_cancel(move || {
            let _ = tx.send("kept");
        });
        drop(c.on_cancel(move || {
            let _ = tx2.send("left");
        }));
        assert!(c.cancel());
        assert!(!c.cancel(), "only the first cancel wakes");
        assert_eq!(rx.recv().unwrap(), "kept");
        assert!(rx.try_recv().is_err());
        drop(kept);
        // Registered after the cancel: woken at once.
        let (tx, rx) = std::sync::mpsc::channel();
        let _late = c.on_cancel(move || {
            let _ = tx.send(());
        });
        assert!(rx.try_recv().is_ok());
    }
}
