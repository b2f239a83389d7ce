//! The builds that changed (queued, started, ended, canceled, restarted), numbered in
//! the order they were told, for the pages that list builds. A page rendered as of
//! change N opens its stream after N and is told each change since (or, when those
//! have left the window kept, to reload), then each as it comes: nothing that happens
//! between the page's reading and its stream's opening is missed. The numbers carry
//! this server's start, so a page from before a restart reloads.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// A place in this server's changes: after its `seq`th change since it started at
/// `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: u64,
    pub seq: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

impl Cursor {
    /// `EPOCH-SEQ` as [`Cursor`]'s `Display` writes it; anything else is `None`.
    pub fn parse(s: &str) -> Option<Cursor> {
        let (epoch, seq) = s.trim().split_once('-')?;
        Some(Cursor {
            epoch: epoch.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// One build's change, at its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub at: Cursor,
    pub build: i64,
}

/// What came after a reader's place.
#[derive(Debug, PartialEq, Eq)]
pub enum Since {
    /// Each change since, oldest first (none when the reader is up to date).
    Each(Vec<Change>),
    /// Changes the window no longer holds, or a place this server never gave (another
    /// start's): the reader reads everything again.
    Lost,
}

/// The changes told so far: the last place, a window of the latest, and their
/// subscribers.
pub struct Changes {
    epoch: u64,
    keep: usize,
    told: Mutex<(u64, VecDeque<Change>)>,
    tx: broadcast::Sender<Change>,
}

impl Changes {
    /// Numbered from `epoch` (this server's start); the latest `keep` kept for readers
    /// catching up, and as many buffered for each subscriber.
    pub fn new(epoch: u64, keep: usize) -> Changes {
        Changes {
            epoch,
            keep,
            told: Mutex::new((0, VecDeque::with_capacity(keep))),
            tx: broadcast::channel(keep.max(1)).0,
        }
    }

    /// The place after the last change told.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            seq: self.told.lock().expect("changes").0,
        }
    }

    /// Tells every subscriber that `build` changed.
    pub fn send(&self, build: i64) {
        let mut told = self.told.lock().expect("changes");
        told.0 += 1;
        let c = Change {
            at: Cursor {
                epoch: self.epoch,
                seq: told.0,
            },
            build,
        };
        if told.1.len() == self.keep {
            told.1.pop_front();
        }
        told.1.push_back(c);
        // Sent under the lock: a subscriber taken in `since` gets exactly the changes
        // after those it was given.
        let _ = self.tx.send(c);
    }

    /// Whether `at` is a place this server gave (since its start).
    pub fn is_ours(&self, at: Cursor) -> bool {
        at.epoch == self.epoch
    }

    /// Each change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }

    /// What came after `after`, and each change from then on.
    pub fn since(&self, after: Cursor) -> (Since, broadcast::Receiver<Change>) {
        let told = self.told.lock().expect("changes");
        let rx = self.tx.subscribe();
        (since(self.epoch, told.0, &told.1, after), rx)
    }
}

/// The changes in `window` (the latest, ending at `last`) after `after`.
fn since(epoch: u64, last: u64, window: &VecDeque<Change>, after: Cursor) -> Since {
    if after.epoch != epoch || after.seq > last {
        return Since::Lost;
    }
    let oldest = window.front().map_or(last + 1, |c| c.at.seq);
    if after.seq + 1 < oldest {
        return Since::Lost;
    }
    Since::Each(
        window
            .iter()
            .filter(|c| c.at.seq > after.seq)
            .copied()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, seq: u64) -> Cursor {
        Cursor { epoch, seq }
    }

    fn builds(s: Since) -> Vec<i64> {
        match s {
            Since::Each(v) => v.into_iter().map(|c| c.build).collect(),
            Since::Lost => panic!("lost"),
        }
    }

    #[test]
    fn a_reader_is_told_each_change_after_its_place() {
        let c = Changes::new(7, 3);
        let start = c.cursor();
        assert_eq!(start, at(7, 0));
        assert_eq!(builds(c.since(start).0), Vec::<i64>::new());
        c.send(10);
        c.send(11);
        assert_eq!(builds(c.since(start).0), vec![10, 11]);
        assert_eq!(builds(c.since(at(7, 1)).0), vec![11]);
        assert_eq!(builds(c.since(c.cursor()).0), Vec::<i64>::new());
    }

    #[test]
    fn a_place_outside_the_window_or_from_another_start_is_lost() {
        let c = Changes::new(7, 2);
        for b in 1..=4 {
            c.send(b);
        }
        // Seqs 3 and 4 kept: after 2 is whole, after 1 misses seq 2.
        assert_eq!(builds(c.since(at(7, 2)).0), vec![3, 4]);
        assert_eq!(c.since(at(7, 1)).0, Since::Lost);
        assert_eq!(c.since(at(6, 4)).0, Since::Lost);
        assert_eq!(c.since(at(7, 5)).0, Since::Lost);
    }

    #[test]
    fn the_subscriber_taken_with_a_catch_up_gets_what_follows_it() {
        let c = Changes::new(1, 4);
        c.send(1);
        let (caught, mut rx) = c.since(at(1, 0));
        c.send(2);
        assert_eq!(builds(caught), vec![1]);
        assert_eq!(rx.try_recv().unwrap().build, 2);
        assert_eq!(rx.try_recv().ok(), None);
    }

    #[test]
    fn a_cursor_reads_back_as_written() {
        let c = at(1733, 42);
        assert_eq!(c.to_string(), "1733-42");
        assert_eq!(Cursor::parse("1733-42"), Some(c));
        assert_eq!(Cursor::parse("1733"), None);
        assert_eq!(Cursor::parse("x-1"), None);
        assert_eq!(Cursor::parse("-1-2"), None);
    }
}
