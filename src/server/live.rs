//! Live build logs: what a running build has printed so far, and a broadcast of what it
//! prints next, for the build page's server-sent events. A build's log is kept twice:
//! whole, as the build shows it (written to a file as it grows, so a crash does not lose
//! it), and per job, as each job writes it (a job running beside another is live here
//! while the build's log holds it back).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::build::JobTap;
use crate::job::JobResult;

/// One running build's log.
pub struct LiveLog {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Chunk>,
}

struct Inner {
    text: Vec<u8>,
    jobs: Vec<JobText>,
    done: bool,
    file: Option<std::fs::File>,
}

/// One job's log so far.
#[derive(Clone, Debug, PartialEq)]
pub struct JobText {
    /// `N.i`.
    pub number: String,
    /// What the job wrote so far.
    pub text: Vec<u8>,
    /// Its result once it ended.
    pub result: Option<JobResult>,
}

/// A piece of a live log.
#[derive(Clone, Debug)]
pub enum Chunk {
    /// More of the build's output.
    Bytes(Arc<Vec<u8>>),
    /// More of one job's output.
    Job(Arc<str>, Arc<Vec<u8>>),
    /// A job ended.
    JobEnd(Arc<str>, JobResult),
    /// The build ended.
    End,
}

/// A live log at one moment.
pub struct Snapshot {
    /// The build's output so far.
    pub text: Vec<u8>,
    /// Each job's output so far, in the order the jobs started.
    pub jobs: Vec<JobText>,
    /// Whether the build ended.
    pub done: bool,
}

impl LiveLog {
    /// An empty log, also written to `file` when given.
    pub fn new(file: Option<std::fs::File>) -> Arc<LiveLog> {
        let (tx, _) = broadcast::channel(1024);
        Arc::new(LiveLog {
            inner: Mutex::new(Inner {
                text: Vec::new(),
                jobs: Vec::new(),
                done: false,
                file,
            }),
            tx,
        })
    }

    /// What was printed so far and a receiver for what comes next (taken under one
    /// lock, so nothing is missed or repeated).
    pub fn subscribe(&self) -> (Snapshot, broadcast::Receiver<Chunk>) {
        let inner = self.inner.lock().expect("live log");
        let snapshot = Snapshot {
            text: inner.text.clone(),
            jobs: inner.jobs.clone(),
            done: inner.done,
        };
        (snapshot, self.tx.subscribe())
    }

    /// Marks the end.
    pub fn finish(&self) {
        let mut inner = self.inner.lock().expect("live log");
        inner.done = true;
        let _ = self.tx.send(Chunk::End);
    }
}

impl JobTap for LiveLog {
    fn write(&self, number: &str, bytes: &[u8]) {
        let mut inner = self.inner.lock().expect("live log");
        match inner.jobs.iter_mut().find(|j| j.number == number) {
            Some(job) => job.text.extend_from_slice(bytes),
            None => inner.jobs.push(JobText {
                number: number.to_string(),
                text: bytes.to_vec(),
                result: None,
            }),
        }
        let _ = self
            .tx
            .send(Chunk::Job(number.into(), Arc::new(bytes.to_vec())));
    }

    fn end(&self, number: &str, result: JobResult) {
        let mut inner = self.inner.lock().expect("live log");
        match inner.jobs.iter_mut().find(|j| j.number == number) {
            Some(job) => job.result = Some(result),
            None => inner.jobs.push(JobText {
                number: number.to_string(),
                text: Vec::new(),
                result: Some(result),
            }),
        }
        let _ = self.tx.send(Chunk::JobEnd(number.into(), result));
    }
}

/// A `Write` into a [`LiveLog`], for the build's output.
pub struct LiveWriter(pub Arc<LiveLog>);

impl Write for LiveWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut inner = self.0.inner.lock().expect("live log");
        inner.text.extend_from_slice(buf);
        if let Some(f) = &mut inner.file {
            // Unbuffered: what was printed before a crash is on disk.
            let _ = f.write_all(buf);
        }
        let _ = self.0.tx.send(Chunk::Bytes(Arc::new(buf.to_vec())));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The live logs of running builds, by build row id.
#[derive(Default)]
pub struct LiveLogs {
    logs: Mutex<HashMap<i64, Arc<LiveLog>>>,
    /// Woken whenever a build's live log starts (pages waiting for a queued build).
    pub started: tokio::sync::Notify,
}

impl LiveLogs {
    /// Starts a build's live log, also written to `file` when given.
    pub fn start(&self, id: i64, file: Option<std::fs::File>) -> Arc<LiveLog> {
        let log = LiveLog::new(file);
        self.logs.lock().expect("live logs").insert(id, log.clone());
        self.started.notify_waiters();
        log
    }

    /// A running build's live log.
    pub fn get(&self, id: i64) -> Option<Arc<LiveLog>> {
        self.logs.lock().expect("live logs").get(&id).cloned()
    }

    /// Forgets a finished build's live log (its log is in the store).
    pub fn remove(&self, id: i64) {
        self.logs.lock().expect("live logs").remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_sees_each_jobs_log_so_far_then_what_follows() {
        let log = LiveLog::new(None);
        let _ = LiveWriter(log.clone()).write_all(b"build line\n");
        log.write("1.1", b"a 1\n");
        log.write("1.2", b"b 1\n");
        log.write("1.1", b"a 2\n");
        log.end("1.1", JobResult::Passed);
        let (snap, mut rx) = log.subscribe();
        assert_eq!(snap.text, b"build line\n");
        assert_eq!(
            snap.jobs,
            vec![
                JobText {
                    number: "1.1".into(),
                    text: b"a 1\na 2\n".to_vec(),
                    result: Some(JobResult::Passed),
                },
                JobText {
                    number: "1.2".into(),
                    text: b"b 1\n".to_vec(),
                    result: None,
                },
            ]
        );
        assert!(!snap.done);
        log.write("1.2", b"b 2\n");
        log.finish();
        assert!(matches!(rx.try_recv(), Ok(Chunk::Job(j, b)) if &*j == "1.2" && *b == b"b 2\n"));
        assert!(matches!(rx.try_recv(), Ok(Chunk::End)));
    }
}
