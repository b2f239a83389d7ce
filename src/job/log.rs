//! The one log pipeline of a job: bytes from the shell and runway's own lines pass
//! once through secret masking, get fold and timing markers, and fan out to every sink
//! (the terminal, the log file, a buffer for parallel jobs).
//!
//! Sinks that are a terminal get readable sections with durations; other sinks get
//! Travis-compatible `travis_fold:start:NAME` / `travis_time:end:ID:…` markers, so
//! logs read the same way Travis's did.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MASK: &[u8] = b"[secure]";

/// Replaces secret values in a byte stream, also when a secret is split across writes.
#[derive(Debug, Default)]
pub struct Masker {
    /// Byte patterns to hide, longest first.
    secrets: Vec<Vec<u8>>,
    /// A tail that may be the start of a secret, held until more bytes come.
    pending: Vec<u8>,
}

impl Masker {
    /// A masker for repository settings: every value is secret unless its name is
    /// listed in `public`.
    pub fn for_settings(settings: &[crate::config::model::EnvVar], public: &[String]) -> Masker {
        Masker::new(
            settings
                .iter()
                .filter(|v| !public.contains(&v.name))
                .map(|v| v.value.as_str()),
        )
    }

    /// A masker for these secret values. Values under 3 characters are not masked
    /// (as on Travis). Each value is also hidden in every form a script commonly
    /// prints it in ([`printed_forms`]).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut secrets: Vec<Vec<u8>> = Vec::new();
        for v in values {
            if v.chars().count() < 3 {
                continue;
            }
            for form in printed_forms(v) {
                let form = form.into_bytes();
                if form.len() >= 3 && !secrets.contains(&form) {
                    secrets.push(form);
                }
            }
        }
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Masker {
            secrets,
            pending: Vec::new(),
        }
    }

    /// Masks a chunk; returns the bytes that are safe to show now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return chunk.to_vec();
        }
        self.pending.extend_from_slice(chunk);
        let (mut out, rest) = self.mask(&self.pending);
        // Keep back the longest tail that could still grow into a secret.
        let keep = self
            .secrets
            .iter()
            .map(|s| super::shell::partial_suffix(&rest, s))
            .max()
            .unwrap_or(0);
        out.extend_from_slice(&rest[..rest.len() - keep]);
        self.pending = rest[rest.len() - keep..].to_vec();
        out
    }

    /// Emits whatever is held back (the stream ended or paused at a command boundary).
    pub fn flush(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Masks a complete text at once.
    pub fn mask_all(&self, text: &str) -> String {
        let (mut out, rest) = self.mask(text.as_bytes());
        out.extend_from_slice(&rest);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Replaces every whole occurrence; returns (masked prefix, unscanned tail).
    fn mask(&self, input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        let mut last = 0;
        while i < input.len() {
            if let Some(s) = self.secrets.iter().find(|s| input[i..].starts_with(s)) {
                out.extend_from_slice(&input[last..i]);
                out.extend_from_slice(MASK);
                i += s.len();
                last = i;
            } else {
                i += 1;
            }
        }
        (out, input[last..].to_vec())
    }
}

/// The forms a secret value takes in a job's output, each masked:
/// - as is;
/// - percent-encoded, upper- and lower-case hex, with `/` encoded and kept (curl,
///   JavaScript's `encodeURIComponent`, Python's `urllib.parse.quote`);
/// - form-encoded (`+` for a space; Python's `quote_plus`, HTML forms), either case;
/// - shell-escaped with backslashes (`printf %q`) and quoted as `set -x` prints it
///   (`'` as `'\''`);
/// - JSON-escaped (`\"`, `\\`, `\t`, and `\uXXXX` for non-ASCII as Python's `json`).
///
/// Not masked: base64 or any other encoding, hashes, and a value printed with
/// characters between its parts (Travis did not mask these either).
pub fn printed_forms(v: &str) -> Vec<String> {
    let mut forms = vec![v.to_string()];
    for keep_slash in [false, true] {
        for lower in [false, true] {
            forms.push(percent_encode(v, keep_slash, false, lower));
        }
    }
    for lower in [false, true] {
        forms.push(percent_encode(v, false, true, lower));
    }
    forms.push(shell_escape(v));
    forms.push(v.replace('\'', r"'\''"));
    let json = serde_json::to_string(v).unwrap_or_default();
    let json = json[1..json.len() - 1].to_string();
    let ascii: String = json
        .chars()
        .map(|c| {
            if c.is_ascii() {
                c.to_string()
            } else {
                let mut buf = [0u16; 2];
                c.encode_utf16(&mut buf)
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect()
            }
        })
        .collect();
    forms.push(json);
    forms.push(ascii);
    forms.dedup();
    forms
}

/// Percent-encodes all but RFC 3986's unreserved characters (and `/` when kept);
/// `plus` writes a space as `+` (form encoding).
fn percent_encode(s: &str, keep_slash: bool, plus: bool, lower: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else if plus && b == b' ' {
            out.push('+');
        } else if lower {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn shell_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() && !"-_./:@,+=".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Where log bytes go.
pub struct Sink {
    writer: Box<dyn Write + Send>,
    terminal: bool,
}

impl Sink {
    /// A sink that gets Travis fold markers (a file, a pipe, a buffer).
    pub fn raw(writer: Box<dyn Write + Send>) -> Sink {
        Sink {
            writer,
            terminal: false,
        }
    }

    /// A sink that is a person's terminal: readable sections and colours.
    pub fn terminal(writer: Box<dyn Write + Send>) -> Sink {
        Sink {
            writer,
            terminal: true,
        }
    }
}

/// A job's log: masking, markers, sinks.
pub struct Log {
    masker: Masker,
    sinks: Vec<Sink>,
    timers: u64,
    /// Whether the last byte written ended a line.
    at_line_start: bool,
    /// Bytes written so far (after masking).
    pub bytes: u64,
}

/// A started fold, closed by [`Log::fold_end`].
pub struct Fold {
    name: String,
    timer: String,
    start: SystemTime,
}

impl Log {
    /// A log that masks `secrets` and writes to `sinks`.
    pub fn new(masker: Masker, sinks: Vec<Sink>) -> Log {
        Log {
            masker,
            sinks,
            timers: 0,
            at_line_start: true,
            bytes: 0,
        }
    }

    /// The masker, to mask texts leaving the job some other way (mail, summaries).
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    fn write_all(&mut self, bytes: &[u8], terminal_only: Option<bool>) {
        if bytes.is_empty() {
            return;
        }
        if terminal_only.is_none() {
            self.at_line_start = bytes.ends_with(b"\n");
            self.bytes += bytes.len() as u64;
        }
        for s in &mut self.sinks {
            if terminal_only.is_none_or(|t| t == s.terminal) {
                let _ = s.writer.write_all(bytes);
                let _ = s.writer.flush();
            }
        }
    }

    /// Bytes the job printed.
    pub fn output(&mut self, bytes: &[u8]) {
        let safe = self.masker.push(bytes);
        self.write_all(&safe, None);
    }

    /// Ends a command's output: ends an open line. Bytes held back as the start of a
    /// secret stay held: masking runs over the job's whole output stream, so a secret
    /// printed in two halves by two commands is masked too ([`Log::finish`] lets them go).
    pub fn end_output(&mut self) {
        if !self.at_line_start {
            self.write_all(b"\n", None);
        }
    }

    /// Ends the job's output: whatever was held back as a possible secret is shown.
    pub fn finish(&mut self) {
        let rest = self.masker.flush();
        let (mut all, tail) = self.masker.mask(&rest);
        all.extend_from_slice(&tail);
        self.write_all(&all, None);
        if !self.at_line_start {
            self.write_all(b"\n", None);
        }
    }

    /// One line of runway's own (masked too).
    pub fn line(&mut self, text: &str) {
        let masked = self.masker.mask_all(text);
        self.write_all(format!("{masked}\n").as_bytes(), None);
    }

    /// A line shown differently on terminals (`styled`) and in files (`plain`).
    pub fn styled_line(&mut self, plain: &str, styled: &str) {
        let plain = self.masker.mask_all(plain);
        let styled = self.masker.mask_all(styled);
        self.bytes += plain.len() as u64 + 1;
        self.at_line_start = true;
        self.write_all(format!("{styled}\n").as_bytes(), Some(true));
        self.write_all(format!("{plain}\n").as_bytes(), Some(false));
    }

    /// Starts a fold: `travis_fold:start:NAME` and a timer in files; a header on terminals.
    pub fn fold_start(&mut self, name: &str, title: &str) -> Fold {
        self.write_all(
            format!("travis_fold:start:{name}\r\n").as_bytes(),
            Some(false),
        );
        self.write_all(
            format!("\x1b[1;34m── {title}\x1b[0m\n").as_bytes(),
            Some(true),
        );
        let mut fold = self.timer_start();
        fold.name = name.to_string();
        fold
    }

    /// Starts a timer without a fold (script commands): `travis_time:start:ID`.
    pub fn timer_start(&mut self) -> Fold {
        self.timers += 1;
        let timer = format!("{:08x}", self.timers);
        self.write_all(
            format!("travis_time:start:{timer}\r\n").as_bytes(),
            Some(false),
        );
        Fold {
            name: String::new(),
            timer,
            start: SystemTime::now(),
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
            self.write_all(
                format!("\x1b[2m── {} ({})\x1b[0m\n", fold.name, human(took)).as_bytes(),
                Some(true),
            );
        }
        self.write_all(marker.as_bytes(), Some(false));
    }

    /// Writes only to terminal sinks (progress that files need not keep).
    pub fn terminal_note(&mut self, text: &str) {
        self.write_all(format!("{text}\n").as_bytes(), Some(true));
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
    use super::*;

    #[test]
    fn s2_masks_plain_url_and_split_secrets() {
        let mut m = Masker::new(["s3cr3t/value"]);
        assert_eq!(m.mask_all("key=s3cr3t/value!"), "key=[secure]!");
        assert_eq!(
            m.mask_all("https://u:s3cr3t%2Fvalue@h/"),
            "https://u:[secure]@h/"
        );
        let mut out = m.push(b"a s3cr");
        out.extend(m.push(b"3t/val"));
        out.extend(m.push(b"ue b"));
        out.extend(m.flush());
        assert_eq!(String::from_utf8(out).unwrap(), "a [secure] b");
    }

    #[test]
    fn every_printed_form_is_masked() {
        let secret = "it's a/b\"c\tz\u{e9}";
        let m = Masker::new([secret]);
        let shown = [
            // set -x: bash prints 'it'\''s a/b"c<TAB>zé'
            "+ echo 'it'\\''s a/b\"c\tz\u{e9}'",
            // urllib.parse.quote (keeps /), upper and lower case
            "https://h/?t=it%27s%20a/b%22c%09z%C3%A9",
            "https://h/?t=it%27s%20a/b%22c%09z%c3%a9",
            // encodeURIComponent
            "it%27s%20a%2Fb%22c%09z%C3%A9",
            "it%27s%20a%2fb%22c%09z%c3%a9",
            // form encoding (quote_plus)
            "t=it%27s+a%2Fb%22c%09z%C3%A9&x=1",
            "t=it%27s+a%2fb%22c%09z%c3%a9&x=1",
            // JSON, as serde and as Python's json.dumps
            "{\"t\": \"it's a/b\\\"c\\tz\u{e9}\"}",
            "{\"t\": \"it's a/b\\\"c\\tz\\u00e9\"}",
            // printf %q
            "it\\'s\\ a/b\\\"c\\\tz\\\u{e9}",
        ];
        for line in shown {
            let masked = m.mask_all(line);
            assert!(masked.contains("[secure]"), "{line} → {masked}");
            assert!(
                !masked.contains("a/b") && !masked.contains("a%2"),
                "{line} → {masked}"
            );
        }
    }

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

    #[test]
    fn s2_short_secrets_are_not_masked() {
        assert_eq!(Masker::new(["ab"]).mask_all("ab"), "ab");
    }

    #[test]
    fn held_back_bytes_are_only_secret_prefixes() {
        let mut m = Masker::new(["secret"]);
        assert_eq!(m.push(b"hello sec"), b"hello ");
        assert_eq!(m.push(b"ond"), b"second");
    }
}
