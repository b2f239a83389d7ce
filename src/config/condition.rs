//! The `if:` language as Travis read it: travis-conditions v1
//! (github.com/travis-ci/travis-conditions, `lib/travis/conditions/v1/`), ported
//! rule for rule, quirks included, so a condition means here what it meant on Travis.
//!
//! ```text
//! expr := expr (OR | ||) expr | expr (AND | &&) expr | (NOT | !) expr | '(' expr ')' | term
//! term := oprd IS [NOT] (present|blank|true|false) | oprd [NOT] IN '(' oprd, … ')'
//!       | oprd (=~ | ~= | !~) regex | oprd (= | == | !=) oprd | oprd
//! oprd := var | call | 'quoted' | "quoted" | word          call := (env|concat) '(' oprd, … ')'
//! ```
//! What travis-conditions does, and so runway (parser.rb, boolean.rb, helper.rb,
//! regex.rb, eval.rb, data.rb):
//! - Keywords are case-insensitive and matched where they start, with no word boundary:
//!   `ORtag = x` after a term is `OR tag = x`, `android` after a term is `AND roid`
//!   (boolean.rb `AND = /(and|&&)/i`). Variables are lower case and must end at a
//!   space, `,`, `=`, `)` or `|` (parser.rb `VAR`, `boundary?`): `BRANCH` is a string.
//! - A word is anything but white space, `()"',=!` (parser.rb `WORD`); a word that
//!   starts with `$` is an error ("shell code does not work"). Quoted strings have no
//!   escapes (helper.rb `quoted`).
//! - A regex is `/…/` (a `\/` inside) or a bare run of non-space characters whose last
//!   is not `)` (regex.rb `REGEX = /\S*[^\s\)]+/`): a bare regex ending in `)` leaves
//!   that `)` behind, a parse error; a quoted string is taken as a bare regex, quotes and
//!   all, so one with a space is a parse error. A call (`env(RE)`) is evaluated, then
//!   compiled. An unterminated `/…` is read to the end.
//! - `env(X)` and `concat(…)` evaluate their arguments first: `env(branch)` looks up the
//!   env var named by the branch; `env()` is nil (eval.rb `env(key = nil)`).
//! - Every value is cast: `true`/`false` in any case become booleans (eval.rb `cast`,
//!   data.rb `cast`), so `FOO=false` is blank; `IS true` holds for any value but nil and
//!   false; `IS present` for any but nil, false and `""`; a bare operand for any but nil
//!   and false (`""` is truthy in Ruby). `=` compares values (nil = nil holds).
//! - `\` then spaces then a line break continues the line (parser.rb `CONT`).
//!
//! runway adds one bound: parentheses, `NOT`/`!` and calls nest at most [`MAX_DEPTH`]
//! levels, and `OR`/`AND` chains are flat lists, so no condition can drive the
//! recursive descent past the stack of any thread.

use std::collections::HashMap;
use std::fmt;

/// The variables a condition can name (parser.rb `VAR`), matched in this order.
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

/// How deep parentheses, `NOT`/`!` and calls may nest in one condition.
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
    /// `a = b` (true), `a != b` (false)
    Eq(Operand, Operand, bool),
    /// `a =~ re` (true), `a !~ re` (false)
    Match(Operand, Regex, bool),
    /// `a IN (x, y)` (true), `a NOT IN (…)` (false). Without its parentheses the list is
    /// `None`: parser.rb accepts that and eval.rb fails on it (the condition is false).
    In(Operand, Option<Vec<Operand>>, bool),
    /// `a IS pred` (true), `a IS NOT pred` (false)
    Is(Operand, Predicate, bool),
    /// A bare operand: true unless nil or false.
    Truthy(Operand),
}

/// The right side of `=~`.
#[derive(Clone, Debug, PartialEq)]
pub enum Regex {
    /// Written in the condition (without its `/`s).
    Text(String),
    /// A call whose value is compiled when the condition is evaluated.
    Call(Operand),
    /// Nothing where the regex belongs (regex.rb found none): the match is false.
    Missing,
}

/// What `IS` tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Predicate {
    /// Not nil, false or empty.
    Present,
    /// Nil, false or empty.
    Blank,
    /// Not nil or false.
    True,
    /// Nil or false.
    False,
}

/// A function of the language.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Func {
    /// `env(NAME)`: the env var named by the argument's value.
    Env,
    /// `concat(a, b, …)`
    Concat,
}

/// A value in a condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// One of [`VARS`].
    Var(String),
    /// A word or a quoted string.
    Value(String),
    /// `env(…)` or `concat(…)`, arguments evaluated first.
    Call(Func, Vec<Operand>),
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

/// Parses a condition (parser.rb `parse`: the whole text must be one expression).
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let text = join_continued_lines(text);
    let mut p = P {
        s: &text,
        i: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if p.i < p.s.len() {
        return Err(ParseError {
            offset: p.i,
            message: format!("could not parse the condition from \"{}\"", p.rest_word()),
            limit: false,
        });
    }
    Ok(e)
}

/// parser.rb `CONT = /\\\s*[\n\r]/`, each replaced by a space: a backslash, any white
/// space (line breaks too, as many as there are), then a line break.
fn join_continued_lines(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let mut j = i + 1;
            while j < b.len() && is_space(b[j]) {
                j += 1;
            }
            // `\s*` is greedy, then backtracks to end on a line break.
            let mut end = j;
            while end > i + 1 && !matches!(b[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            if end > i + 1 {
                out.push_str(&text[copied..i]);
                out.push(' ');
                i = end;
                copied = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// Ruby's `\s`: space, tab, line feed, vertical tab, form feed, carriage return.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// A StringScanner over the condition, as parser.rb reads it.
struct P<'a> {
    s: &'a str,
    i: usize,
    /// Open parentheses, `NOT`s and calls around the current position.
    depth: usize,
}

impl P<'_> {
    fn rest(&self) -> &str {
        &self.s[self.i..]
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn err(&self, m: &str) -> ParseError {
        ParseError {
            offset: self.i,
            message: m.to_string(),
            limit: false,
        }
    }

    /// helper.rb `err`: "expected X at position N".
    fn expected(&self, what: &str) -> ParseError {
        self.err(&format!("expected {what}"))
    }

    fn rest_word(&self) -> String {
        self.rest()
            .split_whitespace()
            .next()
            .unwrap_or("")
            .chars()
            .take(40)
            .collect()
    }

    /// helper.rb `space`'s `skip(/\s*/)`.
    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.i += 1;
        }
    }

    /// Scans `lit` (ASCII case-insensitive) where the scanner is.
    fn scan_ci(&mut self, lit: &str) -> bool {
        let end = self.i + lit.len();
        if self.s.len() >= end
            && self.s.as_bytes()[self.i..end].eq_ignore_ascii_case(lit.as_bytes())
        {
            self.i = end;
            true
        } else {
            false
        }
    }

    /// Scans `lit` exactly.
    fn scan(&mut self, lit: &str) -> bool {
        if self.rest().starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    /// The first of `alts` that is there, skipping white space around it (helper.rb
    /// `space { scan(RE) }` with an alternation).
    fn spaced_ci(&mut self, alts: &[&'static str]) -> Option<&'static str> {
        self.skip_space();
        let found = alts.iter().copied().find(|a| self.scan_ci(a));
        self.skip_space();
        found
    }

    /// Enters one level of nesting, refusing past [`MAX_DEPTH`].
    fn deeper(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError {
                limit: true,
                ..self.err(&format!(
                    "nesting deeper than {MAX_DEPTH} levels (parentheses, NOT, calls)"
                ))
            });
        }
        Ok(())
    }

    /// boolean.rb `expr`: `expr_ { OR expr_ }`.
    fn expr(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.expr_and()?];
        while self.spaced_ci(&["or", "||"]).is_some() {
            items.push(self.expr_and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    /// boolean.rb `expr_`: `oprd { AND oprd }`.
    fn expr_and(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.oprd()?];
        while self.spaced_ci(&["and", "&&"]).is_some() {
            items.push(self.oprd()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    /// boolean.rb `oprd`: `'(' expr ')' | NOT oprd | term`.
    fn oprd(&mut self) -> Result<Expr, ParseError> {
        if let Some(e) = self.parens(|p| p.expr())? {
            return Ok(e);
        }
        let pos = self.i;
        if self.spaced_ci(&["not", "!"]).is_some() {
            self.deeper()?;
            let e = self.oprd()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.i = pos;
        self.term()
    }

    /// helper.rb `parens`: `None` when no `(` is there; then `f`, and `)` or an error.
    fn parens<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Option<T>, ParseError> {
        self.skip_space();
        let open = self.scan("(");
        self.skip_space();
        if !open {
            return Ok(None);
        }
        self.deeper()?;
        let inner = f(self)?;
        self.skip_space();
        if !self.scan(")") {
            return Err(self.expected("\")\""));
        }
        self.depth -= 1;
        Ok(Some(inner))
    }

    /// parser.rb `term`.
    fn term(&mut self) -> Result<Expr, ParseError> {
        let left = self.operand()?;
        if let Some(op) = self.spaced_ci(&["in", "not in"]) {
            let list = self.parens(|p| p.list())?;
            if list.as_ref().is_some_and(Vec::is_empty) {
                return Err(self.expected("a list of values"));
            }
            // Without `(`, parser.rb returns `[:in, term, nil]`, which eval.rb cannot
            // evaluate: it parses, and it is false.
            return Ok(Expr::In(left, list, op.eq_ignore_ascii_case("in")));
        }
        if let Some(op) = self.spaced_ci(&["is not", "is"]) {
            let pred = self.spaced_ci(&["present", "blank", "true", "false"]);
            if let Some(pred) = pred {
                let pred = match pred {
                    "present" => Predicate::Present,
                    "blank" => Predicate::Blank,
                    "true" => Predicate::True,
                    _ => Predicate::False,
                };
                return Ok(Expr::Is(left, pred, op.eq_ignore_ascii_case("is")));
            }
            // parser.rb `is_pred` returns nil with `IS` consumed; the term goes on.
        }
        self.skip_space();
        let re = if self.scan("=~") || self.scan("~=") {
            Some(true)
        } else if self.scan("!~") {
            Some(false)
        } else {
            None
        };
        self.skip_space();
        if let Some(positive) = re {
            return Ok(Expr::Match(left, self.regex()?, positive));
        }
        self.skip_space();
        let eq = if self.scan("==") || self.scan("=") {
            Some(true)
        } else if self.scan("!=") {
            Some(false)
        } else {
            None
        };
        self.skip_space();
        if let Some(positive) = eq {
            return Ok(Expr::Eq(left, self.operand()?, positive));
        }
        Ok(Expr::Truthy(left))
    }

    /// parser.rb `operand`: `space { var || call || val }`, or an error.
    fn operand(&mut self) -> Result<Operand, ParseError> {
        self.skip_space();
        let found = match self.var() {
            Some(v) => Some(v),
            None => match self.call()? {
                Some(c) => Some(c),
                None => self.val()?,
            },
        };
        self.skip_space();
        found.ok_or_else(|| self.expected("an operand"))
    }

    /// parser.rb `var`: a variable name followed by a boundary (`[\s,=)|]` or the end).
    fn var(&mut self) -> Option<Operand> {
        let name = VARS.iter().find(|v| self.rest().starts_with(*v))?;
        let after = self.s.as_bytes().get(self.i + name.len()).copied();
        if after.is_none_or(|c| is_space(c) || matches!(c, b',' | b'=' | b')' | b'|')) {
            self.i += name.len();
            Some(Operand::Var(name.to_string()))
        } else {
            None
        }
    }

    /// parser.rb `call`: `env` or `concat` (any case), then a list in parentheses. The
    /// name is consumed even when no `(` follows (then the call is nothing, and what
    /// follows is read as a value, as parser.rb does).
    fn call(&mut self) -> Result<Option<Operand>, ParseError> {
        let Some(name) = self.spaced_ci(&["env", "concat"]) else {
            return Ok(None);
        };
        let func = if name == "env" {
            Func::Env
        } else {
            Func::Concat
        };
        Ok(self
            .parens(|p| p.list())?
            .map(|args| Operand::Call(func, args)))
    }

    /// parser.rb `list`: operands separated by commas (perhaps none).
    fn list(&mut self) -> Result<Vec<Operand>, ParseError> {
        let mut items = Vec::new();
        loop {
            let item = match self.var() {
                Some(v) => Some(v),
                None => match self.call()? {
                    Some(c) => Some(c),
                    None => self.val()?,
                },
            };
            let Some(item) = item else { break };
            items.push(item);
            if self.spaced_ci(&[","]).is_none() {
                break;
            }
        }
        self.scan(",");
        Ok(items)
    }

    /// parser.rb `val`: a quoted string or a word.
    fn val(&mut self) -> Result<Option<Operand>, ParseError> {
        if let Some(q) = self.quoted()? {
            return Ok(Some(Operand::Value(q)));
        }
        Ok(self.word()?.map(Operand::Value))
    }

    /// helper.rb `quoted`: a quote, anything but that quote, the quote. No escapes.
    fn quoted(&mut self) -> Result<Option<String>, ParseError> {
        let Some(q @ (b'"' | b'\'')) = self.peek() else {
            return Ok(None);
        };
        self.i += 1;
        let len = self
            .rest()
            .bytes()
            .position(|c| c == q)
            .unwrap_or(self.rest().len());
        let text = self.rest()[..len].to_string();
        self.i += len;
        if !self.scan(if q == b'"' { "\"" } else { "'" }) {
            return Err(self.expected(if q == b'"' { "\"" } else { "'" }));
        }
        Ok(Some(text))
    }

    /// parser.rb `word`: `[^\s()"',=!]+`, never starting with `$`.
    fn word(&mut self) -> Result<Option<String>, ParseError> {
        self.skip_space();
        let len = self
            .rest()
            .bytes()
            .position(|c| {
                is_space(c) || matches!(c, b'(' | b')' | b'"' | b'\'' | b',' | b'=' | b'!')
            })
            .unwrap_or(self.rest().len());
        let word = self.rest()[..len].to_string();
        if word.starts_with('$') {
            return Err(self.err(
                "strings cannot start with a dollar (shell code does not work); quote it, or use env(NAME) for an env var",
            ));
        }
        self.i += len;
        self.skip_space();
        Ok((!word.is_empty()).then_some(word))
    }

    /// parser.rb `regex` with regex.rb: a call, `/…/`, or a bare regex.
    fn regex(&mut self) -> Result<Regex, ParseError> {
        if let Some(call) = self.call()? {
            return Ok(Regex::Call(call));
        }
        self.skip_space();
        // regex.rb works on the rest with white space stripped at both ends.
        let rest = self
            .rest()
            .trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8));
        let scanned = if rest.starts_with('/') {
            let b = rest.as_bytes();
            let mut j = 1;
            let mut escaped = false;
            let mut closed = false;
            while j < b.len() {
                if b[j] == b'/' && !escaped {
                    closed = true;
                    break;
                }
                escaped = b[j] == b'\\';
                j += 1;
            }
            // regex.rb appends the closing `/` when it finds one; an unterminated
            // `/…` is read to the end.
            let end = if closed { j + 1 } else { j };
            &rest[..end]
        } else {
            // `\S*[^\s\)]+`: the longest run of non-space characters that does not end
            // in `)`.
            let run = rest.bytes().position(is_space).unwrap_or(rest.len());
            let mut end = run;
            while end > 0 && rest.as_bytes()[end - 1] == b')' {
                end -= 1;
            }
            &rest[..end]
        };
        if scanned.is_empty() {
            return Ok(Regex::Missing);
        }
        let scanned = scanned.to_string();
        self.i += scanned.len();
        // parser.rb: `reg.gsub(%r{^/|/$}, '')` (Ruby's ^ and $ match at line ends).
        let text = scanned.strip_prefix('/').unwrap_or(&scanned);
        let text = text.strip_suffix('/').unwrap_or(text);
        Ok(Regex::Text(text.to_string()))
    }
}

/// Why an evaluation failed (an invalid regex, a call Travis could not make); the
/// condition then counts as false.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// A value as eval.rb has it: nil, a boolean (`true`/`false` in any case are cast to
/// one), or a string.
#[derive(Clone, Debug, PartialEq)]
enum V {
    Nil,
    Bool(bool),
    Str(String),
}

impl V {
    /// eval.rb `cast`: `true` and `false`, in any case, are booleans.
    fn cast(self) -> V {
        match self {
            V::Str(s) if s.eq_ignore_ascii_case("true") => V::Bool(true),
            V::Str(s) if s.eq_ignore_ascii_case("false") => V::Bool(false),
            v => v,
        }
    }

    /// Ruby's truthiness: all but nil and false.
    fn truthy(&self) -> bool {
        !matches!(self, V::Nil | V::Bool(false))
    }

    /// Ruby's `to_s`.
    fn text(&self) -> String {
        match self {
            V::Nil => String::new(),
            V::Bool(b) => b.to_string(),
            V::Str(s) => s.clone(),
        }
    }
}

impl Expr {
    /// Evaluates the condition against the facts of a build or job (eval.rb `apply`).
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
            Expr::Not(e) => !e.eval(f)?,
            Expr::Eq(a, b, positive) => (a.value(f)? == b.value(f)?) == *positive,
            Expr::In(a, list, positive) => {
                let Some(list) = list else {
                    return Err(EvalError(format!(
                        "{a} IN needs a list in parentheses: IN (a, b)"
                    )));
                };
                let v = a.value(f)?;
                let mut found = false;
                for o in list {
                    found |= o.value(f)? == v;
                }
                found == *positive
            }
            Expr::Is(a, pred, positive) => {
                let v = a.value(f)?;
                let present = match &v {
                    V::Str(s) => !s.is_empty(),
                    other => other.truthy(),
                };
                let holds = match pred {
                    Predicate::Present => present,
                    Predicate::Blank => !present,
                    Predicate::True => v.truthy(),
                    Predicate::False => !v.truthy(),
                };
                holds == *positive
            }
            Expr::Match(a, re, positive) => {
                // eval.rb `match`: both sides are evaluated (the regex compiled, so an
                // invalid one is an error whatever the left side is) before comparing.
                let left = match a.value(f)? {
                    V::Nil => None,
                    v => Some(v.text()),
                };
                let source = match re {
                    Regex::Text(t) => V::Str(t.clone()).cast(),
                    Regex::Call(c) => c.value(f)?,
                    Regex::Missing => V::Nil,
                };
                let regex = match source {
                    // `Regexp.new(str) if str`: nil and false are no regex.
                    V::Nil | V::Bool(false) => None,
                    V::Bool(true) => {
                        return Err(EvalError("true is not a regular expression".into()));
                    }
                    V::Str(src) => Some(ruby_regex(&src).map_err(|m| {
                        EvalError(format!("invalid regular expression /{src}/: {m}"))
                    })?),
                };
                let matched = match (left, regex) {
                    (Some(l), Some(re)) => re.is_match(&l).unwrap_or(false),
                    _ => false,
                };
                matched == *positive
            }
            Expr::Truthy(a) => a.value(f)?.truthy(),
        })
    }
}

impl Operand {
    /// eval.rb `evl` of an operand: its value, cast.
    fn value(&self, f: &Facts) -> Result<V, EvalError> {
        Ok(match self {
            Operand::Var(name) => f.vars.get(name).map_or(V::Nil, |v| V::Str(v.clone())),
            Operand::Value(v) => V::Str(v.clone()),
            Operand::Call(Func::Concat, args) => {
                let mut out = String::new();
                for a in args {
                    out.push_str(&a.value(f)?.text());
                }
                V::Str(out)
            }
            Operand::Call(Func::Env, args) => match args.as_slice() {
                [] => V::Nil,
                [name] => match name.value(f)? {
                    V::Nil => V::Nil,
                    V::Bool(b) => {
                        return Err(EvalError(format!(
                            "env({b}): an env var name cannot be {b}"
                        )));
                    }
                    V::Str(name) => f
                        .env
                        .get(&name)
                        .map_or(V::Nil, |v| V::Str(unquote(v).to_string())),
                },
                _ => {
                    return Err(EvalError(format!(
                        "env() takes one name, not {}",
                        args.len()
                    )));
                }
            },
        }
        .cast())
    }
}

/// data.rb `env`: a value wrapped in matching quotes is read without them.
fn unquote(v: &str) -> &str {
    let b = v.as_bytes();
    if b.len() >= 2 && matches!(b[0], b'"' | b'\'') && b[b.len() - 1] == b[0] && !v.contains('\n') {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Compiles a Ruby (Onigmo) regex as Travis's `Regexp.new` read it: `^` and `$` match
/// at line ends; `\h`, `\H`, `\Z`, `\e` and `\a` are translated; an escaped letter
/// Ruby has no meaning for (`\i`, `\o`) is that letter, as in Ruby.
pub fn ruby_regex(re: &str) -> Result<fancy_regex::Regex, String> {
    let mut out = String::with_capacity(re.len() + 8);
    let mut chars = re.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // A lone `\\` at the end is an error in Ruby too.
            None => out.push('\\'),
            Some('h') => out.push_str("[0-9a-fA-F]"),
            Some('H') => out.push_str("[^0-9a-fA-F]"),
            Some('Z') => out.push_str("(?=\\n?\\z)"),
            Some('e') => out.push_str("\\x1b"),
            Some('a') => out.push_str("\\x07"),
            Some(
                e @ ('d' | 'D' | 'w' | 'W' | 's' | 'S' | 'b' | 'B' | 'A' | 'z' | 'n' | 't' | 'r'
                | 'f' | 'v' | 'x' | 'u' | 'p' | 'P'),
            ) => {
                out.push('\\');
                out.push(e);
            }
            // Ruby reads any other escaped letter as the letter itself.
            Some(l) if l.is_ascii_alphabetic() => out.push(l),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    fancy_regex::Regex::new(&format!("(?m){out}")).map_err(|e| e.to_string())
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Var(v) | Operand::Value(v) => f.write_str(v),
            Operand::Call(func, args) => {
                let parts: Vec<String> = args.iter().map(ToString::to_string).collect();
                let name = match func {
                    Func::Env => "env",
                    Func::Concat => "concat",
                };
                write!(f, "{name}({})", parts.join(", "))
            }
        }
    }
}

/// Ruby's `String#inspect`, for [`Expr::sexp`].
fn inspect(s: &str) -> String {
    let mut out = String::from("\"");
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            '#' if matches!(chars.peek(), Some('{' | '$' | '@')) => out.push_str("\\#"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn sexp_operand(o: &Operand) -> String {
    match o {
        Operand::Var(v) => format!("[:var, :{v}]"),
        Operand::Value(v) => format!("[:val, {}]", inspect(v)),
        Operand::Call(f, args) => {
            let name = match f {
                Func::Env => "env",
                Func::Concat => "concat",
            };
            let args: Vec<String> = args.iter().map(sexp_operand).collect();
            format!("[:call, :{name}, [{}]]", args.join(", "))
        }
    }
}

impl Expr {
    /// The condition in travis-conditions' notation, as its parser prints what it read
    /// (`[:and, [:eq, [:var, :branch], [:val, "master"]], …]`): to compare the two.
    pub fn sexp(&self) -> String {
        sexp(self)
    }
}

fn sexp(e: &Expr) -> String {
    let fold = |op: &str, items: &[Expr]| {
        let mut acc = sexp(&items[0]);
        for i in &items[1..] {
            acc = format!("[:{op}, {acc}, {}]", sexp(i));
        }
        acc
    };
    match e {
        Expr::Or(items) => fold("or", items),
        Expr::And(items) => fold("and", items),
        Expr::Not(e) => format!("[:not, {}]", sexp(e)),
        Expr::Eq(a, b, p) => format!(
            "[:{}, {}, {}]",
            if *p { "eq" } else { "not_eq" },
            sexp_operand(a),
            sexp_operand(b)
        ),
        Expr::Match(a, re, p) => {
            let re = match re {
                Regex::Text(t) => format!("[:reg, {}]", inspect(t)),
                Regex::Call(c) => format!("[:reg, {}]", sexp_operand(c)),
                Regex::Missing => "nil".into(),
            };
            format!(
                "[:{}, {}, {re}]",
                if *p { "match" } else { "not_match" },
                sexp_operand(a)
            )
        }
        Expr::In(a, list, p) => {
            let list = match list {
                Some(l) => format!(
                    "[{}]",
                    l.iter().map(sexp_operand).collect::<Vec<_>>().join(", ")
                ),
                None => "nil".into(),
            };
            format!(
                "[:{}, {}, {list}]",
                if *p { "in" } else { "not_in" },
                sexp_operand(a)
            )
        }
        Expr::Is(a, pred, p) => {
            let pred = match pred {
                Predicate::Present => "present",
                Predicate::Blank => "blank",
                Predicate::True => "true",
                Predicate::False => "false",
            };
            format!(
                "[:{}, {}, :{pred}]",
                if *p { "is" } else { "is_not" },
                sexp_operand(a)
            )
        }
        Expr::Truthy(o) => sexp_operand(o),
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
    //! Each test pins a rule of docs/semantics.md §3 (`if:`).
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
        assert!(t("env(NAME) IS true"), "any value but nil and false");
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
        assert!(t("branch =~ /(?i:MASTER)/"));
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

    fn sx(cond: &str) -> String {
        parse(cond).map_or_else(|e| format!("ERR {e}"), |e| e.sexp())
    }

    /// regex.rb `REGEX = /\S*[^\s\)]+/`: a bare regex cannot end in `)`; the `)` left
    /// behind is a parse error (Travis's docs: wrap such a regex in `/…/`).
    #[test]
    fn issue16_a_bare_regex_ending_in_a_parenthesis_is_a_parse_error() {
        assert!(parse("branch =~ ^(master|dev)").is_err());
        assert!(parse("branch =~ /^(master|dev)/").is_ok());
        // Inside parentheses the `)` closes the group, as on Travis.
        assert_eq!(
            sx("(branch =~ ^(a|b)$)"),
            r#"[:match, [:var, :branch], [:reg, "^(a|b)$"]]"#
        );
    }

    /// regex.rb `word`: a quoted string on the right of `=~` is read as a bare regex,
    /// quotes included, so one with a space is a parse error (spec/v1/fixtures/
    /// failures.txt, "quoted regex").
    #[test]
    fn issue16_a_quoted_regex_is_read_as_travis_read_it() {
        assert!(parse("env(MSG) =~ \"no docs\"").is_err());
        assert_eq!(
            sx("branch =~ \"foo\""),
            r#"[:match, [:var, :branch], [:reg, "\"foo\""]]"#
        );
        assert!(
            !t("branch =~ \"master\""),
            "the quotes are part of the regex"
        );
    }

    /// parser.rb `regex`: `val = call; return [:reg, val] if val`: a call on the right
    /// of `=~` is evaluated, then compiled (eval.rb `reg`); nil matches nothing.
    #[test]
    fn issue16_a_call_on_the_right_of_a_match_is_evaluated() {
        let mut f = facts();
        f.env.insert("PATTERN".into(), "^mas".into());
        assert!(check("branch =~ env(PATTERN)", &f).unwrap());
        assert!(!check("branch =~ env(MISSING)", &f).unwrap());
        assert!(check("branch !~ env(MISSING)", &f).unwrap());
        assert!(check("branch =~ concat(\"^\", \"ma\")", &f).unwrap());
    }

    /// boolean.rb `AND = /(and|&&)/i`, `OR`, `NOT`: no word boundary; parser.rb `VAR`
    /// is lower case and needs a boundary after it.
    #[test]
    fn issue16_keywords_are_matched_without_word_boundaries() {
        assert_eq!(
            sx("branch = master ORtag = x"),
            r#"[:or, [:eq, [:var, :branch], [:val, "master"]], [:eq, [:var, :tag], [:val, "x"]]]"#
        );
        assert_eq!(
            sx("branch = master android = 1"),
            r#"[:and, [:eq, [:var, :branch], [:val, "master"]], [:eq, [:val, "roid"], [:val, "1"]]]"#
        );
        assert_eq!(
            sx("BRANCH = master"),
            r#"[:eq, [:val, "BRANCH"], [:val, "master"]]"#
        );
        assert_eq!(sx("tags = x"), r#"[:eq, [:val, "tags"], [:val, "x"]]"#);
        assert!(!t("BRANCH = master"), "BRANCH is a string, not the branch");
    }

    /// eval.rb `env(key = nil)`: `env()` is nil, so a comparison with it is false.
    #[test]
    fn issue16_env_without_an_argument_is_nil() {
        assert_eq!(
            sx("branch = env()"),
            "[:eq, [:var, :branch], [:call, :env, []]]"
        );
        assert!(!t("branch = env()"));
        assert!(!t("env()"));
        // Arguments are evaluated: env(branch) is the env var named by the branch.
        let mut f = facts();
        f.env.insert("master".into(), "yes".into());
        assert!(check("env(branch) = yes", &f).unwrap());
    }

    /// parser.rb `CONT = /\\\s*[\n\r]/`: spaces may stand between `\` and the line break.
    #[test]
    fn issue16_spaces_after_a_continuation_backslash() {
        assert!(t("branch = master AND \\   \n type = push"));
        assert!(t("branch = master AND \\\r\n type = push"));
    }

    /// eval.rb `cast` and data.rb `cast`: `true`/`false` in any case are booleans, so
    /// `FOO=false` is blank and not present; `""` is truthy in Ruby; `IS true` holds for
    /// any value but nil and false.
    #[test]
    fn issue16_values_are_cast_as_ruby_casts_them() {
        let mut f = facts();
        f.env.insert("OFF".into(), "FALSE".into());
        f.env.insert("EMPTY".into(), String::new());
        f.env.insert("SPACE".into(), " ".into());
        let c = |cond: &str| check(cond, &f).unwrap();
        assert!(c("env(OFF) IS blank") && !c("env(OFF) IS present"));
        assert!(c("env(OFF) = false") && c("env(OFF) = False"));
        assert!(!c("env(OFF)"));
        assert!(c("env(EMPTY)"), "\"\" is truthy");
        assert!(c("env(EMPTY) IS blank"));
        assert!(
            c("env(SPACE) IS present"),
            "Ruby's empty? is false for \" \""
        );
        assert!(
            c("branch IS true"),
            "IS true holds for any value but nil and false"
        );
        assert!(c("tag IS false") && c("fork IS false") && c("fork = FALSE"));
    }

    #[test]
    fn s3_line_continuation() {
        assert!(t("branch = master AND \\\n type = push"));
    }
}
