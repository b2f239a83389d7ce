//! Text as one bash word: single quotes ([`quote`]) for what runway writes itself, and
//! bash's own `printf %q` form ([`printf_q`]) for what goes down a shell's command pipe
//! and for the forms a secret may take in a log.

/// Any text as one bash word on one line, as bash's `printf %q` writes it (bash's `sh_backslash_quote` and
/// `ansic_quote`): with a control character, the whole value as `$'…'` (`\n`, `\t`,
/// `\E`, `\'`, octal for the rest); otherwise a backslash before each character the
/// shell would read specially, `,` (brace expansion) included, `~` and `#` only where
/// they would expand (the start, `~` after `=` or `:`); other characters, non-ASCII
/// ones too, as they are.
pub fn printf_q(s: &str) -> String {
    if s.is_empty() {
        return "''".into();
    }
    if s.chars().any(|c| (c as u32) < 0x20 || c as u32 == 0x7f) {
        let mut out = String::from("$'");
        for c in s.chars() {
            match c {
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x1b' => out.push_str("\\E"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\{:03o}", c as u32))
                }
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    let mut out = String::new();
    let mut prev: Option<char> = None;
    for c in s.chars() {
        let escape = match c {
            ' ' | '\t' | '\n' | '\'' | '"' | '\\' | '|' | '&' | ';' | '(' | ')' | '<' | '>'
            | '!' | '{' | '}' | '*' | '[' | '?' | ']' | '^' | '$' | '`' | ',' => true,
            '~' => matches!(prev, None | Some('=') | Some(':')),
            '#' => prev.is_none(),
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

/// Single-quotes a string for bash.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
