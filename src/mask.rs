//! Secret masking: every value of a setting is replaced by `[secure]` wherever it
//! appears in a job's output, in each form a script commonly prints it
//! ([`printed_forms`]), also when split across writes and commands. The job log
//! ([`crate::job::log`]), mails ([`crate::notify`]) and the server all mask through a
//! [`Masker`].
//!
//! It also compares secrets (tokens, signatures) in constant time ([`same`]).

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
            .map(|s| crate::process::partial_suffix(&rest, s))
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
    pub(crate) fn mask(&self, input: &[u8]) -> (Vec<u8>, Vec<u8>) {
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
/// - shell-escaped as bash's `printf %q` writes it ([`crate::process::printf_q`]: `\,`, `$'…'`,
///   non-ASCII as is), with a backslash before every other character too (other
///   shells' quoting), and quoted as `set -x` prints it (`'` as `'\''`);
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
    forms.push(crate::process::printf_q(v));
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
pub fn percent_encode(s: &str, keep_slash: bool, plus: bool, lower: bool) -> String {
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

/// Undoes [`percent_encode`]: `%XX` as its byte (a `%` not followed by two hex digits
/// stays as it is), and with `plus` a `+` as a space (form encoding); bytes that are not
/// UTF-8 become U+FFFD.
pub fn percent_decode(s: &str, plus: bool) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// Two secrets (tokens, MACs) compared in constant time: as long whatever differs.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_undoes_encoding_and_never_splits_a_character() {
        let text = "a b/c+d%é";
        assert_eq!(
            percent_decode(&percent_encode(text, false, true, false), true),
            text
        );
        assert_eq!(percent_decode("p%40ss%2", false), "p@ss%2");
        assert_eq!(percent_decode("%aé+x", false), "%aé+x");
    }

    #[test]
    fn printf_q_is_written_as_bash_writes_it() {
        // What bash 5.2's `printf %q` printed for each (checked by hand on this machine).
        for (v, q) in [
            ("pass,word9", r"pass\,word9"),
            ("café'babe42", r"café\'babe42"),
            ("hunter2,secret", r"hunter2\,secret"),
            ("a b~c", r"a\ b~c"),
            ("~home", r"\~home"),
            ("x=y#z", "x=y#z"),
            ("#x", r"\#x"),
            ("tab\tx", r"$'tab\tx'"),
            ("new\nline'q", r"$'new\nline\'q'"),
            ("a{b}c", r"a\{b\}c"),
            ("x!y", r"x\!y"),
        ] {
            assert_eq!(crate::process::printf_q(v), q, "{v}");
        }
        let m = Masker::new(["pass,word9", "café'babe42"]);
        assert_eq!(
            m.mask_all(r"p=pass\,word9 c=café\'babe42"),
            "p=[secure] c=[secure]"
        );
    }

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
