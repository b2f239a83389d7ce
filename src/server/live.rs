//! Live build logs: what a running build has printed so far, and a broadcast of what it
//! prints next, for the build page's server-sent events. Each log is also written to a
//! file as it grows, so a crash does not lose what a build printed.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// One running build's log.
pub struct LiveLog {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Chunk>,
}

struct Inner {
    text: Vec<u8>,
    done: bool,
    file: Option<std::fs::File>,
}

/// A piece of a live log.
#[derive(Clone, Debug)]
pub enum Chunk {
    /// More output.
    Bytes(Arc<Vec<u8>>),
    /// The build ended.
    End,
}

impl LiveLog {
    /// An empty log, also written to `file` when given.
    pub fn new(file: Option<std::fs::File>) -> Arc<LiveLog> {
        let (tx, _) = broadcast::channel(1024);
        Arc::new(LiveLog {
            inner: Mutex::new(Inner {
                text: Vec::new(),
                done: false,
                file,
            }),
            tx,
        })
    }

    /// What was printed so far, whether the build ended, and a receiver for what comes
    /// next (taken under one lock, so nothing is missed or repeated).
    pub fn subscribe(&self) -> (Vec<u8>, bool, broadcast::Receiver<Chunk>) {
        let inner = self.inner.lock().expect("live log");
        (inner.text.clone(), inner.done, self.tx.subscribe())
    }

    /// Marks the end.
    pub fn finish(&self) {
        let mut inner = self.inner.lock().expect("live log");
        inner.done = true;
        let _ = self.tx.send(Chunk::End);
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
