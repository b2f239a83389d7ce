//! The job's dead man's switch: a worker's job must be stopped before its lease lapses,
//! so that it is gone before a serve node can hand attempt 2 to another worker. The
//! worker alone cannot promise that: frozen (SIGSTOP, a stalled VM) it renews nothing
//! and stops nothing, while its job runs on. So a small process of its own, the lease
//! keeper (`runway lease-keeper`, hidden), started with the worker in a session of its
//! own, holds the deadline: each renewal the worker gets tells it "the lease holds for
//! N ms more"; when that time passes without another, it kills the job's process
//! groups (the ones the worker recorded in its process directory, with their nonces,
//! [`crate::process::end_recorded`]). When the worker's end of the pipe closes (the
//! worker exited or died), the keeper ends too.
//!
//! [`Deadline`] is the decision, apart from the clock and the pipe.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// What the worker tells the keeper, one line each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    /// A job runs and its lease holds for this long from now.
    HoldFor(Duration),
    /// No job runs (it ended): nothing to stop.
    Idle,
}

impl Word {
    /// The line for this word.
    fn line(self) -> String {
        match self {
            Word::HoldFor(d) => format!("{}\n", d.as_millis()),
            Word::Idle => "-\n".into(),
        }
    }

    /// A line read back; `None` for one runway did not write.
    pub fn parse(line: &str) -> Option<Word> {
        match line.trim() {
            "-" => Some(Word::Idle),
            n => n
                .parse()
                .ok()
                .map(|ms| Word::HoldFor(Duration::from_millis(ms))),
        }
    }
}

/// When the running job must be stopped, as the keeper's words set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// The deadline after `word`, heard at `now`.
    pub fn heard(self, word: Word, now: Instant) -> Deadline {
        match word {
            Word::HoldFor(d) => Deadline(Some(now + d)),
            Word::Idle => Deadline(None),
        }
    }

    /// How long until the job must be stopped (`None`: no job, wait for a word;
    /// zero: now).
    pub fn left(self, now: Instant) -> Option<Duration> {
        self.0.map(|at| at.saturating_duration_since(now))
    }
}

/// The worker's side: the keeper process and the pipe to it.
pub struct Keeper {
    child: Child,
    words: ChildStdin,
}

impl Keeper {
    /// Starts the keeper for the jobs recorded in `process_dir` by this process.
    pub fn start(process_dir: &Path) -> std::io::Result<Keeper> {
        let exe = std::env::current_exe()?;
        let mut c = Command::new(exe);
        c.arg("lease-keeper")
            .arg("--dir")
            .arg(process_dir)
            .arg("--owner")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        // A session of its own: a signal to the worker's group (a terminal's ^Z, a
        // supervisor's SIGSTOP to the group) does not freeze the keeper with it.
        use std::os::unix::process::CommandExt;
        c.process_group(0);
        let mut child = c.spawn()?;
        let words = child.stdin.take().expect("piped");
        Ok(Keeper { child, words })
    }

    /// Tells the keeper `word`. A keeper that is gone is said once, by the caller's
    /// next job failing to be guarded: the worker logs it.
    pub fn tell(&mut self, word: Word) -> std::io::Result<()> {
        self.words.write_all(word.line().as_bytes())?;
        self.words.flush()
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        // The pipe closes with `words`; the keeper exits on its end of file.
        let _ = self.words.write_all(Word::Idle.line().as_bytes());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The keeper's body (`runway lease-keeper --dir DIR --owner PID`): reads words from
/// `input` (the worker's pipe) until its end; each time a deadline passes, stops the
/// jobs `owner` recorded in `dir`. Returns the exit code. One thread waits for both,
/// in `poll(2)`: a word wakes it once (a reader thread handing words to a waiting one
/// woke two, twice a job, ~15 µs of CPU each here).
pub fn keep(dir: &Path, owner: i32, mut input: impl Read + AsFd) -> i32 {
    let mut deadline = Deadline::default();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        if !crate::process::readable(input.as_fd(), deadline.left(Instant::now())) {
            // Woken by the clock: stop the job once its deadline has passed.
            if deadline.left(Instant::now()) != Some(Duration::ZERO) {
                continue;
            }
            let stopped = crate::process::end_recorded(dir, owner);
            eprintln!(
                "runway worker: the job's lease ran out before the worker renewed it (the worker stopped answering?): stopped {stopped} process group(s), so that no other worker runs it at the same time"
            );
            deadline = Deadline::default();
            continue;
        }
        let n = match input.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        // The worker is gone: its jobs die with it (their keepers' parent).
        if n == 0 {
            return crate::exit::PASSED;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(at) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            if let Some(w) = Word::parse(&String::from_utf8_lossy(&line)) {
                deadline = deadline.heard(w, Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_read_back_as_written() {
        for w in [Word::HoldFor(Duration::from_millis(1500)), Word::Idle] {
            assert_eq!(Word::parse(&w.line()), Some(w));
        }
        assert_eq!(Word::parse("soon"), None);
    }

    /// The keeper reads words as they come, however they are split, and ends when the
    /// worker's end of the pipe closes, with a deadline pending or not.
    #[test]
    fn the_keeper_reads_words_and_ends_with_its_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let (r, mut w) = std::io::pipe().unwrap();
        let d = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(keep(&d, std::process::id() as i32, r));
        });
        w.write_all(b"60000\n-").unwrap();
        w.write_all(b"\n600").unwrap();
        w.write_all(b"00\n").unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the keeper waits while the pipe is open"
        );
        drop(w);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Ok(crate::exit::PASSED),
            "the pipe closed: the keeper ends"
        );
    }

    #[test]
    fn a_deadline_runs_from_the_last_word() {
        let t0 = Instant::now();
        let d = Deadline::default();
        assert_eq!(d.left(t0), None, "no job: nothing to stop");
        let d = d.heard(Word::HoldFor(Duration::from_millis(1000)), t0);
        assert_eq!(d.left(t0), Some(Duration::from_millis(1000)));
        let later = t0 + Duration::from_millis(600);
        let d = d.heard(Word::HoldFor(Duration::from_millis(1000)), later);
        assert_eq!(d.left(later), Some(Duration::from_millis(1000)), "renewed");
        assert_eq!(
            d.left(later + Duration::from_secs(5)),
            Some(Duration::ZERO),
            "passed: stop now"
        );
        assert_eq!(d.heard(Word::Idle, later).left(later), None);
    }
}
