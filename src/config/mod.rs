//! The config engine: `.travis.yml` text → a normalised, typed [`Config`] with diagnostics.
//!
//! Reading happens in three stages, as in travis-yml:
//! 1. [`yaml`]: text → a tree of nodes with positions (anchors, merges, duplicates);
//! 2. [`schema`]: that tree → one canonical shape, driven by Travis's JSON schema,
//!    with aliases, typos, unknown and deprecated keys reported;
//! 3. [`model`]: small typed readers over the canonical tree.
//!
//! Everything here is pure but [`read_file`], which reads at most
//! [`MAX_CONFIG_BYTES`] + 1 bytes of a file (so `/dev/zero` is a size error, not a hang).
//!
//! Every input is bounded (the limits are documented in the README, "Limits"): the file
//! size ([`MAX_CONFIG_BYTES`]), UTF-8 text without NUL bytes ([`decode`]), YAML nesting
//! and alias expansion ([`yaml::MAX_DEPTH`], [`yaml::MAX_NODES`],
//! [`yaml::MAX_EXPANDED_BYTES`]) and `if:` nesting ([`condition::MAX_DEPTH`]).

pub mod condition;
pub mod diag;
pub mod merge;
pub mod model;
pub mod schema;
pub mod views;
pub mod yaml;

use diag::{Diagnostic, Diagnostics, Level, Pos};
use yaml::Node;

/// A normalised `.travis.yml`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The canonical tree (a map). Job configs share its shape.
    pub root: Node,
}

/// The largest `.travis.yml` runway reads (the largest of 7,169 real ones is 120 KB).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// A config and what was said about it while reading.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The config; empty when the YAML could not be read.
    pub config: Config,
    /// Diagnostics in file order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Diagnostic codes that mean the file could not be read at all (no config).
const UNREADABLE: &[&str] = &["syntax", "encoding", "too_large", "limit"];

impl Loaded {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.level == Level::Error)
    }

    /// The error that made the whole file unreadable (not text, too large, not
    /// YAML, past a limit), if any: then the config is empty.
    pub fn unreadable(&self) -> Option<&Diagnostic> {
        self.diagnostics
            .iter()
            .find(|d| d.level == Level::Error && UNREADABLE.contains(&d.code))
    }
}

/// Reads at most [`MAX_CONFIG_BYTES`] + 1 bytes of `path` (one more says "too large").
pub fn read_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The text of a `.travis.yml`: at most [`MAX_CONFIG_BYTES`], UTF-8, no NUL byte.
/// The error says where the first offending byte is.
pub fn decode(bytes: &[u8]) -> Result<&str, Diagnostic> {
    let refuse = |pos: Pos, code: &'static str, message: String| Diagnostic {
        level: Level::Error,
        pos,
        path: String::new(),
        code,
        message,
    };
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(refuse(
            Pos { line: 1, col: 1 },
            "too_large",
            format!(
                "the file is larger than {} MiB, the most runway reads",
                MAX_CONFIG_BYTES >> 20
            ),
        ));
    }
    let (valid, bad) = match std::str::from_utf8(bytes) {
        Ok(text) => match text.find('\0') {
            None => return Ok(text),
            Some(at) => (at, None),
        },
        Err(e) => (e.valid_up_to(), Some(bytes[e.valid_up_to()])),
    };
    // Every byte before `valid` is UTF-8 text: count lines and characters.
    let before = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    let pos = Pos { line, col };
    Err(match bad {
        Some(byte) => refuse(
            pos,
            "encoding",
            format!("invalid UTF-8 (byte 0x{byte:02X}): the file must be UTF-8 text"),
        ),
        None => refuse(
            pos,
            "encoding",
            "a NUL byte: this is binary data, not text".into(),
        ),
    })
}

/// Reads a `.travis.yml` as bytes: [`decode`], then [`load`]. A file that is not
/// text is one error diagnostic and an empty config.
pub fn load_bytes(bytes: &[u8]) -> Loaded {
    match decode(bytes) {
        Ok(text) => load(text),
        Err(d) => Loaded {
            config: Config {
                root: model::map_node(Pos { line: 1, col: 1 }, Vec::new()),
            },
            diagnostics: vec![d],
        },
    }
}

/// Reads a `.travis.yml` text. Never panics; a YAML syntax error becomes an
/// error diagnostic and an empty config.
pub fn load(text: &str) -> Loaded {
    let mut diags = Diagnostics::default();
    if text.len() > MAX_CONFIG_BYTES {
        return load_bytes(text.as_bytes());
    }
    let root = match yaml::parse(text, &mut diags) {
        Ok(tree) => {
            let root = schema::normalize(&tree, &mut diags);
            model::check_env(&root, &mut diags);
            model::check_notifications(&root, &mut diags);
            model::check_addons(&root, &mut diags);
            if tree
                .as_map()
                .is_some_and(|m| !m.iter().any(|e| e.key == "language"))
            {
                diags.info(
                    Pos { line: 1, col: 1 },
                    "language",
                    "default",
                    "missing language, using the default ruby",
                );
            }
            root
        }
        Err(e) if e.limit => {
            diags.error(e.pos, "", "limit", e.message);
            model::map_node(Pos { line: 1, col: 1 }, Vec::new())
        }
        Err(e) => {
            diags.error(e.pos, "", "syntax", format!("invalid YAML: {}", e.message));
            model::map_node(Pos { line: 1, col: 1 }, Vec::new())
        }
    };
    Loaded {
        config: Config { root },
        diagnostics: diags.into_sorted(),
    }
}

impl Config {
    /// The value under a root key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.root.get(key)
    }

    /// The build language (canonical name), `ruby` when unset, as on Travis.
    pub fn language(&self) -> String {
        model::str_of(self.get("language"))
            .map(schema::canonical_language)
            .unwrap_or_else(|| "ruby".to_string())
    }
}
