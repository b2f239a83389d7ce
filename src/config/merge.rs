//! A config sent with an API request (Travis API v3's `POST /repo/…/requests`), put
//! together with the `.travis.yml` at the commit by Travis's merge modes: `replace`
//! (the request's config alone), `merge` (its top-level keys replace the file's) and
//! `deep_merge` (mappings merged key by key at every depth, the request's values
//! winning; anything else replaced). The result is YAML text (flow style) that the
//! config loader reads as it reads a file. Pure.

use super::diag::Pos;
use super::yaml::{self, Entry, Node, Scalar, Value};

/// How the request's config meets the file's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMode {
    /// Only the request's config.
    Replace,
    /// The request's top-level keys replace the file's.
    Merge,
    /// Mappings merged at every depth (Travis's default for API requests).
    #[default]
    DeepMerge,
}

/// The largest request config taken, in bytes (as JSON).
pub const MAX_REQUEST_CONFIG: usize = 256 * 1024;

/// How deep a request's config may nest.
const MAX_DEPTH: usize = 64;

/// A JSON value as a config tree: strings quoted (so `"true"` stays a string), other
/// scalars plain. None when it nests deeper than [`MAX_DEPTH`].
fn node_of(v: &serde_json::Value, depth: usize) -> Option<Node> {
    if depth > MAX_DEPTH {
        return None;
    }
    let pos = Pos { line: 1, col: 1 };
    let value = match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::String(s) => Value::Scalar(Scalar {
            text: s.clone(),
            quoted: true,
        }),
        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => Value::Scalar(Scalar {
            text: v.to_string(),
            quoted: false,
        }),
        serde_json::Value::Array(items) => Value::Seq(
            items
                .iter()
                .map(|i| node_of(i, depth + 1))
                .collect::<Option<_>>()?,
        ),
        serde_json::Value::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| {
                    Some(Entry {
                        key: k.clone(),
                        key_pos: pos,
                        value: node_of(v, depth + 1)?,
                    })
                })
                .collect::<Option<_>>()?,
        ),
    };
    Some(Node { pos, value })
}

/// `over` laid on `base`: each of its keys replaces the base's, or, with `deeper`, is
/// laid on it the same way when both are mappings.
fn lay(base: Node, over: Node, deeper: bool) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut entries), Value::Map(more)) => {
            for e in more {
                match entries.iter_mut().find(|b| b.key == e.key) {
                    Some(b) if deeper => {
                        let pos = b.value.pos;
                        let old = std::mem::replace(
                            &mut b.value,
                            Node {
                                pos,
                                value: Value::Null,
                            },
                        );
                        b.value = lay(old, e.value, true);
                    }
                    Some(b) => b.value = e.value,
                    None => entries.push(e),
                }
            }
            Node {
                pos: base.pos,
                value: Value::Map(entries),
            }
        }
        (_, value) => Node {
            pos: over.pos,
            value,
        },
    }
}

/// A plain scalar written bare when that reads back the same in a flow collection.
fn bare(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+' | '/'))
        && !text.starts_with('-')
}

/// `node` as YAML flow text, each mapping entry on a line of its own.
fn write(node: &Node, out: &mut String) {
    match &node.value {
        Value::Null => out.push_str("null"),
        Value::Scalar(s) if !s.quoted && bare(&s.text) => out.push_str(&s.text),
        Value::Scalar(s) => out.push_str(&serde_json::Value::String(s.text.clone()).to_string()),
        Value::Seq(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push_str("{\n");
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(",\n");
                }
                out.push_str(&serde_json::Value::String(e.key.clone()).to_string());
                out.push_str(": ");
                write(&e.value, out);
            }
            out.push_str("\n}");
        }
    }
}

/// The config a build of an API request reads: the file's text (`file`, None when the
/// commit has no `.travis.yml`) and the request's `config` put together by `mode`.
pub fn merged(
    file: Option<&str>,
    config: &serde_json::Value,
    mode: MergeMode,
) -> Result<String, String> {
    let over = node_of(config, 0)
        .ok_or_else(|| format!("the request's config nests deeper than {MAX_DEPTH} levels"))?;
    if !matches!(over.value, Value::Map(_)) {
        return Err("the request's config is not a mapping".into());
    }
    let mut diags = super::diag::Diagnostics::default();
    let base = match file {
        Some(text) if mode != MergeMode::Replace => yaml::parse(text, &mut diags)
            .map_err(|e| format!(".travis.yml:{}:{}: {}", e.pos.line, e.pos.col, e.message))?,
        _ => Node {
            pos: Pos { line: 1, col: 1 },
            value: Value::Map(Vec::new()),
        },
    };
    let base = if matches!(base.value, Value::Map(_)) {
        base
    } else {
        Node {
            pos: base.pos,
            value: Value::Map(Vec::new()),
        }
    };
    let tree = match mode {
        MergeMode::Replace => over,
        MergeMode::Merge => lay(base, over, false),
        MergeMode::DeepMerge => lay(base, over, true),
    };
    let mut out = String::new();
    write(&tree, &mut out);
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "language: shell\nenv:\n  global:\n    - A=1\nscript: echo file\naddons:\n  apt:\n    packages: [x]\n";

    fn plan(text: &str) -> serde_json::Value {
        let loaded = crate::config::load(text);
        assert!(loaded.unreadable().is_none(), "{text}");
        let mut diags = crate::config::diag::Diagnostics::default();
        let tree = yaml::parse(text, &mut diags).unwrap();
        to_json(&tree)
    }

    fn to_json(n: &Node) -> serde_json::Value {
        match &n.value {
            Value::Null => serde_json::Value::Null,
            Value::Scalar(s) => s.text.clone().into(),
            Value::Seq(i) => i.iter().map(to_json).collect(),
            Value::Map(e) => e
                .iter()
                .map(|e| (e.key.clone(), to_json(&e.value)))
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }

    #[test]
    fn each_mode_as_travis_had_it() {
        let req = serde_json::json!({"script": "echo api", "addons": {"apt": {"sources": ["y"]}}, "env": {"global": ["B=2"]}});
        let replaced = plan(&merged(Some(FILE), &req, MergeMode::Replace).unwrap());
        assert_eq!(replaced.get("language"), None);
        assert_eq!(replaced["script"], "echo api");
        let merged_top = plan(&merged(Some(FILE), &req, MergeMode::Merge).unwrap());
        assert_eq!(merged_top["language"], "shell");
        assert_eq!(
            merged_top["addons"]["apt"].get("packages"),
            None,
            "merge replaces addons whole"
        );
        let deep = plan(&merged(Some(FILE), &req, MergeMode::DeepMerge).unwrap());
        assert_eq!(deep["addons"]["apt"]["packages"], serde_json::json!(["x"]));
        assert_eq!(deep["addons"]["apt"]["sources"], serde_json::json!(["y"]));
        assert_eq!(
            deep["env"]["global"],
            serde_json::json!(["B=2"]),
            "sequences replaced"
        );
        assert_eq!(deep["script"], "echo api");
    }

    #[test]
    fn strings_stay_strings_and_bad_requests_are_refused() {
        let req = serde_json::json!({"env": {"global": ["X=a, b: {c}"]}, "a": "true", "b": true});
        let text = merged(None, &req, MergeMode::DeepMerge).unwrap();
        let mut diags = crate::config::diag::Diagnostics::default();
        let tree = yaml::parse(&text, &mut diags).unwrap();
        let v = to_json(&tree);
        assert_eq!(v["env"]["global"][0], "X=a, b: {c}");
        let map = tree.as_map().unwrap();
        let quoted = |k: &str| match &map.iter().find(|e| e.key == k).unwrap().value.value {
            Value::Scalar(s) => s.quoted,
            _ => panic!(),
        };
        assert!(quoted("a") && !quoted("b"));
        assert!(merged(None, &serde_json::json!([1]), MergeMode::Merge).is_err());
        let mut deep = serde_json::json!({});
        for _ in 0..100 {
            deep = serde_json::json!({ "k": deep });
        }
        assert!(merged(None, &deep, MergeMode::Merge).is_err());
    }
}
