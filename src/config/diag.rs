//! Diagnostics: what the config engine says about a `.travis.yml`, and where.
//!
//! Every message carries a position (1-based line and column), the key path it
//! concerns (`deploy.provider`), a level and a stable code taken from travis-yml's
//! validator (`unknown_key`, `alias_key`, …) so tests and tools can match on it.

use std::fmt;

/// A place in the source text: 1-based line and column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, counting from 1.
    pub line: usize,
    /// Column, counting from 1.
    pub col: usize,
}

/// How serious a diagnostic is. Only errors make `runway lint` exit 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// A normalisation worth knowing about (an alias, a hyphenated key).
    Info,
    /// Probably a mistake; runway goes on with its best reading.
    Warning,
    /// The config is wrong; the affected part is dropped.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        })
    }
}

/// One message about a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Severity.
    pub level: Level,
    /// Where in the file.
    pub pos: Pos,
    /// Dotted key path, e.g. `deploy.on.branch`; empty for the whole file.
    pub path: String,
    /// travis-yml's code for this kind of message, e.g. `unknown_key`.
    pub code: &'static str,
    /// The human text.
    pub message: String,
}

impl Diagnostic {
    /// The diagnostic for programs (`lint --json`, `plan --json`):
    /// `{"level","line","col","path","code","message"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "level": self.level.to_string(), "line": self.pos.line, "col": self.pos.col,
            "path": self.path, "code": self.code, "message": self.message,
        })
    }

    /// Renders the diagnostic as `FILE:LINE:COL: level: key.path: message`.
    pub fn render(&self, file: &str) -> String {
        let Pos { line, col } = self.pos;
        if self.path.is_empty() {
            format!("{file}:{line}:{col}: {}: {}", self.level, self.message)
        } else {
            format!(
                "{file}:{line}:{col}: {}: {}: {}",
                self.level, self.path, self.message
            )
        }
    }
}

/// Collects diagnostics while a config is read.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Records a diagnostic.
    pub fn push(
        &mut self,
        level: Level,
        pos: Pos,
        path: &str,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.items.push(Diagnostic {
            level,
            pos,
            path: path.to_string(),
            code,
            message: message.into(),
        });
    }

    /// Records an info.
    pub fn info(&mut self, pos: Pos, path: &str, code: &'static str, msg: impl Into<String>) {
        self.push(Level::Info, pos, path, code, msg);
    }

    /// Records a warning.
    pub fn warn(&mut self, pos: Pos, path: &str, code: &'static str, msg: impl Into<String>) {
        self.push(Level::Warning, pos, path, code, msg);
    }

    /// Records an error.
    pub fn error(&mut self, pos: Pos, path: &str, code: &'static str, msg: impl Into<String>) {
        self.push(Level::Error, pos, path, code, msg);
    }

    /// Takes over the diagnostics of another collector.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// The diagnostics in file order (stable for equal positions).
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| d.pos);
        // An aliased node (`*anchor`) is read once per use; say things once.
        self.items.dedup_by(|a, b| a == b);
        self.items
    }
}

/// Joins a parent key path and a child key: `join("deploy", "on")` is `deploy.on`.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}
