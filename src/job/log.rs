//! The one log pipeline of a job: bytes from the shell and runway's own lines pass
//! once through secret masking, get fold and timing markers, and fan out to every sink
//! (the terminal, the log file, a buffer for parallel jobs).
//!
//! Sinks that are a terminal get readable sections with durations and colours; plain
//! sinks (a pipe, a file a person reads) get the same sections and Travis's lines with
//! no colour, no escape and no marker; raw sinks (the stored log, the live page, a
//! worker's chunks) get Travis-compatible `travis_fold:start:NAME` /
//! `travis_time:end:ID:…` markers, so logs read the same way Travis's did.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::mask::Masker;

/// Where log bytes go.
pub struct Sink {
    writer: Box<dyn Write + Send>,
    kind: Kind,
    /// A plain sink's escape sequence cut by a write, carried to the next.
    strip: Strip,
}

/// How a sink renders the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Travis's markers (the stored log, the live page, a worker's chunks).
    Raw,
    /// Sections and colours for a person's terminal.
    Terminal,
    /// Sections and Travis's lines, no colour, escape or marker (a pipe, a file).
    Plain,
}

/// Which sinks a piece of the log is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum To {
    /// Every sink.
    All,
    /// Raw sinks only (markers).
    Raw,
    /// Raw and plain sinks (Travis's lines a terminal says its own way).
    Files,
    /// Terminal and plain sinks (section headers and footers).
    People,
    /// Terminal sinks only (colours, a line rewritten in place).
    Terminal,
    /// Plain sinks only (what a terminal shows in place, said on a line of its own).
    Plain,
}

impl To {
    fn reaches(self, kind: Kind) -> bool {
        match self {
            To::All => true,
            To::Raw => kind == Kind::Raw,
            To::Files => kind != Kind::Terminal,
            To::People => kind != Kind::Raw,
            To::Terminal => kind == Kind::Terminal,
            To::Plain => kind == Kind::Plain,
        }
    }
}

impl Sink {
    /// A sink that gets Travis fold markers (the stored log, a buffer, a tap).
    pub fn raw(writer: Box<dyn Write + Send>) -> Sink {
        Sink {
            writer,
            kind: Kind::Raw,
            strip: Strip::default(),
        }
    }

    /// A sink that is a person's terminal: readable sections and colours.
    pub fn terminal(writer: Box<dyn Write + Send>) -> Sink {
        Sink {
            writer,
            kind: Kind::Terminal,
            strip: Strip::default(),
        }
    }

    /// A sink a person reads later or through a pipe: sections and Travis's lines as
    /// plain text (no colour, escape, carriage return or marker).
    pub fn plain(writer: Box<dyn Write + Send>) -> Sink {
        Sink {
            writer,
            kind: Kind::Plain,
            strip: Strip::default(),
        }
    }
}

/// Removes terminal escapes (`ESC [ … letter`, `ESC ] … BEL`, other `ESC x`) and
/// carriage returns from a byte stream, across writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Strip {
    state: StripState,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum StripState {
    #[default]
    Text,
    /// After ESC.
    Escape,
    /// In `ESC [ …`, until a final byte.
    Csi,
    /// In `ESC ] …`, until BEL or `ESC \`.
    Osc,
    /// In an OSC, after ESC.
    OscEscape,
}

impl Strip {
    /// `bytes` without escapes and carriage returns.
    pub fn text(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            self.state = match (self.state, b) {
                (StripState::Text, 0x1b) => StripState::Escape,
                (StripState::Text, b'\r') => StripState::Text,
                (StripState::Text, b) => {
                    out.push(b);
                    StripState::Text
                }
                (StripState::Escape, b'[') => StripState::Csi,
                (StripState::Escape, b']') => StripState::Osc,
                (StripState::Escape, _) => StripState::Text,
                (StripState::Csi, 0x40..=0x7e) => StripState::Text,
                (StripState::Csi, _) => StripState::Csi,
                (StripState::Osc, 0x07) => StripState::Text,
                (StripState::Osc, 0x1b) => StripState::OscEscape,
                (StripState::Osc, _) => StripState::Osc,
                (StripState::OscEscape, _) => StripState::Text,
            };
        }
        out
    }
}

/// A writer that passes on what is written to it as plain text ([`Strip`]).
pub struct PlainWriter<W: Write> {
    inner: W,
    strip: Strip,
}

impl<W: Write> PlainWriter<W> {
    /// Plain text into `inner`.
    pub fn new(inner: W) -> PlainWriter<W> {
        PlainWriter {
            inner,
            strip: Strip::default(),
        }
    }
}

impl<W: Write> Write for PlainWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = self.strip.text(buf);
        self.inner.write_all(&text)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What happens inside a job, as data, beside its log's text (`runway run --json`
/// renders it; [`crate::events`] says how).
#[derive(Clone, Copy, Debug)]
pub enum JobEvent<'a> {
    /// A command starts: its `$ cmd` line is in the log (masked as the log is).
    CommandStarted {
        /// The command.
        command: &'a str,
    },
    /// A command ended (masked as the log is).
    CommandEnded {
        /// The command.
        command: &'a str,
        /// Its exit status.
        status: i32,
        /// How long it ran.
        duration: Duration,
    },
    /// A section of the job's setup ended (`git.checkout`, `cache.1`, `dpl.s3`…).
    SectionEnded {
        /// Its name.
        name: &'a str,
        /// How long it took.
        duration: Duration,
    },
    /// What became of one deploy.
    Deploy {
        /// Its provider.
        provider: &'a str,
        /// Its outcome.
        outcome: DeployOutcome<'a>,
    },
}

/// What became of one deploy of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeployOutcome<'a> {
    /// Deployed for real.
    Deployed,
    /// Said what it would do (a rehearsal without `--deploy`).
    DryRun,
    /// Not run, and why (its conditions, a pull request…).
    Skipped(&'a str),
    /// Failed, and why.
    Failed(&'a str),
}

/// Who hears a job's [`JobEvent`]s.
pub trait Observer: Send {
    /// `event` happened.
    fn event(&self, event: &JobEvent<'_>);
}

/// A job's log: masking, markers, sinks.
pub struct Log {
    observer: Option<Box<dyn Observer>>,
    masker: Masker,
    sinks: Vec<Sink>,
    timers: u64,
    /// Whether the last byte written ended a line.
    at_line_start: bool,
    /// Bytes written so far (after masking).
    pub bytes: u64,
    /// The command whose `$ cmd` line was written last, and [`Log::bytes`] right
    /// after it: a command that printed nothing is finished on that same line.
    command: Option<(String, u64)>,
}

/// A started fold, closed by [`Log::fold_end`].
pub struct Fold {
    name: String,
    timer: String,
    start: SystemTime,
    /// Shown on terminals as a header and a closing line (a command's fold is not:
    /// its `$ cmd` line and its result say it).
    shown: bool,
}

impl Log {
    /// A log that masks `secrets` and writes to `sinks`.
    pub fn new(masker: Masker, sinks: Vec<Sink>) -> Log {
        Log {
            observer: None,
            masker,
            sinks,
            timers: 0,
            at_line_start: true,
            bytes: 0,
            command: None,
        }
    }

    /// Tells `observer` what happens in the job, as data.
    pub fn observe(&mut self, observer: Box<dyn Observer>) {
        self.observer = Some(observer);
    }

    /// Says `event` to the observer, if any.
    pub fn event(&self, event: JobEvent<'_>) {
        if let Some(o) = &self.observer {
            o.event(&event);
        }
    }

    /// The masker, to mask texts leaving the job some other way (mail, summaries).
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    fn write_all(&mut self, bytes: &[u8], to: To) {
        if bytes.is_empty() {
            return;
        }
        if to == To::All {
            self.at_line_start = bytes.ends_with(b"\n");
            self.bytes += bytes.len() as u64;
        }
        for s in &mut self.sinks {
            if !to.reaches(s.kind) {
                continue;
            }
            if s.kind == Kind::Plain {
                let text = s.strip.text(bytes);
                let _ = s.writer.write_all(&text);
            } else {
                let _ = s.writer.write_all(bytes);
            }
            let _ = s.writer.flush();
        }
    }

    /// Bytes the job printed.
    pub fn output(&mut self, bytes: &[u8]) {
        let safe = self.masker.push(bytes);
        self.write_all(&safe, To::All);
    }

    /// Ends a command's output: ends an open line. Bytes held back as the start of a
    /// secret stay held: masking runs over the job's whole output stream, so a secret
    /// printed in two halves by two commands is masked too ([`Log::finish`] lets them go).
    pub fn end_output(&mut self) {
        if !self.at_line_start {
            self.write_all(b"\n", To::All);
        }
    }

    /// Ends the job's output: whatever was held back as a possible secret is shown.
    pub fn finish(&mut self) {
        let rest = self.masker.flush();
        let (mut all, tail) = self.masker.mask(&rest);
        all.extend_from_slice(&tail);
        self.write_all(&all, To::All);
        if !self.at_line_start {
            self.write_all(b"\n", To::All);
        }
    }

    /// One line of runway's own (masked too).
    pub fn line(&mut self, text: &str) {
        let masked = self.masker.mask_all(text);
        self.write_all(format!("{masked}\n").as_bytes(), To::All);
    }

    /// A line shown differently on terminals (`styled`) and in files (`plain`).
    pub fn styled_line(&mut self, plain: &str, styled: &str) {
        let plain = self.masker.mask_all(plain);
        let styled = self.masker.mask_all(styled);
        self.bytes += plain.len() as u64 + 1;
        self.at_line_start = true;
        self.write_all(format!("{styled}\n").as_bytes(), To::Terminal);
        self.write_all(format!("{plain}\n").as_bytes(), To::Files);
    }

    /// Starts a fold: `travis_fold:start:NAME` and a timer in files; a header on terminals.
    pub fn fold_start(&mut self, name: &str, title: &str) -> Fold {
        self.write_all(format!("travis_fold:start:{name}\r\n").as_bytes(), To::Raw);
        self.write_all(
            format!("\x1b[1;34m── {title}\x1b[0m\n").as_bytes(),
            To::People,
        );
        let mut fold = self.timer_start();
        fold.name = name.to_string();
        fold.shown = true;
        fold
    }

    /// Starts a command's fold: markers in files, nothing on terminals (the `$ cmd`
    /// line is the header there).
    pub fn command_fold_start(&mut self, name: &str) -> Fold {
        self.write_all(format!("travis_fold:start:{name}\r\n").as_bytes(), To::Raw);
        let mut fold = self.timer_start();
        fold.name = name.to_string();
        fold
    }

    /// The `$ cmd` line of a command about to run.
    pub fn command(&mut self, cmd: &str) {
        self.styled_line(&format!("$ {cmd}"), &format!("\x1b[1;33m$ {cmd}\x1b[0m"));
        self.command = Some((cmd.to_string(), self.bytes));
        if self.observer.is_some() {
            let command = self.masker.mask_all(cmd);
            self.event(JobEvent::CommandStarted { command: &command });
        }
    }

    /// A command ended: on terminals, one line for a command that printed nothing and
    /// passed (`$ true  0.01s`, the `$ cmd` line rewritten in place), else its result
    /// under its output; plain sinks get how long a passing command took on a line of
    /// its own. Files get Travis's line from the caller.
    pub fn command_done(&mut self, code: i32, took: Duration) {
        let Some((cmd, mark)) = self.command.take() else {
            return;
        };
        if self.observer.is_some() {
            let command = self.masker.mask_all(&cmd);
            self.event(JobEvent::CommandEnded {
                command: &command,
                status: code,
                duration: took,
            });
        }
        if code == 0 {
            self.write_all(
                format!("  ↳ passed in {}\n", human(took)).as_bytes(),
                To::Plain,
            );
        }
        if code == 0 && self.bytes == mark {
            let cmd = self.masker.mask_all(&cmd);
            self.write_all(
                format!(
                    "\x1b[1A\r\x1b[2K\x1b[1;33m$ {cmd}\x1b[0m  \x1b[2m{}\x1b[0m\n",
                    human(took)
                )
                .as_bytes(),
                To::Terminal,
            );
        } else if code == 0 {
            self.write_all(
                format!("\x1b[2m  ↳ passed in {}\x1b[0m\n", human(took)).as_bytes(),
                To::Terminal,
            );
        }
    }

    /// A line for the stored log only (Travis's "exited with 0" lines; terminals and
    /// plain sinks have said it their way, with the command's time).
    pub fn file_line(&mut self, text: &str) {
        let masked = self.masker.mask_all(text);
        self.bytes += masked.len() as u64 + 1;
        self.write_all(format!("{masked}\n").as_bytes(), To::Raw);
    }

    /// Starts a timer without a fold (script commands): `travis_time:start:ID`.
    pub fn timer_start(&mut self) -> Fold {
        self.timers += 1;
        let timer = format!("{:08x}", self.timers);
        self.write_all(format!("travis_time:start:{timer}\r\n").as_bytes(), To::Raw);
        Fold {
            name: String::new(),
            timer,
            start: SystemTime::now(),
            shown: false,
        }
    }

    /// Ends a fold (or a bare timer) with its duration.
    pub fn fold_end(&mut self, fold: Fold) {
        let finish = SystemTime::now();
        let ns = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        let took = finish.duration_since(fold.start).unwrap_or_default();
        let mut marker = format!(
            "travis_time:end:{}:start={},finish={},duration={}\r\n",
            fold.timer,
            ns(fold.start),
            ns(finish),
            took.as_nanos(),
        );
        if !fold.name.is_empty() {
            marker.push_str(&format!("travis_fold:end:{}\r\n", fold.name));
        }
        if !fold.name.is_empty() {
            self.event(JobEvent::SectionEnded {
                name: &fold.name,
                duration: took,
            });
        }
        if fold.shown {
            self.write_all(
                format!("\x1b[2m── {} ({})\x1b[0m\n", fold.name, human(took)).as_bytes(),
                To::People,
            );
        }
        self.write_all(marker.as_bytes(), To::Raw);
    }
}

/// A writer that turns a log's Travis markers into lines for people (`runway log`, the
/// hook's `remote:` lines): each fold becomes one line, its command with its duration
/// (`$ npm ci (12.30s; 340 more lines)`), unless the command after it failed, when the
/// fold is shown in full; timer lines go; everything else passes through as it comes.
/// `--raw` keeps the markers for tools.
pub struct Readable<W: Write> {
    inner: W,
    line: Vec<u8>,
    last: Option<Duration>,
    /// The fold being read: its name, depth of folds inside it, and its lines.
    open: Option<(String, usize, Vec<Vec<u8>>)>,
    /// A fold that ended, held until the next line says whether it failed.
    held: Option<(String, Option<Duration>, Vec<Vec<u8>>)>,
}

impl<W: Write> Readable<W> {
    /// Renders into `inner`.
    pub fn new(inner: W) -> Readable<W> {
        Readable {
            inner,
            line: Vec::new(),
            last: None,
            open: None,
            held: None,
        }
    }

    /// A held fold as one line: its first command (or its name) and its duration.
    fn collapse(&mut self) -> std::io::Result<()> {
        let Some((name, took, lines)) = self.held.take() else {
            return Ok(());
        };
        let text = |l: &Vec<u8>| String::from_utf8_lossy(l).trim_end().to_string();
        let title = lines
            .iter()
            .map(text)
            .find(|l| l.starts_with("$ "))
            .unwrap_or_else(|| format!("── {name}"));
        let more = lines.len().saturating_sub(1);
        let mut about: Vec<String> = took.map(human).into_iter().collect();
        if more > 0 {
            about.push(format!(
                "{more} more line{}",
                if more == 1 { "" } else { "s" }
            ));
        }
        if about.is_empty() {
            writeln!(self.inner, "{title}")
        } else {
            writeln!(self.inner, "{title} ({})", about.join("; "))
        }
    }

    /// A held fold in full, for the command after it failed.
    fn unfold(&mut self) -> std::io::Result<()> {
        let Some((name, took, lines)) = self.held.take() else {
            return Ok(());
        };
        for l in &lines {
            self.inner.write_all(l)?;
        }
        let took = took.map(|d| format!(" ({})", human(d)));
        writeln!(self.inner, "── {name}{}", took.unwrap_or_default())
    }

    fn line_out(&mut self, line: &[u8]) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(line);
        let bare = text.trim_end_matches(['\n', '\r']);
        if bare.starts_with("travis_time:start:") {
            return Ok(());
        }
        if let Some(end) = bare.strip_prefix("travis_time:end:") {
            self.last = end
                .rsplit("duration=")
                .next()
                .and_then(|n| n.trim().parse::<u64>().ok())
                .map(Duration::from_nanos);
            return Ok(());
        }
        if let Some(name) = bare.strip_prefix("travis_fold:start:") {
            match &mut self.open {
                Some((_, depth, _)) => *depth += 1,
                None => {
                    self.collapse()?;
                    self.open = Some((name.to_string(), 0, Vec::new()));
                }
            }
            return Ok(());
        }
        if bare.starts_with("travis_fold:end:") {
            match &mut self.open {
                Some((_, depth, _)) if *depth > 0 => *depth -= 1,
                Some(_) => {
                    let (name, _, lines) = self.open.take().expect("open");
                    self.held = Some((name, self.last.take(), lines));
                }
                None => {}
            }
            return Ok(());
        }
        if let Some((_, _, lines)) = &mut self.open {
            lines.push(line.to_vec());
            return Ok(());
        }
        if bare.starts_with("The command \"") && bare.contains("\" failed and exited with ") {
            self.unfold()?;
        } else if !bare.trim().is_empty() {
            self.collapse()?;
        }
        self.inner.write_all(line)
    }
}

impl<W: Write> Write for Readable<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        while let Some(i) = self.line.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.line.drain(..=i).collect();
            self.line_out(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_out(&line)?;
        }
        self.collapse()?;
        self.inner.flush()
    }
}

/// What is held of an unfinished line is written when the writer goes.
impl<W: Write> Drop for Readable<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// `0.42s`, `1m 3s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.2}s")
    } else {
        format!("{}m {}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    /// issue 14: on a terminal a trivial command is one line, its status said once;
    /// files keep Travis's lines.
    #[test]
    fn on_a_terminal_a_trivial_command_is_one_line() {
        let term = SharedBuf::default();
        let file = SharedBuf::default();
        let mut log = Log::new(
            Masker::default(),
            vec![
                Sink::terminal(Box::new(term.clone())),
                Sink::raw(Box::new(file.clone())),
            ],
        );
        let fold = log.command_fold_start("install.1");
        log.command("true");
        log.end_output();
        log.fold_end(fold);
        log.command_done(0, Duration::from_millis(10));
        log.file_line("The command \"true\" exited with 0.");
        let shown = String::from_utf8(term.0.lock().unwrap().clone()).unwrap();
        let plain: String = shown.replace("\x1b[1A\r\x1b[2K", "|");
        assert_eq!(
            plain, "\x1b[1;33m$ true\x1b[0m\n|\x1b[1;33m$ true\x1b[0m  \x1b[2m0.01s\x1b[0m\n",
            "the $ line rewritten with its time, nothing else"
        );
        let kept = String::from_utf8(file.0.lock().unwrap().clone()).unwrap();
        assert!(
            kept.starts_with("travis_fold:start:install.1\r\n"),
            "{kept}"
        );
        assert!(
            kept.contains("$ true\n") && kept.contains("The command \"true\" exited with 0.\n")
        );
        assert!(kept.contains("travis_fold:end:install.1"), "{kept}");
    }

    #[test]
    fn readable_logs_drop_timers_and_close_folds_with_their_duration() {
        let raw = "travis_fold:start:install.1\r\ntravis_time:start:0001\r\n$ make\nok\ntravis_time:end:0001:start=1,finish=2,duration=1500000000\r\ntravis_fold:end:install.1\r\ntravis_time:start:0002\r\n$ test\ntravis_time:end:0002:start=1,finish=2,duration=1\r\nDone.";
        let mut out = Vec::new();
        {
            let mut r = Readable::new(&mut out);
            for piece in raw.as_bytes().chunks(7) {
                r.write_all(piece).unwrap();
            }
            r.flush().unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "$ make (1.50s; 1 more line)\n$ test\nDone."
        );
    }

    /// A fold is one line unless the command after it failed: then it is shown whole,
    /// the failing part in full.
    #[test]
    fn a_fold_before_a_failure_is_shown_in_full() {
        let raw = "travis_fold:start:install.1\r\n$ npm ci\nnpm ERR! missing\ntravis_time:end:1:start=1,finish=2,duration=2000000000\r\ntravis_fold:end:install.1\r\nThe command \"npm ci\" failed and exited with 1 during install.\n";
        let mut out = Vec::new();
        {
            let mut r = Readable::new(&mut out);
            r.write_all(raw.as_bytes()).unwrap();
            r.flush().unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "$ npm ci\nnpm ERR! missing\n── install.1 (2.00s)\nThe command \"npm ci\" failed and exited with 1 during install.\n"
        );
    }

    use super::*;

    #[test]
    fn a_secret_printed_in_two_halves_by_two_commands_is_masked() {
        let mut buf = SharedBuf::default();
        let mut log = Log::new(
            Masker::new(["hunter2-password"]),
            vec![Sink::raw(Box::new(buf.clone()))],
        );
        log.output(b"hunter2-");
        log.end_output();
        log.styled_line("$ printf %s \"${PW:8}\"", "");
        log.output(b"password\n");
        log.end_output();
        log.finish();
        let text = String::from_utf8(buf.take()).unwrap();
        assert!(
            !text.contains("hunter2") && !text.contains("password"),
            "{text}"
        );
        assert!(text.contains("[secure]"), "{text}");
        // Held-back bytes that turn out not to be a secret are shown at the end.
        let sink = vec![Sink::raw(Box::new(buf.clone()))];
        let mut log = Log::new(Masker::new(["secret"]), sink);
        log.output(b"sec");
        log.end_output();
        log.finish();
        assert!(String::from_utf8(buf.take()).unwrap().contains("sec"));
    }

    #[derive(Clone, Default)]
    struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl SharedBuf {
        fn take(&mut self) -> Vec<u8> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }
    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
