//! YAML text → a tree of [`Node`]s that remember where they were written.
//!
//! Scalars keep the text exactly as written, with a flag for quoting, and no type
//! guessing: `python: 3.10` stays "3.10" and `on:` stays a key. The few places that
//! need a boolean or a number ask for one ([`Node::as_bool`]), with YAML 1.1's
//! spellings, as Travis's libyaml did. Anchors, aliases and `<<` merges are resolved
//! here; a duplicate key is a warning and the last one wins, as in Ruby.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::HashMap;

use super::diag::{Diagnostics, Pos};

/// Nesting deeper than this is refused rather than risking the stack: every later
/// stage (normalising, planning) walks the tree recursively.
pub const MAX_DEPTH: usize = 64;
/// A document that expands (aliases included) to more values than this is refused
/// (a "billion laughs" file).
pub const MAX_NODES: usize = 500_000;
/// A document whose scalars add up to more bytes than this once aliases are
/// expanded is refused: a few aliases of a large string are a bomb too.
pub const MAX_EXPANDED_BYTES: usize = 16 * 1024 * 1024;

/// A YAML value with the place it starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub value: Value,
}

/// The shape of a [`Node`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null`, or nothing at all.
    Null,
    /// Any scalar, as written.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order, keys unique.
    Map(Vec<Entry>),
}

/// A scalar's text and whether it was quoted (or a block scalar).
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    /// The text after YAML unescaping.
    pub text: String,
    /// False for plain scalars; true for quoted and block scalars.
    pub quoted: bool,
}

/// One `key: value` pair of a mapping.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key as written.
    pub key: String,
    /// Where the key starts.
    pub key_pos: Pos,
    /// The value.
    pub value: Node,
}

/// A YAML syntax error: the file cannot be read at all.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it expected.
    pub message: String,
    /// True when the text is YAML but past one of runway's limits (depth, expansion).
    pub limit: bool,
}

impl YamlError {
    fn limit(pos: Pos, message: String) -> YamlError {
        YamlError {
            pos,
            message,
            limit: true,
        }
    }
}

impl Node {
    /// A node with a value at a place.
    pub fn new(pos: Pos, value: Value) -> Node {
        Node { pos, value }
    }

    /// A plain (unquoted) scalar node.
    pub fn scalar(pos: Pos, text: impl Into<String>) -> Node {
        Node::new(
            pos,
            Value::Scalar(Scalar {
                text: text.into(),
                quoted: false,
            }),
        )
    }

    /// The scalar text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    /// YAML 1.1 booleans (`true`, `yes`, `on`, …) of a plain scalar.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            Value::Scalar(Scalar {
                text,
                quoted: false,
            }) => yaml11_bool(text),
            _ => None,
        }
    }

    /// The entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|e| e.key == key)
            .map(|e| &e.value)
    }

    /// True for `~`, `null` and empty values.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// Structural equality that ignores positions (for matrix exclude/uniq rules).
    pub fn same(&self, other: &Node) -> bool {
        match (&self.value, &other.value) {
            (Value::Null, Value::Null) => true,
            (Value::Scalar(a), Value::Scalar(b)) => a.text == b.text,
            (Value::Seq(a), Value::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
            }
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|e| b.iter().any(|f| f.key == e.key && f.value.same(&e.value)))
            }
            _ => false,
        }
    }

    /// A short name of the node's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Scalar(_) => "string",
            Value::Seq(_) => "list",
            Value::Map(_) => "map",
        }
    }
}

/// YAML 1.1's boolean spellings, as libyaml/psych read them.
pub fn yaml11_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => {
            Some(true)
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => {
            Some(false)
        }
        _ => None,
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// How many under-indented quoted scalars are repaired before giving up.
const MAX_REPAIRS: usize = 20;

/// Parses the first YAML document of `text`. An empty file is [`Value::Null`].
///
/// libyaml, which Travis used, accepts a quoted scalar whose continuation lines are
/// indented less than YAML 1.2 allows; saphyr does not. Such lines are re-indented
/// (line folding drops that whitespace, so the value is unchanged) and the text is
/// parsed again, with an info saying so.
pub fn parse(text: &str, diags: &mut Diagnostics) -> Result<Node, YamlError> {
    let mut text = std::borrow::Cow::Borrowed(text);
    for _ in 0..MAX_REPAIRS {
        let mut attempt = Diagnostics::default();
        let result = Loader {
            parser: Parser::new_from_str(&text),
            anchors: HashMap::new(),
            diags: &mut attempt,
            nodes: 0,
            bytes: 0,
        }
        .document();
        match result {
            Err(e) if e.message == "invalid indentation in quoted scalar" => {
                let Some(fixed) = reindent_quoted(&text, e.pos) else {
                    return Err(e);
                };
                diags.info(
                    e.pos,
                    "",
                    "quoted_indent",
                    "a quoted string continues on lines indented less than YAML allows; \
                     read as libyaml (Travis) read it",
                );
                text = std::borrow::Cow::Owned(fixed);
            }
            other => {
                diags.extend(attempt);
                return other.map_err(|e| at_block_entry(&text, e));
            }
        }
    }
    Err(YamlError {
        pos: Pos { line: 1, col: 1 },
        message: "too many under-indented quoted strings".into(),
        limit: false,
    })
}

/// libyaml (Travis's parser) reports "did not find expected key" at the `-` of a list
/// item that stands where a key belongs (`- "node"` at column 1 under `key:`); saphyr
/// reports the item's content after it. The error is moved back to the `-`.
fn at_block_entry(text: &str, mut e: YamlError) -> YamlError {
    if !e.message.contains("did not find expected key") {
        return e;
    }
    let Some(line) = text.lines().nth(e.pos.line.saturating_sub(1)) else {
        return e;
    };
    let before: String = line.chars().take(e.pos.col.saturating_sub(1)).collect();
    let trimmed = before.trim_end();
    if trimmed.trim_start() == "-" && trimmed.len() < before.len() {
        e.pos.col = trimmed.chars().count();
    }
    e
}

/// Indents the continuation lines of the quoted scalar that starts at `pos` to its
/// opening quote's column.
fn reindent_quoted(text: &str, pos: Pos) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let first = lines.get(pos.line.checked_sub(1)?)?;
    let start: usize = first.char_indices().nth(pos.col.checked_sub(1)?)?.0;
    let quote = first[start..]
        .chars()
        .next()
        .filter(|c| *c == '"' || *c == '\'')?;
    // Find the line holding the closing quote.
    let mut closing_line = None;
    let mut escaped = false;
    'scan: for (n, line) in lines.iter().enumerate().skip(pos.line - 1) {
        let from = if n == pos.line - 1 { start + 1 } else { 0 };
        let mut chars = line[from..].chars().peekable();
        while let Some(c) = chars.next() {
            if quote == '"' && !escaped && c == '\\' {
                escaped = true;
                continue;
            }
            if c == quote && !escaped {
                if quote == '\'' && chars.peek() == Some(&'\'') {
                    chars.next();
                    continue;
                }
                closing_line = Some(n);
                break 'scan;
            }
            escaped = false;
        }
    }
    let closing = closing_line?;
    let indent = " ".repeat(pos.col);
    let mut out = String::with_capacity(text.len() + 64);
    for (n, line) in lines.iter().enumerate() {
        if n > pos.line - 1 && n <= closing && !line.trim().is_empty() {
            out.push_str(&indent);
            out.push_str(line.trim_start_matches([' ', '\t']));
        } else {
            out.push_str(line);
        }
    }
    Some(out)
}

struct Loader<'a, 'd> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    /// Anchored nodes with their size (values, scalar bytes).
    anchors: HashMap<usize, (Node, Size)>,
    diags: &'d mut Diagnostics,
    nodes: usize,
    bytes: usize,
}

/// How much a node expands to: values and scalar bytes.
#[derive(Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
}

impl<'a> Loader<'a, '_> {
    fn next(&mut self) -> Result<(Event<'a>, Span), YamlError> {
        match self.parser.next_event() {
            Some(Ok(ev)) => Ok(ev),
            Some(Err(e)) => Err(YamlError {
                pos: Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                message: e.info().to_string(),
                limit: false,
            }),
            None => Err(YamlError {
                pos: Pos::default(),
                message: "unexpected end of input".into(),
                limit: false,
            }),
        }
    }

    fn document(&mut self) -> Result<Node, YamlError> {
        loop {
            let (ev, span) = self.next()?;
            match ev {
                Event::StreamStart => {}
                Event::DocumentStart(_) => break,
                Event::StreamEnd => return Ok(Node::new(Pos { line: 1, col: 1 }, Value::Null)),
                _ => {
                    return Err(YamlError {
                        pos: pos_of(&span),
                        message: "expected a YAML document".into(),
                        limit: false,
                    });
                }
            }
        }
        let (ev, span) = self.next()?;
        let root = self.node(ev, span, 0)?;
        // Travis reads one document; say so if there are more.
        if let Ok((Event::DocumentEnd, _)) = self.next()
            && let Ok((Event::DocumentStart(_), span)) = self.next()
        {
            self.diags.warn(
                pos_of(&span),
                "",
                "multiple_documents",
                "only the first YAML document is read; the rest is ignored",
            );
        }
        Ok(root)
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, YamlError> {
        let pos = pos_of(&span);
        if depth > MAX_DEPTH {
            return Err(YamlError::limit(
                pos,
                format!("nesting deeper than {MAX_DEPTH} levels; runway reads at most that"),
            ));
        }
        self.grow(pos, 1, 0)?;
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                self.grow(pos, 0, text.len())?;
                let quoted = style != ScalarStyle::Plain;
                let value = if !quoted && matches!(&*text, "" | "~" | "null" | "Null" | "NULL") {
                    Value::Null
                } else {
                    Value::Scalar(Scalar {
                        text: text.into_owned(),
                        quoted,
                    })
                };
                (Node::new(pos, value), anchor)
            }
            Event::Alias(id) => {
                let (node, size) = self.anchors.get(&id).cloned().ok_or_else(|| YamlError {
                    pos,
                    message: "alias to an unknown anchor".into(),
                    limit: false,
                })?;
                self.grow(pos, size.nodes, size.bytes)?;
                (node, 0)
            }
            Event::SequenceStart(anchor, _tag) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                (Node::new(pos, Value::Seq(items)), anchor)
            }
            Event::MappingStart(anchor, _tag) => (self.mapping(pos, depth)?, anchor),
            _ => {
                return Err(YamlError {
                    pos,
                    message: "unexpected YAML event".into(),
                    limit: false,
                });
            }
        };
        if anchor != 0 {
            let size = size_of(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        Ok(node)
    }

    /// Counts values and bytes read (or expanded from an alias), refusing a document
    /// past [`MAX_NODES`] or [`MAX_EXPANDED_BYTES`].
    fn grow(&mut self, pos: Pos, nodes: usize, bytes: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > MAX_NODES {
            return Err(YamlError::limit(
                pos,
                format!("the document expands to more than {MAX_NODES} values (aliases included)"),
            ));
        }
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(YamlError::limit(
                pos,
                format!(
                    "the document expands to more than {} MiB of text (aliases included)",
                    MAX_EXPANDED_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }

    fn mapping(&mut self, pos: Pos, depth: usize) -> Result<Node, YamlError> {
        // Entries in file order; a key written again leaves a hole where it was.
        let mut entries: Vec<Option<Entry>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut merged: Vec<Entry> = Vec::new();
        loop {
            let (ev, span) = self.next()?;
            if matches!(ev, Event::MappingEnd) {
                break;
            }
            let key_node = self.node(ev, span, depth + 1)?;
            let (vev, vspan) = self.next()?;
            let value = self.node(vev, vspan, depth + 1)?;
            let key = match &key_node.value {
                Value::Scalar(s) => s.text.clone(),
                Value::Null => String::new(),
                _ => {
                    self.diags.error(
                        key_node.pos,
                        "",
                        "invalid_key",
                        format!(
                            "a {} cannot be a key; this entry is ignored",
                            key_node.kind()
                        ),
                    );
                    continue;
                }
            };
            if key == "<<" {
                self.merge_source(&value, &mut merged);
                continue;
            }
            if let Some(first) = index.get(&key).and_then(|i| entries[*i].take()) {
                self.diags.warn(
                    key_node.pos,
                    &key,
                    "duplicate_key",
                    format!(
                        "duplicate key; the one on line {} is replaced by this one",
                        first.key_pos.line
                    ),
                );
            }
            index.insert(key.clone(), entries.len());
            entries.push(Some(Entry {
                key,
                key_pos: key_node.pos,
                value,
            }));
        }
        let mut entries: Vec<Entry> = entries.into_iter().flatten().collect();
        // Keys written in the map win over merged ones, wherever `<<` stands.
        for m in merged {
            if !index.contains_key(&m.key) {
                entries.push(m);
            }
        }
        Ok(Node::new(pos, Value::Map(entries)))
    }

    /// `<<: *a` or `<<: [*a, *b]`: earlier sources win over later ones.
    fn merge_source(&mut self, value: &Node, merged: &mut Vec<Entry>) {
        let sources: Vec<&Node> = match &value.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![value],
        };
        let mut seen: std::collections::HashSet<String> =
            merged.iter().map(|m| m.key.clone()).collect();
        for src in sources {
            match src.as_map() {
                Some(entries) => {
                    for e in entries {
                        if seen.insert(e.key.clone()) {
                            merged.push(e.clone());
                        }
                    }
                }
                None => self.diags.error(
                    src.pos,
                    "<<",
                    "invalid_merge",
                    format!("`<<` merges maps, not a {}", src.kind()),
                ),
            }
        }
    }
}

/// Values and scalar bytes of a node (its depth is at most [`MAX_DEPTH`]).
fn size_of(node: &Node) -> Size {
    let add = |a: Size, b: Size| Size {
        nodes: a.nodes.saturating_add(b.nodes),
        bytes: a.bytes.saturating_add(b.bytes),
    };
    let one = Size { nodes: 1, bytes: 0 };
    match &node.value {
        Value::Seq(items) => items.iter().map(size_of).fold(one, add),
        Value::Map(entries) => entries
            .iter()
            .map(|e| {
                add(
                    size_of(&e.value),
                    Size {
                        nodes: 1,
                        bytes: e.key.len(),
                    },
                )
            })
            .fold(one, add),
        Value::Scalar(s) => Size {
            nodes: 1,
            bytes: s.text.len(),
        },
        Value::Null => one,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Node, Vec<super::super::diag::Diagnostic>) {
        let mut d = Diagnostics::default();
        let n = parse(text, &mut d).expect("parses");
        (n, d.into_sorted())
    }

    #[test]
    fn on_stays_a_key_and_versions_keep_their_text() {
        let (n, _) = load("on: x\npython: 3.10\njdk: 11\nphp: 7.0\n");
        let keys: Vec<_> = n.as_map().unwrap().iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["on", "python", "jdk", "php"]);
        assert_eq!(n.get("python").unwrap().as_str(), Some("3.10"));
        assert_eq!(n.get("php").unwrap().as_str(), Some("7.0"));
    }

    #[test]
    fn duplicate_key_warns_and_last_wins() {
        let (n, d) = load("script: a\nscript: b\n");
        assert_eq!(n.get("script").unwrap().as_str(), Some("b"));
        assert_eq!(d[0].code, "duplicate_key");
        assert_eq!(d[0].pos, Pos { line: 2, col: 1 });
    }

    #[test]
    fn anchors_aliases_and_merges() {
        let (n, _) = load("_base: &b\n  a: 1\n  b: 2\njob:\n  <<: *b\n  b: 3\nlist: *b\n");
        let job = n.get("job").unwrap();
        assert_eq!(job.get("a").unwrap().as_str(), Some("1"));
        assert_eq!(job.get("b").unwrap().as_str(), Some("3"));
        assert_eq!(n.get("list").unwrap().get("b").unwrap().as_str(), Some("2"));
    }

    #[test]
    fn crlf_and_no_final_newline() {
        let (n, _) = load("language: java\r\nscript: ./gradlew check");
        assert_eq!(n.get("script").unwrap().as_str(), Some("./gradlew check"));
    }

    #[test]
    fn positions_are_one_based() {
        let (n, _) = load("a:\n  b: c\n");
        let e = &n.get("a").unwrap().as_map().unwrap()[0];
        assert_eq!(e.key_pos, Pos { line: 2, col: 3 });
    }

    #[test]
    fn under_indented_quoted_continuation_is_read_as_libyaml_did() {
        let (n, d) = load("env:\n  global:\n    - secure: \"abc\ndef\"\n");
        let item = &n
            .get("env")
            .unwrap()
            .get("global")
            .unwrap()
            .as_seq()
            .unwrap()[0];
        assert_eq!(item.get("secure").unwrap().as_str(), Some("abc def"));
        assert_eq!(d[0].code, "quoted_indent");
    }

    /// issue 16: libyaml's place for a list item where a key belongs is its `-`.
    #[test]
    fn a_list_item_where_a_key_belongs_is_reported_at_its_dash() {
        let mut d = Diagnostics::default();
        let e = parse(
            "language: node_js\nnode_js:\n  - \"8\"\n- \"node\"\n",
            &mut d,
        )
        .unwrap_err();
        assert_eq!(e.pos, Pos { line: 4, col: 1 }, "{e:?}");
        let e = parse("a: 1\n- \"node\"\n", &mut d).unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 1 }, "{e:?}");
        // Already at the dash: unchanged (libyaml says 4:3 too).
        let e = parse("language: x\nscript:\n    - a\n  - \"node\"\n", &mut d).unwrap_err();
        assert_eq!(e.pos, Pos { line: 4, col: 3 }, "{e:?}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let mut d = Diagnostics::default();
        let e = parse("a: [1, 2\nb: c\n", &mut d).unwrap_err();
        assert!(e.pos.line >= 1, "{e:?}");
    }
}
