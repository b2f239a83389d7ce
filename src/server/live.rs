//! Live build logs: what a running build has printed so far, for the build page's
//! server-sent events. A build's log is kept twice: whole, as the build shows it
//! (written to a file as it grows, so a crash does not lose it), and per job, as each
//! job writes it (a job running beside another is live here while the build's log holds
//! it back).
//!
//! A reader keeps a [`Cursor`] and reads what came after it, woken by a version counter.
//! A slow reader (a browser on a slow link) therefore gets what it missed in fewer,
//! larger pieces, never a gap; and a piece never ends inside a UTF-8 character.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::build::JobTap;
use crate::job::JobResult;

/// One build's log, running or (for builds that ended) rebuilt from the store.
pub struct LiveLog {
    inner: Mutex<Inner>,
    /// Bumped on every change; readers wait on it.
    version: watch::Sender<u64>,
}

struct Inner {
    text: Vec<u8>,
    jobs: Vec<JobText>,
    done: bool,
    file: Option<std::fs::File>,
}

/// One job's log.
#[derive(Clone, Debug, PartialEq)]
pub struct JobText {
    /// `N.i`.
    pub number: String,
    /// What the job wrote so far.
    pub text: Vec<u8>,
    /// Its result once it ended.
    pub result: Option<JobResult>,
}

/// A piece of a live log, as a reader receives it.
#[derive(Clone, Debug, PartialEq)]
pub enum Chunk {
    /// More of the build's output.
    Bytes(String),
    /// More of one job's output.
    Job(String, String),
    /// A job ended.
    JobEnd(String, JobResult),
    /// The build ended (always the last chunk).
    End,
}

/// How far one reader has read a [`LiveLog`].
#[derive(Debug, Default)]
pub struct Cursor {
    text: usize,
    /// Per job, in the log's job order: bytes read and whether its end was read.
    jobs: Vec<(usize, bool)>,
    ended: bool,
}

impl Cursor {
    /// True once the reader has read the build's end.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

impl LiveLog {
    /// An empty log of a running build (written to a file too once [`LiveLog::keep_in`]
    /// gives it one).
    pub fn new() -> Arc<LiveLog> {
        Arc::new(LiveLog {
            inner: Mutex::new(Inner {
                text: Vec::new(),
                jobs: Vec::new(),
                done: false,
                file: None,
            }),
            version: watch::Sender::new(0),
        })
    }

    /// Writes the log to `file` from now on (a build's partial log, made on its own
    /// thread before it prints anything).
    pub fn keep_in(&self, file: std::fs::File) {
        self.inner.lock().expect("live log").file = Some(file);
    }

    /// The log of a build that ended, from what the store kept.
    pub fn ended(text: Vec<u8>, jobs: Vec<JobText>) -> Arc<LiveLog> {
        let log = LiveLog::new();
        {
            let mut inner = log.inner.lock().expect("live log");
            inner.text = text;
            inner.jobs = jobs;
            inner.done = true;
        }
        log
    }

    /// Marks the end.
    pub fn finish(&self) {
        self.inner.lock().expect("live log").done = true;
        self.changed();
    }

    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// A receiver that changes whenever the log does: take it before the first
    /// [`LiveLog::read`], and wait on it whenever a read returns nothing.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Everything written after `cursor`, moving it past what is returned: the build's
    /// output, then each job's, each job's end, and last the build's end.
    pub fn read(&self, cursor: &mut Cursor) -> Vec<Chunk> {
        let inner = self.inner.lock().expect("live log");
        let mut chunks = Vec::new();
        if let Some(text) = take_text(&inner.text, &mut cursor.text, inner.done) {
            chunks.push(Chunk::Bytes(text));
        }
        cursor.jobs.resize(inner.jobs.len(), (0, false));
        for (job, (read, ended)) in inner.jobs.iter().zip(cursor.jobs.iter_mut()) {
            let end = job.result.filter(|_| !*ended);
            if let Some(text) = take_text(&job.text, read, end.is_some() || inner.done) {
                chunks.push(Chunk::Job(job.number.clone(), text));
            }
            if let Some(result) = end {
                *ended = true;
                chunks.push(Chunk::JobEnd(job.number.clone(), result));
            }
        }
        if inner.done && !cursor.ended {
            cursor.ended = true;
            chunks.push(Chunk::End);
        }
        chunks
    }

    fn job_mut<'a>(inner: &'a mut Inner, number: &str) -> &'a mut JobText {
        match inner.jobs.iter().position(|j| j.number == number) {
            Some(i) => &mut inner.jobs[i],
            None => {
                inner.jobs.push(JobText {
                    number: number.to_string(),
                    text: Vec::new(),
                    result: None,
                });
                inner.jobs.last_mut().expect("just pushed")
            }
        }
    }
}

/// `text` after `*read`, up to its last whole UTF-8 character unless `all`; moves
/// `*read` past it. None when there is nothing to give yet.
fn take_text(text: &[u8], read: &mut usize, all: bool) -> Option<String> {
    let rest = &text[(*read).min(text.len())..];
    let n = match std::str::from_utf8(rest) {
        Err(e) if e.error_len().is_none() && !all => e.valid_up_to(),
        _ => rest.len(),
    };
    if n == 0 {
        return None;
    }
    *read += n;
    Some(String::from_utf8_lossy(&rest[..n]).into_owned())
}

impl LiveLog {
    /// The jobs that have started, in order, with their result once they ended.
    pub fn job_states(&self) -> Vec<(String, Option<JobResult>)> {
        let inner = self.inner.lock().expect("live log");
        inner
            .jobs
            .iter()
            .map(|j| (j.number.clone(), j.result))
            .collect()
    }
}

impl JobTap for LiveLog {
    fn write(&self, number: &str, bytes: &[u8]) {
        let mut inner = self.inner.lock().expect("live log");
        LiveLog::job_mut(&mut inner, number)
            .text
            .extend_from_slice(bytes);
        drop(inner);
        self.changed();
    }

    fn end(&self, number: &str, result: JobResult) {
        let mut inner = self.inner.lock().expect("live log");
        LiveLog::job_mut(&mut inner, number).result = Some(result);
        drop(inner);
        self.changed();
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
        drop(inner);
        self.0.changed();
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
    /// How many read each build's live log now, by build row id: counted from the
    /// moment a reader asks (a queued build's too), so that a job handed to a worker
    /// meanwhile knows someone waits for its first command.
    readers: Arc<Mutex<HashMap<i64, usize>>>,
}

/// One reader of a build's live log, counted while it lives.
pub struct Reading {
    readers: Arc<Mutex<HashMap<i64, usize>>>,
    id: i64,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = readers.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                readers.remove(&self.id);
            }
        }
    }
}

impl LiveLogs {
    /// Starts a build's live log.
    pub fn start(&self, id: i64) -> Arc<LiveLog> {
        let log = LiveLog::new();
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

    /// A live log for build `id` unless it has one: the new one, or None.
    pub fn start_unless_there(&self, id: i64) -> Option<Arc<LiveLog>> {
        let mut logs = self.logs.lock().expect("live logs");
        if logs.contains_key(&id) {
            return None;
        }
        let log = LiveLog::new();
        logs.insert(id, log.clone());
        drop(logs);
        self.started.notify_waiters();
        Some(log)
    }

    /// A reader of build `id`'s live log, counted until it is dropped.
    pub fn reading(&self, id: i64) -> Reading {
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        *readers.entry(id).or_insert(0) += 1;
        Reading {
            readers: self.readers.clone(),
            id,
        }
    }

    /// Whether anyone reads build `id`'s live log on this node now.
    pub fn is_read(&self, id: i64) -> bool {
        let readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        readers.contains_key(&id)
    }

    /// Forgets build `id`'s live log if it is still `log` (a node that took the build
    /// over meanwhile keeps its own).
    pub fn remove_if(&self, id: i64, log: &Arc<LiveLog>) {
        let mut logs = self.logs.lock().expect("live logs");
        if logs.get(&id).is_some_and(|l| Arc::ptr_eq(l, log)) {
            logs.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: &str, text: &str) -> Chunk {
        Chunk::Job(n.into(), text.into())
    }

    #[test]
    fn a_reader_gets_each_jobs_log_so_far_then_only_what_follows() {
        let log = LiveLog::new();
        let _ = LiveWriter(log.clone()).write_all(b"build line\n");
        log.write("1.1", b"a 1\n");
        log.write("1.2", b"b 1\n");
        log.write("1.1", b"a 2\n");
        log.end("1.1", JobResult::Passed);
        let mut cursor = Cursor::default();
        assert_eq!(
            log.read(&mut cursor),
            vec![
                Chunk::Bytes("build line\n".into()),
                job("1.1", "a 1\na 2\n"),
                Chunk::JobEnd("1.1".into(), JobResult::Passed),
                job("1.2", "b 1\n"),
            ]
        );
        assert_eq!(log.read(&mut cursor), vec![]);
        log.write("1.2", b"b 2\n");
        log.finish();
        assert_eq!(log.read(&mut cursor), vec![job("1.2", "b 2\n"), Chunk::End]);
        assert!(cursor.ended());
        assert_eq!(log.read(&mut cursor), vec![]);
    }

    #[test]
    fn a_slow_reader_misses_nothing_however_much_was_written() {
        let log = LiveLog::new();
        let mut cursor = Cursor::default();
        let mut seen = String::new();
        for i in 0..10_000 {
            log.write("1.1", format!("line {i}\n").as_bytes());
            if i % 3_333 == 0 {
                for c in log.read(&mut cursor) {
                    if let Chunk::Job(_, t) = c {
                        seen.push_str(&t);
                    }
                }
            }
        }
        log.finish();
        for c in log.read(&mut cursor) {
            if let Chunk::Job(_, t) = c {
                seen.push_str(&t);
            }
        }
        let want: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn a_character_split_between_writes_is_sent_whole() {
        let log = LiveLog::new();
        let word = "빌드 통과\n".as_bytes();
        log.write("1.1", &word[..2]);
        let mut cursor = Cursor::default();
        assert_eq!(log.read(&mut cursor), vec![], "half a character waits");
        log.write("1.1", &word[2..]);
        assert_eq!(log.read(&mut cursor), vec![job("1.1", "빌드 통과\n")]);
    }

    #[test]
    fn a_builds_readers_are_counted_while_they_read() {
        let logs = LiveLogs::default();
        assert!(!logs.is_read(7));
        let a = logs.reading(7);
        let b = logs.reading(7);
        assert!(logs.is_read(7) && !logs.is_read(8), "counted per build");
        drop(a);
        assert!(logs.is_read(7), "one still reads");
        drop(b);
        assert!(!logs.is_read(7), "none left");
    }

    #[test]
    fn a_reader_is_woken_by_a_write() {
        let log = LiveLog::new();
        let mut rx = log.watch();
        assert!(!rx.has_changed().unwrap());
        log.write("1.1", b"x");
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        log.finish();
        assert!(rx.has_changed().unwrap());
    }
}
