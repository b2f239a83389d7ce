//! The config engine: `.travis.yml` text → a normalised, typed [`Config`] with diagnostics.
//!
//! Reading happens in three stages, as in travis-yml:
//! 1. [`yaml`]: text → a tree of nodes with positions (anchors, merges, duplicates);
//! 2. [`schema`]: that tree → one canonical shape, driven by Travis's JSON schema,
//!    with aliases, typos, unknown and deprecated keys reported;
//! 3. [`model`]: small typed readers over the canonical tree.
//!
//! Everything here is pure: no I/O beyond the text handed in.

pub mod condition;
pub mod diag;
pub mod model;
pub mod schema;
pub mod yaml;

use diag::{Diagnostic, Diagnostics, Level, Pos};
use yaml::Node;

/// A normalised `.travis.yml`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The canonical tree (a map). Job configs share its shape.
    pub root: Node,
}

/// A config and what was said about it while reading.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The config; empty when the YAML could not be read.
    pub config: Config,
    /// Diagnostics in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.level == Level::Error)
    }
}

/// Reads a `.travis.yml` text. Never panics; a YAML syntax error becomes an
/// error diagnostic and an empty config.
pub fn load(text: &str) -> Loaded {
    let mut diags = Diagnostics::default();
    let root = match yaml::parse(text, &mut diags) {
        Ok(tree) => {
            let root = schema::normalize(&tree, &mut diags);
            model::check_env(&root, &mut diags);
            model::check_notifications(&root, &mut diags);
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
