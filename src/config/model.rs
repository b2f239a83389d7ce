//! The typed view of a normalised config: small readers over the canonical tree.
//!
//! After [`super::schema`] every list-ish key is a list and every map-ish key a map, so
//! these readers never guess shapes. A job's config is the same kind of map as the
//! root (root keys merged with an include's), so one set of readers serves both.

use super::diag::{Diagnostics, Pos, join};
use super::yaml::{Entry, Node, Value};

/// One environment variable as Travis exports it: `export NAME=VALUE`, value verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EnvVar {
    /// The name.
    pub name: String,
    /// The value as written (bash quoting and `$VAR` still apply).
    pub value: String,
}

impl EnvVar {
    /// The value with one level of surrounding quotes removed, as bash would see it
    /// for simple values; used for conditions and cache keys.
    pub fn plain_value(&self) -> &str {
        let v = self.value.as_str();
        for q in ['"', '\''] {
            if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
                return &v[1..v.len() - 1];
            }
        }
        v
    }
}

impl EnvVar {
    /// The value the job's shell gets from `export NAME=VALUE`: quotes removed and
    /// backslash escapes applied as bash does; `$VAR` and `$(…)` are left as written
    /// (what they expand to is known only in the job).
    pub fn shell_value(&self) -> String {
        let mut out = String::new();
        let mut chars = self.value.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    for q in chars.by_ref() {
                        if q == '\'' {
                            break;
                        }
                        out.push(q);
                    }
                }
                '"' => {
                    while let Some(q) = chars.next() {
                        match q {
                            '"' => break,
                            '\\' if matches!(chars.peek(), Some('\\' | '"' | '$' | '`')) => {
                                out.extend(chars.next());
                            }
                            q => out.push(q),
                        }
                    }
                }
                '\\' => out.extend(chars.next()),
                c => out.push(c),
            }
        }
        out
    }
}

/// Why an env string could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EnvError(pub String);

/// Splits `A=1 B="x y" C=$(cmd arg)` into variables, as travis-build's env parser does:
/// words are split on blanks outside quotes, `$(…)`, `${…}` and backticks. Words that
/// are not `NAME=value` are skipped, as travis-build's scanner skipped them; they are
/// returned second so the caller can warn. An unterminated quote is an error.
pub fn parse_env_words(s: &str) -> Result<(Vec<EnvVar>, Vec<String>), EnvError> {
    let mut vars = Vec::new();
    let mut skipped = Vec::new();
    for word in split_words(s)? {
        let word = word.strip_prefix("export ").unwrap_or(&word).to_string();
        let valid = word.split_once('=').filter(|(name, _)| {
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit())
        });
        match valid {
            Some((name, value)) => vars.push(EnvVar {
                name: name.to_string(),
                value: value.to_string(),
            }),
            None => skipped.push(word),
        }
    }
    Ok((vars, skipped))
}

/// [`parse_env_words`] without the skipped words.
pub fn parse_env_string(s: &str) -> Result<Vec<EnvVar>, EnvError> {
    parse_env_words(s).map(|(vars, _)| vars)
}

fn split_words(s: &str) -> Result<Vec<String>, EnvError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut depth = 0usize; // inside $( … ) or ${ … }
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (Some(_), '\\') => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'' | '`') => {
                quote = Some(c);
                cur.push(c);
            }
            (None, '\\') => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            (None, '$') if matches!(chars.peek(), Some('(' | '{')) => {
                cur.push(c);
                cur.push(chars.next().unwrap_or('('));
                depth += 1;
            }
            (None, '(' | '{') if depth > 0 => {
                depth += 1;
                cur.push(c);
            }
            (None, ')' | '}') if depth > 0 => {
                depth -= 1;
                cur.push(c);
            }
            (None, c) if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if let Some(q) = quote {
        return Err(EnvError(format!("unterminated {q} quote")));
    }
    if depth > 0 {
        return Err(EnvError("unterminated $( or ${".into()));
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

/// Reads one env item (`"A=1 B=2"`, `{A: 1}`, `{secure: …}`) into variables.
/// Secure items cannot be decrypted here and are reported by the caller.
pub fn env_item(node: &Node) -> Result<Vec<EnvVar>, EnvError> {
    match &node.value {
        Value::Scalar(s) => parse_env_string(&s.text),
        Value::Map(entries) if node.get("secure").is_some() && entries.len() == 1 => Ok(vec![]),
        // `- FOO: bar` (travis-yml's env_var map): one item, its keys the variables.
        // The value is YAML text, not shell: it is double-quoted when it needs to be
        // (spaces, quotes) so the export keeps it whole; `$VAR`s still expand, as in
        // the `FOO=$BAR` form.
        Value::Map(entries) => Ok(entries
            .iter()
            .filter(|e| e.value.get("secure").is_none())
            .map(|e| EnvVar {
                name: e.key.clone(),
                value: shell_word(e.value.as_str().unwrap_or_default()),
            })
            .collect()),
        _ => Ok(vec![]),
    }
}

/// `text` as one shell word that keeps `$VAR` expansion: as is when it is plain,
/// else in double quotes with `\`, `"` and backquotes escaped.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-$".contains(c));
    if plain {
        return text.to_string();
    }
    let mut out = String::from("\"");
    for c in text.chars() {
        if matches!(c, '\\' | '"' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Reads a list of env items into one flat list of variables, dropping unreadable ones.
pub fn env_list(node: Option<&Node>) -> Vec<EnvVar> {
    let mut out = Vec::new();
    for item in seq(node) {
        out.extend(env_item(item).unwrap_or_default());
    }
    out
}

/// True when an env item is `{secure: …}` (or a map holding one).
pub fn is_secure_item(node: &Node) -> bool {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .any(|e| e.key == "secure" || e.value.get("secure").is_some()),
        _ => false,
    }
}

/// The names of the `$VAR`/`${VAR}` references in `text`, in order.
pub fn vars_in(text: &str) -> Vec<String> {
    let names = std::cell::RefCell::new(Vec::new());
    expand_vars(text, &|n| {
        names.borrow_mut().push(n.to_string());
        None
    });
    names.into_inner()
}

/// Expands `$VAR` and `${VAR}` with `lookup` (unknown names expand to nothing; a `$`
/// not followed by a name stays). Used for cache paths and deploy options.
pub fn expand_vars(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                name.push(n);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&lookup(&name).unwrap_or_default());
        }
    }
    out
}

/// The items of a list node (empty when absent).
pub fn seq(node: Option<&Node>) -> &[Node] {
    node.and_then(Node::as_seq).unwrap_or_default()
}

/// The items of a node that may be a list or a single value (`email: false`, `email: {…}`).
pub fn items(node: Option<&Node>) -> Vec<&Node> {
    match node {
        None => Vec::new(),
        Some(n) => match &n.value {
            Value::Seq(items) => items.iter().collect(),
            Value::Null => Vec::new(),
            _ => vec![n],
        },
    }
}

/// The texts of a list of scalars (non-scalars skipped).
pub fn strs(node: Option<&Node>) -> Vec<String> {
    seq(node)
        .iter()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

/// A scalar's text.
pub fn str_of(node: Option<&Node>) -> Option<&str> {
    node.and_then(Node::as_str)
}

/// A boolean (YAML 1.1 spellings), or `default`.
pub fn bool_of(node: Option<&Node>, default: bool) -> bool {
    node.and_then(|n| {
        n.as_bool()
            .or_else(|| n.as_str().and_then(super::yaml::yaml11_bool))
    })
    .unwrap_or(default)
}

/// Checks every env item of the config (root `env`, includes' `env`) for
/// readability and reports secure items that cannot be decrypted here.
pub fn check_env(root: &Node, diags: &mut Diagnostics) {
    let env = root.get("env");
    for part in ["global", "jobs"] {
        check_env_items(env.and_then(|e| e.get(part)), &join("env", part), diags);
    }
    let jobs = root.get("jobs");
    for (i, inc) in seq(jobs.and_then(|j| j.get("include"))).iter().enumerate() {
        check_env_items(inc.get("env"), &format!("jobs.include[{i}].env"), diags);
    }
}

fn check_env_items(node: Option<&Node>, path: &str, diags: &mut Diagnostics) {
    for item in seq(node) {
        if is_secure_item(item) {
            diags.warn(
                item.pos,
                path,
                "secure_env",
                "a secure (encrypted) variable needs Travis's private key; it is left unset. \
                 Give its value with --env/--env-file or in runway.toml instead",
            );
            continue;
        }
        let Some(text) = item.as_str() else { continue };
        match parse_env_words(text) {
            Err(e) => diags.error(
                item.pos,
                path,
                "invalid_env_var",
                format!("invalid env var: {e}"),
            ),
            Ok((_, skipped)) if !skipped.is_empty() => diags.warn(
                item.pos,
                path,
                "invalid_env_var",
                format!(
                    "not NAME=value, ignored as Travis did: {}",
                    skipped.join(" ")
                ),
            ),
            Ok(_) => {}
        }
    }
}

/// `on_success`/`on_failure` directly under `notifications` are Travis's fallback for
/// every notifier, which is easy to mistake for the email setting: say where they apply.
pub fn check_notifications(root: &Node, diags: &mut Diagnostics) {
    let Some(entries) = root.get("notifications").and_then(Node::as_map) else {
        return;
    };
    for e in entries {
        if matches!(e.key.as_str(), "on_success" | "on_failure" | "on_start") {
            diags.info(
                e.key_pos,
                &join("notifications", &e.key),
                "misplaced_key",
                format!(
                    "\"{}\" directly under notifications is the fallback for every notifier; \
                     to set it for email only, put it under notifications.email",
                    e.key
                ),
            );
        }
    }
}

/// True for `deb …` and `deb-src …` lines (as opposed to Travis's source aliases).
pub fn is_deb_line(text: &str) -> bool {
    text.starts_with("deb ") || text.starts_with("deb-src ")
}

/// Warns about `addons` runway does not provide (everything but `apt.packages`):
/// Travis installed them; runway's job would run without them. Checked at the root and
/// in each `jobs.include` entry.
pub fn check_addons(root: &Node, diags: &mut Diagnostics) {
    let mut places: Vec<(String, &Node)> = Vec::new();
    if let Some(a) = root.get("addons") {
        places.push(("addons".into(), a));
    }
    let include = root.get("jobs").and_then(|j| j.get("include"));
    for (i, job) in seq(include).iter().enumerate() {
        if let Some(a) = job.get("addons") {
            places.push((format!("jobs.include[{i}].addons"), a));
        }
    }
    for (path, addons) in places {
        for e in addons.as_map().unwrap_or_default() {
            let here = join(&path, &e.key);
            if e.key != "apt" {
                diags.warn(
                    e.key_pos,
                    &here,
                    "unsupported_addon",
                    format!(
                        "runway does not provide the {} addon: the job runs without it (install it in before_install)",
                        e.key
                    ),
                );
            } else {
                for s in seq(e.value.get("sources")) {
                    let text = s.as_str().or_else(|| s.get("name").and_then(Node::as_str));
                    let alias = s.get("sourceline").is_none() && !text.is_some_and(is_deb_line);
                    if alias {
                        diags.warn(
                            s.pos,
                            &join(&here, "sources"),
                            "unsupported_addon",
                            "runway does not add Travis's source aliases (give a sourceline: deb …): the job is errored unless run with --substitutes",
                        );
                    }
                }
            }
        }
    }
}

/// Builds a map node from entries (used when merging job configs).
pub fn map_node(pos: Pos, entries: Vec<Entry>) -> Node {
    Node::new(pos, Value::Map(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<(String, String)> {
        parse_env_string(s)
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.value))
            .collect()
    }

    #[test]
    fn the_value_a_job_sees_has_its_shell_quotes_removed() {
        let v = |value: &str| {
            EnvVar {
                name: "X".into(),
                value: value.into(),
            }
            .shell_value()
        };
        assert_eq!(v("\"serde\""), "serde");
        assert_eq!(v("'a b'"), "a b");
        assert_eq!(v("\"it's \\\"x\\\"\""), "it's \"x\"");
        assert_eq!(v("a\\ b"), "a b");
        assert_eq!(v("$HOME/x"), "$HOME/x");
        assert_eq!(v("pre'fix'\"ed\""), "prefixed");
    }

    #[test]
    fn s2_env_string_holds_several_vars_verbatim() {
        assert_eq!(
            names("A=1 B=\"x y\" C=$(echo a b) D=${X:-y z}"),
            [
                ("A".into(), "1".into()),
                ("B".into(), "\"x y\"".into()),
                ("C".into(), "$(echo a b)".into()),
                ("D".into(), "${X:-y z}".into())
            ]
        );
    }

    #[test]
    fn s2_words_that_are_not_vars_are_skipped_and_open_quotes_are_errors() {
        let (vars, skipped) = parse_env_words("STYLE A=1 1A=x").unwrap();
        assert_eq!(vars.len(), 1);
        assert_eq!(skipped, ["STYLE", "1A=x"]);
        assert!(parse_env_string("A=\"open").is_err());
    }
}
