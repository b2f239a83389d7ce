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

use std::io::{BufRead, Write};
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
/// `input` until its end; each time a deadline passes, stops the jobs `owner` recorded
/// in `dir`. Returns the exit code.
pub fn keep(dir: &Path, owner: i32, input: impl BufRead + Send + 'static) -> i32 {
    let (tx, rx) = std::sync::mpsc::channel::<Word>();
    std::thread::spawn(move || {
        for line in input.lines() {
            let Ok(line) = line else { break };
            if let Some(w) = Word::parse(&line)
                && tx.send(w).is_err()
            {
                break;
            }
        }
    });
    let mut deadline = Deadline::default();
    loop {
        let heard = match deadline.left(Instant::now()) {
            None => rx.recv().map_err(|_| true),
            Some(left) => rx
                .recv_timeout(left)
                .map_err(|e| matches!(e, std::sync::mpsc::RecvTimeoutError::Disconnected)),
        };
        match heard {
            Ok(word) => deadline = deadline.heard(word, Instant::now()),
            // The worker is gone: its jobs die with it (their keepers' parent).
            Err(true) => return crate::exit::PASSED,
            Err(false) => {
                let stopped = crate::process::end_recorded(dir, owner);
                eprintln!(
                    "runway worker: the job's lease ran out before the worker renewed it (the worker stopped answering?): stopped {stopped} process group(s), so that no other worker runs it at the same time"
                );
                deadline = Deadline::default();
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
