//! The `if:` language of travis-conditions v1 (travis-semantics.md §3): parser and evaluator.
//!
//! ```text
//! expr := expr OR expr | expr AND expr | NOT expr | '(' expr ')' | term
//! term := oprd IS [NOT] (present|blank|true|false) | oprd [NOT] IN '(' v, … ')'
//!       | oprd (=~ | ~= | !~) regex | oprd (= | == | !=) oprd | oprd
//! oprd := var | value | env(NAME) | concat(a, b, …)
//! ```
//! Keywords are case-insensitive; `||`, `&&` and `!` alias OR, AND and NOT. Regexes are
//! unanchored Ruby regexes, so `^` and `$` match at line ends. A condition that does not
//! parse, or whose regex is invalid, counts as false; callers report why.
//!
//! A condition comes from a pushed file, so the parser is bounded: `OR`/`AND` chains
//! are flat lists (20,000 `OR`s nest nothing), and parentheses, `NOT`/`!` and
//! `concat(` may nest at most [`MAX_DEPTH`] levels, so no condition can drive the
//! recursive descent past the stack of any thread.

use std::collections::HashMap;
use std::fmt;

/// The variables a condition can name.
pub const VARS: &[&str] = &[
    "type",
    "repo",
    "head_repo",
    "os",
    "dist",
    "group",
    "sudo",
    "language",
    "sender",
    "fork",
    "draft",
    "branch",
    "head_branch",
    "tag",
    "commit_message",
];

/// How deep parentheses, `NOT`/`!` and `concat(` may nest in one condition.
pub const MAX_DEPTH: usize = 64;

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `a OR b OR …` (two or more)
    Or(Vec<Expr>),
    /// `a AND b AND …` (two or more)
    And(Vec<Expr>),
    /// `NOT a`
    Not(Box<Expr>),
    /// `a = b`, `a != b`
    Eq(Operand, Operand, bool),
    /// `a =~ /re/` (false: `!~`)
    Match(Operand, String, bool),
    /// `a IN (x, y)` (false: `NOT IN`)
    In(Operand, Vec<Operand>, bool),
    /// `a IS present|blank|true|false` (false: `IS NOT`)
    Is(Operand, Predicate, bool),
    /// A bare operand: true when present and not `false`.
    Truthy(Operand),
}

/// What `IS` tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Predicate {
    /// Set and not empty.
    Present,
    /// Unset or empty.
    Blank,
    /// The string `true`.
    True,
    /// The string `false`.
    False,
}

/// A value in a condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// One of [`VARS`].
    Var(String),
    /// A literal.
    Value(String),
    /// `env(NAME)`
    Env(String),
    /// `concat(a, b, …)`
    Concat(Vec<Operand>),
}

/// Why a condition did not parse.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message} at offset {offset}")]
pub struct ParseError {
    /// Byte offset in the condition text.
    pub offset: usize,
    /// What went wrong.
    pub message: String,
    /// True when the condition is past runway's nesting limit ([`MAX_DEPTH`]) rather
    /// than wrong: a config that cannot be run at all, not a condition that is false.
    pub limit: bool,
}

/// What a condition is evaluated against: the build's variables and env vars.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Values of [`VARS`]; a missing one is nil.
    pub vars: HashMap<String, String>,
    /// env vars for `env()`: yml env (global and job) and settings.
    pub env: HashMap<String, String>,
}

/// Parses a condition.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let text = text.replace("\\\r\n", " ").replace("\\\n", " ");
    let mut p = P {
        s: text.as_bytes(),
        i: 0,
        text: &text,
        depth: 0,
    };
    p.ws();
    if p.eof() {
        return Err(p.err("empty condition"));
    }
    let e = p.or()?;
    p.ws();
    if !p.eof() {
        return Err(p.err(&format!("unexpected \"{}\"", p.rest_word())));
    }
    Ok(e)
}

struct P<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
    /// Open parentheses, `NOT`s and `concat(`s around the current position.
    depth: usize,
}

impl P<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }
    fn peek(&self) -> u8 {
        self.s.get(self.i).copied().unwrap_or(0)
    }
    fn ws(&mut self) {
        while !self.eof() && self.peek().is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn err(&self, m: &str) -> ParseError {
        ParseError {
            limit: false,
            offset: self.i,
            message: m.to_string(),
        }
    }
    fn rest_word(&self) -> String {
        self.text[self.i..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    }
    /// Consumes `sym` if the input continues with it.
    fn sym(&mut self, sym: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(sym.as_bytes()) {
            self.i += sym.len();
            true
        } else {
            false
        }
    }
    /// Consumes a keyword (case-insensitive, whole word).
    fn kw(&mut self, kw: &str) -> bool {
        self.ws();
        let end = self.i + kw.len();
        if end <= self.s.len()
            && self.s[self.i..end].eq_ignore_ascii_case(kw.as_bytes())
            && self.s.get(end).is_none_or(|c| !is_word(*c))
        {
            self.i = end;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.and()?];
        while self.kw("or") || self.sym("||") {
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.not()?];
        while self.kw("and") || self.sym("&&") {
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    /// Enters one level of nesting, refusing past [`MAX_DEPTH`].
    fn deeper(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError {
                limit: true,
                ..self.err(&format!(
                    "nesting deeper than {MAX_DEPTH} levels (parentheses, NOT, concat)"
                ))
            });
        }
        Ok(())
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        self.ws();
        if self.kw("not") || (self.peek() == b'!' && self.s.get(self.i + 1) != Some(&b'=')) {
            if self.peek() == b'!' {
                self.i += 1;
            }
            self.deeper()?;
            let e = Expr::Not(Box::new(self.not()?));
            self.depth -= 1;
            return Ok(e);
        }
        if self.sym("(") {
            self.deeper()?;
            let e = self.or()?;
            if !self.sym(")") {
                return Err(self.err("expected \")\""));
            }
            self.depth -= 1;
            return Ok(e);
        }
        self.term()
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let left = self.operand()?;
        if self.kw("is") {
            let negate = self.kw("not");
            let pred = if self.kw("present") {
                Predicate::Present
            } else if self.kw("blank") {
                Predicate::Blank
            } else if self.kw("true") {
                Predicate::True
            } else if self.kw("false") {
                Predicate::False
            } else {
                return Err(self.err("expected present, blank, true or false after IS"));
            };
            return Ok(Expr::Is(left, pred, !negate));
        }
        let save = self.i;
        let not_in = self.kw("not") && self.kw("in");
        if not_in || {
            self.i = save;
            self.kw("in")
        } {
            return Ok(Expr::In(left, self.list()?, !not_in));
        }
        self.i = save;
        for (op, positive) in [("=~", true), ("~=", true), ("!~", false)] {
            if self.sym(op) {
                return Ok(Expr::Match(left, self.regex()?, positive));
            }
        }
        for (op, positive) in [("==", true), ("!=", false), ("=", true)] {
            if self.sym(op) {
                return Ok(Expr::Eq(left, self.operand()?, positive));
            }
        }
        Ok(Expr::Truthy(left))
    }

    fn list(&mut self) -> Result<Vec<Operand>, ParseError> {
        if !self.sym("(") {
            return Err(self.err("expected \"(\" after IN"));
        }
        let mut items = vec![self.operand()?];
        while self.sym(",") {
            items.push(self.operand()?);
        }
        if !self.sym(")") {
            return Err(self.err("expected \")\" to close the IN list"));
        }
        Ok(items)
    }

    fn regex(&mut self) -> Result<String, ParseError> {
        self.ws();
        if self.peek() == b'/' {
            self.i += 1;
            let start = self.i;
            while !self.eof() && self.peek() != b'/' {
                if self.peek() == b'\\' {
                    self.i += 1;
                }
                self.i += 1;
            }
            if self.eof() {
                return Err(self.err("unterminated /regex/"));
            }
            let re = self.text[start..self.i].to_string();
            self.i += 1;
            return Ok(re);
        }
        if matches!(self.peek(), b'"' | b'\'') {
            return self.quoted();
        }
        let start = self.i;
        while !self.eof() && !self.peek().is_ascii_whitespace() {
            self.i += 1;
        }
        // A bare regex may not swallow the `)` that closes a group around the term.
        let mut word = &self.text[start..self.i];
        while word.ends_with(')') && word.matches('(').count() < word.matches(')').count() {
            word = &word[..word.len() - 1];
            self.i -= 1;
        }
        if word.is_empty() {
            return Err(self.err("expected a regex"));
        }
        Ok(word.to_string())
    }

    fn quoted(&mut self) -> Result<String, ParseError> {
        let q = self.peek();
        self.i += 1;
        let mut out = String::new();
        let start = self.i;
        while !self.eof() && self.peek() != q {
            if self.peek() == b'\\' && self.s.get(self.i + 1) == Some(&q) {
                self.i += 1;
            }
            let ch = self.text[self.i..].chars().next().unwrap_or(' ');
            out.push(ch);
            self.i += ch.len_utf8();
        }
        if self.eof() {
            self.i = start;
            return Err(self.err("unterminated quoted string"));
        }
        self.i += 1;
        Ok(out)
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        self.ws();
        match self.peek() {
            b'"' | b'\'' => return Ok(Operand::Value(self.quoted()?)),
            b'$' => return Err(self.err("a bare $VAR is not allowed; use env(VAR)")),
            0 => return Err(self.err("expected a value")),
            _ => {}
        }
        let start = self.i;
        while !self.eof() && is_word(self.peek()) {
            self.i += 1;
        }
        let word = &self.text[start..self.i];
        if word.is_empty() {
            return Err(self.err(&format!("unexpected \"{}\"", self.rest_word())));
        }
        let lower = word.to_ascii_lowercase();
        if (lower == "env" || lower == "concat") && self.sym("(") {
            self.deeper()?;
            let mut args = Vec::new();
            if !self.sym(")") {
                args.push(self.operand()?);
                while self.sym(",") {
                    args.push(self.operand()?);
                }
                if !self.sym(")") {
                    return Err(self.err(&format!("expected \")\" to close {lower}(")));
                }
            }
            self.depth -= 1;
            return if lower == "env" {
                match args.as_slice() {
                    [Operand::Value(name)] | [Operand::Var(name)] => Ok(Operand::Env(name.clone())),
                    _ => Err(self.err("env() takes one name")),
                }
            } else {
                Ok(Operand::Concat(args))
            };
        }
        if VARS.contains(&lower.as_str()) {
            Ok(Operand::Var(lower))
        } else {
            Ok(Operand::Value(word.to_string()))
        }
    }
}

fn is_word(c: u8) -> bool {
    !c.is_ascii_whitespace() && !matches!(c, b'(' | b')' | b'"' | b'\'' | b',' | b'=' | b'!')
}

/// Why an evaluation failed (an invalid regex); the condition then counts as false.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid regex /{regex}/: {message}")]
pub struct EvalError {
    /// The regex as written.
    pub regex: String,
    /// The regex engine's message.
    pub message: String,
}

impl Expr {
    /// Evaluates the condition against the facts of a build or job.
    pub fn eval(&self, f: &Facts) -> Result<bool, EvalError> {
        Ok(match self {
            Expr::Or(items) => {
                for e in items {
                    if e.eval(f)? {
                        return Ok(true);
                    }
                }
                false
            }
            Expr::And(items) => {
                for e in items {
                    if !e.eval(f)? {
                        return Ok(false);
                    }
                }
                true
            }
            Expr::Not(a) => !a.eval(f)?,
            Expr::Eq(a, b, positive) => (a.value(f) == b.value(f)) == *positive,
            Expr::In(a, list, positive) => {
                let v = a.value(f);
                (v.is_some() && list.iter().any(|o| o.value(f) == v)) == *positive
            }
            Expr::Is(a, pred, positive) => {
                let v = a.value(f);
                let holds = match pred {
                    Predicate::Present => v.as_deref().is_some_and(|s| !s.trim().is_empty()),
                    Predicate::Blank => v.as_deref().is_none_or(|s| s.trim().is_empty()),
                    Predicate::True => v.as_deref() == Some("true"),
                    Predicate::False => v.as_deref() == Some("false"),
                };
                holds == *positive
            }
            Expr::Match(a, regex, positive) => {
                let re = ruby_regex(regex).map_err(|message| EvalError {
                    regex: regex.clone(),
                    message,
                })?;
                let m = a.value(f).is_some_and(|v| re.is_match(&v).unwrap_or(false));
                m == *positive
            }
            Expr::Truthy(a) => a.value(f).is_some_and(|v| !v.is_empty() && v != "false"),
        })
    }
}

impl Operand {
    fn value(&self, f: &Facts) -> Option<String> {
        match self {
            Operand::Var(name) => f.vars.get(name).cloned(),
            Operand::Value(v) => Some(v.clone()),
            Operand::Env(name) => f.env.get(name).cloned(),
            Operand::Concat(parts) => Some(
                parts
                    .iter()
                    .map(|p| p.value(f).unwrap_or_default())
                    .collect(),
            ),
        }
    }
}

/// Compiles a Ruby regex: `^`/`$` match at line ends, as in Ruby; `\Z` is `\z`-ish.
pub fn ruby_regex(re: &str) -> Result<fancy_regex::Regex, String> {
    let translated = re
        .replace("\\Z", "(?=\\n?\\z)")
        .replace("\\h", "[0-9a-fA-F]");
    fancy_regex::Regex::new(&format!("(?m){translated}")).map_err(|e| e.to_string())
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Var(v) | Operand::Value(v) => f.write_str(v),
            Operand::Env(n) => write!(f, "env({n})"),
            Operand::Concat(p) => {
                let parts: Vec<String> = p.iter().map(ToString::to_string).collect();
                write!(f, "concat({})", parts.join(", "))
            }
        }
    }
}

/// A condition as messages quote it: whole when short, else the 60 characters around
/// `offset` (a 20,000-parenthesis condition is not repeated in full).
pub fn excerpt(text: &str, offset: usize) -> String {
    if text.chars().count() <= 80 {
        return text.to_string();
    }
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = chars.partition_point(|(i, _)| *i < offset);
    let from = at.saturating_sub(30);
    let to = (at + 30).min(chars.len());
    let piece: String = chars[from..to].iter().map(|(_, c)| c).collect();
    format!(
        "{}{piece}{}",
        if from > 0 { "…" } else { "" },
        if to < chars.len() { "…" } else { "" }
    )
}

/// Parses and evaluates; a parse or regex error is `Err` with the message (counts as false).
pub fn check(text: &str, facts: &Facts) -> Result<bool, String> {
    let e = parse(text).map_err(|e| e.to_string())?;
    e.eval(facts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    //! Each test pins a rule of travis-semantics.md §3 (`if:`).
    use super::*;

    fn facts() -> Facts {
        let mut f = Facts::default();
        for (k, v) in [
            ("type", "push"),
            ("branch", "master"),
            ("repo", "owner/app"),
            ("os", "linux"),
            ("fork", "false"),
            ("commit_message", "fix it\n\nmore text"),
        ] {
            f.vars.insert(k.into(), v.into());
        }
        f.env.insert("DEPLOY".into(), "true".into());
        f.env.insert("NAME".into(), "app".into());
        f
    }

    fn t(cond: &str) -> bool {
        check(cond, &facts()).unwrap_or_else(|e| panic!("{cond}: {e}"))
    }

    #[test]
    fn s3_equality_operators() {
        assert!(t("branch = master"));
        assert!(t("branch == master"));
        assert!(t("branch != dev"));
        assert!(!t("branch = dev"));
        assert!(t("type = push AND branch = master"));
    }

    #[test]
    fn s3_keywords_are_case_insensitive_and_have_aliases() {
        assert!(t("branch = master and type = push"));
        assert!(t("branch = dev || type = push"));
        assert!(t("NOT branch = dev"));
        assert!(t("!(branch = dev)"));
        assert!(t("branch = dev OR branch = master AND NOT type = cron"));
    }

    #[test]
    fn s3_in_lists() {
        assert!(t("branch IN (master, dev)"));
        assert!(t("branch NOT IN (dev, \"release x\")"));
        assert!(!t("type in (api, cron)"));
    }

    #[test]
    fn s3_is_present_blank() {
        assert!(t("branch IS present"));
        assert!(t("tag IS blank"));
        assert!(t("tag IS NOT present"));
        assert!(t("env(DEPLOY) IS true"));
        assert!(t("fork IS false"));
    }

    #[test]
    fn s3_regex_is_unanchored_ruby() {
        assert!(t("branch =~ ^mas"));
        assert!(t("branch =~ /ast/"));
        assert!(t("branch !~ ^release/"));
        assert!(
            t("commit_message =~ /^more/"),
            "Ruby ^ matches at line starts"
        );
        assert!(t("(branch =~ ^(master|dev)$)"));
        assert!(t("branch =~ (?i:MASTER)"));
    }

    #[test]
    fn s3_env_and_concat() {
        assert!(t("env(NAME) = app"));
        assert!(t("repo = concat(\"owner/\", env(NAME))"));
        assert!(t("env(DEPLOY)"));
        assert!(!t("env(MISSING)"));
    }

    #[test]
    fn s3_quoting() {
        assert!(t("branch = 'master'"));
        assert!(t("branch = \"master\""));
        assert!(!t("commit_message = 'fix it'"));
    }

    #[test]
    fn s3_parse_errors_count_as_false() {
        assert!(parse("branch = $FOO").is_err(), "bare $word is an error");
        assert!(parse("(branch = master").is_err());
        assert!(parse("branch IN master").is_err());
        assert!(parse("branch = master garbage ( ").is_err());
        assert!(parse("").is_err());
        assert!(check("branch =~ /(/", &facts()).is_err(), "invalid regex");
    }

    #[test]
    fn nesting_is_bounded_and_flat_chains_do_not_nest() {
        // Each of these overflowed the stack (issue 10): now a parse error or a flat list.
        let deep = format!(
            "{}branch = master{}",
            "(".repeat(20_000),
            ")".repeat(20_000)
        );
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nesting deeper than 64"), "{e}");
        assert!(parse(&"not ".repeat(100_000)).is_err());
        assert!(parse(&format!("{}branch = master", "!".repeat(200_000))).is_err());
        let concat = format!("repo = {}x{}", "concat(".repeat(1000), ")".repeat(1000));
        assert!(parse(&concat).is_err());
        let ors = vec!["branch = dev"; 20_000].join(" OR ") + " OR branch = master";
        match parse(&ors).unwrap() {
            Expr::Or(items) => assert_eq!(items.len(), 20_001),
            other => panic!("{other:?}"),
        }
        assert!(t(&ors));
        let ands = vec!["type = push"; 20_000].join(" && ");
        assert!(t(&ands));
        // 64 levels are fine.
        let ok = format!("{}branch = master{}", "(".repeat(64), ")".repeat(64));
        assert!(t(&ok));
        assert!(t(&format!(
            "{}branch = dev",
            "NOT NOT ".repeat(31).to_string() + "NOT "
        )));
    }

    #[test]
    fn s3_line_continuation() {
        assert!(t("branch = master AND \\\n type = push"));
    }
}
