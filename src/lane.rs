//! A lane: a thread kept for the process's life that runs the work handed to it, one
//! piece after another. For work that would otherwise start and end a thread each
//! time, once or twice a job (a job's disk made ahead and released, a worker's log
//! sender): a thread started and ended costs ~60 µs of CPU here, and its end shoots
//! down the TLBs of the process's other threads.

use std::sync::mpsc::{SendError, Sender};

/// Work for a lane.
type Work = Box<dyn FnOnce() + Send>;

/// A thread that runs the work handed to it in order.
pub struct Lane {
    work: Sender<Work>,
}

impl Lane {
    /// Starts the lane's thread, named `name` (15 bytes at most show).
    pub fn start(name: &str) -> Lane {
        let (work, todo) = std::sync::mpsc::channel::<Work>();
        // A thread that cannot be started drops `todo`: each run then starts its own.
        let _ = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                for f in todo {
                    // A panic is the work's (said by the panic hook): the lane goes on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                }
            });
        Lane { work }
    }

    /// Runs `f` on the lane's thread once what was handed before has run; on a thread
    /// of its own when the lane's is gone (it could not be started).
    pub fn run(&self, f: impl FnOnce() + Send + 'static) {
        if let Err(SendError(f)) = self.work.send(Box::new(f)) {
            std::thread::spawn(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_runs_its_work_in_order_on_one_thread_and_outlives_a_panic() {
        let lane = Lane::start("test-lane");
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..3 {
            let tx = tx.clone();
            lane.run(move || {
                let _ = tx.send((i, std::thread::current().id()));
            });
        }
        lane.run(|| panic!("the work's own panic"));
        let tx2 = tx.clone();
        lane.run(move || {
            let _ = tx2.send((3, std::thread::current().id()));
        });
        let got: Vec<_> = (0..4).map(|_| rx.recv().unwrap()).collect();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(got.iter().all(|g| g.1 == got[0].1), "one thread");
        assert_ne!(got[0].1, std::thread::current().id());
    }
}
