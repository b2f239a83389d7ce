//! The output of jobs running side by side, kept whole per job and still live: one
//! job at a time writes through to the build's output; the others are held. When the
//! live job ends, the jobs that ended meanwhile are shown whole (in the order they
//! ended), then a running job catches up on what it held and goes on live. Nothing is
//! interleaved, so folds and `$ command` lines stay readable, and a server's live page
//! keeps growing while a matrix runs.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The build's live output, shared by the jobs of a stage.
pub type SharedOut = Arc<Mutex<Box<dyn Write + Send>>>;

/// The relay for one group of jobs running at once.
pub struct Relay {
    out: SharedOut,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The job writing through, if any.
    live: Option<usize>,
    /// Output not shown yet, by job.
    held: BTreeMap<usize, Vec<u8>>,
    /// Jobs that ended while held, in the order they ended.
    ended: Vec<usize>,
}

impl Relay {
    /// A relay writing to `out`.
    pub fn new(out: SharedOut) -> Arc<Relay> {
        Arc::new(Relay {
            out,
            state: Mutex::new(State::default()),
        })
    }

    /// The writer job `job` (any id unique in this group) writes its output to.
    pub fn writer(self: &Arc<Self>, job: usize) -> RelayWriter {
        RelayWriter {
            relay: self.clone(),
            job,
        }
    }

    fn write(&self, job: usize, buf: &[u8]) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.live.is_none() {
            st.live = Some(job);
        }
        if st.live == Some(job) {
            let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            out.write_all(buf)?;
            out.flush()
        } else {
            st.held.entry(job).or_default().extend_from_slice(buf);
            Ok(())
        }
    }

    /// Job `job` has ended: its output is shown whole now or when the live job ends.
    pub fn end(&self, job: usize) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.live != Some(job) {
            if st.held.contains_key(&job) {
                st.ended.push(job);
            }
            return;
        }
        st.live = None;
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        for done in std::mem::take(&mut st.ended) {
            if let Some(text) = st.held.remove(&done) {
                let _ = out.write_all(&text);
            }
        }
        // The lowest running job with held output catches up and goes live.
        if let Some((&next, _)) = st.held.iter().next() {
            let text = st.held.remove(&next).unwrap_or_default();
            let _ = out.write_all(&text);
            st.live = Some(next);
        }
        let _ = out.flush();
    }
}

/// One job's side of a [`Relay`].
pub struct RelayWriter {
    relay: Arc<Relay>,
    job: usize,
}

impl Write for RelayWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.relay.write(self.job, buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn relay() -> (Arc<Relay>, Sink) {
        let sink = Sink::default();
        let out: SharedOut = Arc::new(Mutex::new(Box::new(sink.clone())));
        (Relay::new(out), sink)
    }

    fn shown(s: &Sink) -> String {
        String::from_utf8(s.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn one_job_is_live_the_others_are_held_and_shown_whole() {
        let (r, sink) = relay();
        let (mut a, mut b, mut c) = (r.writer(1), r.writer(2), r.writer(3));
        a.write_all(b"a1\n").unwrap();
        b.write_all(b"b1\n").unwrap();
        c.write_all(b"c1\n").unwrap();
        a.write_all(b"a2\n").unwrap();
        assert_eq!(shown(&sink), "a1\na2\n", "the first job to write is live");
        c.write_all(b"c2\n").unwrap();
        r.end(3); // c ends while held: shown when a ends
        assert_eq!(shown(&sink), "a1\na2\n");
        r.end(1);
        assert_eq!(
            shown(&sink),
            "a1\na2\nc1\nc2\nb1\n",
            "ended jobs whole, then a running one catches up"
        );
        b.write_all(b"b2\n").unwrap();
        assert_eq!(shown(&sink), "a1\na2\nc1\nc2\nb1\nb2\n", "and goes on live");
        r.end(2);
        assert_eq!(shown(&sink), "a1\na2\nc1\nc2\nb1\nb2\n");
    }

    #[test]
    fn a_job_that_wrote_nothing_ends_quietly_and_the_next_writer_goes_live() {
        let (r, sink) = relay();
        let (mut a, mut c) = (r.writer(1), r.writer(3));
        r.end(2);
        a.write_all(b"a\n").unwrap();
        r.end(1);
        c.write_all(b"late\n").unwrap();
        assert_eq!(shown(&sink), "a\nlate\n");
    }
}
