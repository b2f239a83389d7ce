//! Normalisation driven by Travis's own JSON schema (travis-yml, MIT, embedded).
//!
//! This is the middle stage of reading a config: the YAML tree from [`super::yaml`] is
//! walked next to the schema of every key Travis understood, and rewritten into one
//! canonical form while diagnostics are collected, as travis-yml's normaliser did:
//!
//! - keys: aliases (`matrix` → `jobs`), hyphens (`before-install`), typos repaired
//!   (`barnches` → `branches`), unknown keys warned about (with the place where such a
//!   key does belong, if any) and dropped, deprecated keys warned about;
//! - shapes: a scalar where a list is expected becomes a one-item list, a scalar where
//!   a map is expected becomes the map's prefix key (`branches: x` → `{only: [x]}`), a
//!   list where a scalar is expected keeps its first value;
//! - values: enum values checked, downcased and de-aliased (`jvm` → `java`), `if:`
//!   conditions parsed, plain text in secret fields flagged, language-specific keys
//!   dropped where the language does not use them.
//!
//! The typed layer ([`super::model`]) then reads only canonical shapes.

use serde_json::Value as J;
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

use super::condition;
use super::diag::{Diagnostics, Level, Pos, join};
use super::yaml::{Entry, Node, Value};

// Travis's schema as build.rs leaves it: `ROOT` (without its definitions) and `GROUPS`
// (each group of definitions apart, parsed when first reached).
include!(concat!(env!("OUT_DIR"), "/schema.rs"));

/// Travis's schema (its groups of definitions parsed when first reached: a config
/// without a deploy never parses the deploy providers), with indexes made when first
/// asked.
struct Schema {
    root: &'static J,
    /// What the walk of a config starts from: the root's `allOf`.
    top: &'static J,
    /// `definitions.<name>`: each group's text and, once reached, its value.
    groups: Vec<(&'static str, &'static str, OnceLock<&'static J>)>,
    /// key name → titles of the schema objects that accept it (made when a key is
    /// first found unknown: most configs have none).
    homes: OnceLock<HashMap<String, BTreeSet<String>>>,
    /// Every alias of any key anywhere: a key not in here is no alias, and the
    /// search through each property's aliases is skipped (an unknown key costs
    /// O(1) there, so 50,000 of them are linear). Made when first asked.
    any_alias: OnceLock<std::collections::HashSet<String>>,
}

/// Parsed once for the life of the process; 'static so that what the walk holds can
/// point in.
fn parse(text: &str) -> &'static J {
    Box::leak(Box::new(
        serde_json::from_str(text).expect("the embedded schema is valid JSON"),
    ))
}

fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(Schema::new)
}

/// Parses the schema on a thread of its own, so that the first config read finds it
/// ready (or waits only for the rest of it): the root and the groups every config
/// reaches (the types and the languages), not the deploy providers', notifications',
/// addons' and language support's definitions.
pub fn parse_ahead() {
    std::thread::spawn(|| {
        let s = schema();
        for g in ["type", "language"] {
            s.group(g);
        }
    });
}

fn index_aliases(v: &J, out: &mut std::collections::HashSet<String>) {
    match v {
        J::Object(o) => {
            if let Some(J::Array(a)) = o.get("aliases") {
                out.extend(a.iter().filter_map(J::as_str).map(str::to_string));
            }
            o.values().for_each(|c| index_aliases(c, out));
        }
        J::Array(a) => a.iter().for_each(|c| index_aliases(c, out)),
        _ => {}
    }
}

fn index_homes(v: &J, owner: &str, homes: &mut HashMap<String, BTreeSet<String>>) {
    match v {
        J::Object(o) => {
            let owner = o.get("$id").and_then(J::as_str).unwrap_or(owner);
            if let Some(J::Object(props)) = o.get("properties") {
                for (k, p) in props {
                    homes
                        .entry(k.clone())
                        .or_default()
                        .insert(owner.to_string());
                    index_homes(p, owner, homes);
                }
            }
            for (k, child) in o {
                if k != "properties" {
                    index_homes(child, owner, homes);
                }
            }
        }
        J::Array(a) => a.iter().for_each(|c| index_homes(c, owner, homes)),
        _ => {}
    }
}

impl Schema {
    /// The root parsed; the groups of definitions not yet.
    fn new() -> Schema {
        let root = parse(ROOT);
        let top = Box::leak(Box::new(J::Object(
            [(
                "allOf".to_string(),
                root.get("allOf").cloned().unwrap_or(J::Null),
            )]
            .into_iter()
            .collect(),
        )));
        Schema {
            root,
            top,
            groups: GROUPS
                .iter()
                .map(|(name, text)| (*name, *text, OnceLock::new()))
                .collect(),
            homes: OnceLock::new(),
            any_alias: OnceLock::new(),
        }
    }

    /// Where each key name is valid ([`Schema::homes`]).
    fn homes(&self) -> &HashMap<String, BTreeSet<String>> {
        self.homes.get_or_init(|| {
            let mut homes = HashMap::new();
            for (name, _, _) in &self.groups {
                index_homes(self.group(name), "", &mut homes);
            }
            homes
        })
    }

    /// Every alias anywhere ([`Schema::any_alias`]).
    fn any_alias(&self) -> &std::collections::HashSet<String> {
        self.any_alias.get_or_init(|| {
            let mut all = std::collections::HashSet::new();
            index_aliases(self.root, &mut all);
            for (name, _, _) in &self.groups {
                index_aliases(self.group(name), &mut all);
            }
            all
        })
    }

    /// The group of definitions `name` (`definitions.<name>`), parsed when first asked
    /// for; `null` for a name the schema has not.
    fn group(&self, name: &str) -> &'static J {
        static NONE: J = J::Null;
        match self.groups.iter().find(|(n, _, _)| *n == name) {
            Some((_, text, parsed)) => parsed.get_or_init(|| parse(text)),
            None => &NONE,
        }
    }

    /// Follows `$ref` links to the definition they name (`#/definitions/<group>/…`, or
    /// a path from the root).
    fn resolve<'a>(&'a self, mut s: &'a J) -> &'a J {
        while let Some(r) = s.get("$ref").and_then(J::as_str) {
            let mut parts = r.trim_start_matches("#/").split('/');
            let mut target = match (parts.next(), parts.clone().next()) {
                (Some("definitions"), Some(group)) => {
                    parts.next();
                    self.group(group)
                }
                (first, _) => &self.root[first.unwrap_or("")],
            };
            for part in parts {
                target = &target[part];
            }
            s = target;
        }
        s
    }

    /// The alternatives of a schema, with nested `anyOf`s and refs flattened.
    fn alts<'a>(&'a self, s: &'a J, out: &mut Vec<&'a J>) {
        let s = self.resolve(s);
        match s.get("anyOf").and_then(J::as_array) {
            Some(list) => list.iter().for_each(|a| self.alts(a, out)),
            None => out.push(s),
        }
    }

    /// The properties of an object schema, through `allOf` and object alternatives.
    fn props<'a>(&'a self, s: &'a J, out: &mut Vec<(&'a str, &'a J)>) {
        let s = self.resolve(s);
        if let Some(J::Object(p)) = s.get("properties") {
            out.extend(p.iter().map(|(k, v)| (k.as_str(), v)));
        }
        for key in ["allOf", "anyOf"] {
            if let Some(list) = s.get(key).and_then(J::as_array) {
                list.iter().for_each(|part| self.props(part, out));
            }
        }
    }

    /// Every alias a property answers to, from the property and its definition.
    fn aliases<'a>(&'a self, prop: &'a J) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut push = |s: &'a J| {
            if let Some(a) = s.get("aliases").and_then(J::as_array) {
                out.extend(a.iter().filter_map(J::as_str));
            }
        };
        push(prop);
        let mut alts = Vec::new();
        self.alts(prop, &mut alts);
        alts.into_iter().for_each(&mut push);
        out
    }
}

fn kind_of(s: &J) -> &str {
    match s.get("type").and_then(J::as_str) {
        Some(t) => t,
        None if s.get("properties").is_some()
            || s.get("allOf").is_some()
            || s.get("patternProperties").is_some() =>
        {
            "object"
        }
        None => "",
    }
}

fn id_of(s: &J) -> &str {
    s.get("$id").and_then(J::as_str).unwrap_or("")
}

/// What the walk knows about where it is.
struct Ctx<'d> {
    diags: &'d mut Diagnostics,
    /// The language in force (root or include), for language-only keys.
    language: Option<String>,
}

/// Normalises a whole config tree. The root must be a map (else an error).
pub fn normalize(root: &Node, diags: &mut Diagnostics) -> Node {
    let s = schema();
    if !matches!(root.value, Value::Map(_)) {
        if !root.is_null() {
            diags.error(
                root.pos,
                "",
                "invalid_type",
                format!("expected a map of keys at the top, found a {}", root.kind()),
            );
        }
        return Node::new(root.pos, Value::Map(Vec::new()));
    }
    let mut ctx = Ctx {
        diags,
        language: None,
    };
    norm_map(s, root, s.top, "", &mut ctx).unwrap_or_else(|| root.clone())
}

/// Normalises `node` against schema `sch`. `None` means "drop this value".
/// The forms a schema allows a value: the alternatives, and among them the object, the
/// array and the scalars.
struct Forms<'s> {
    all: Vec<&'s J>,
    object: Option<&'s J>,
    array: Option<&'s J>,
    scalar: Vec<&'s J>,
}

impl<'s> Forms<'s> {
    fn of(s: &'s Schema, sch: &'s J) -> Forms<'s> {
        let mut all = Vec::new();
        s.alts(sch, &mut all);
        Forms {
            object: all.iter().copied().find(|a| kind_of(a) == "object"),
            array: all.iter().copied().find(|a| kind_of(a) == "array"),
            scalar: all
                .iter()
                .copied()
                .filter(|a| matches!(kind_of(a), "string" | "number" | "boolean"))
                .collect(),
            all,
        }
    }

    /// True when `j` is the first form (the normal one).
    fn first(&self, j: &J) -> bool {
        self.all.first().is_some_and(|f| std::ptr::eq(*f, j))
    }
}

/// Normalises a value to the form its schema prefers, saying what was repaired or
/// dropped.
fn norm(s: &Schema, node: &Node, sch: &J, path: &str, ctx: &mut Ctx) -> Option<Node> {
    if id_of(s.resolve(sch)) == "cache"
        && let Some(map) = cache_names_to_map(node)
    {
        return norm_map(s, &map, sch, path, ctx);
    }
    let forms = Forms::of(s, sch);
    match &node.value {
        Value::Null => None,
        Value::Map(_) => norm_a_map(s, node, sch, &forms, path, ctx),
        Value::Seq(items) => norm_a_seq(s, node, items, sch, &forms, path, ctx),
        Value::Scalar(_) => norm_a_scalar(s, node, sch, &forms, path, ctx),
    }
}

/// A map: itself where a map is the normal form, a one-item list where a list of maps
/// is (`deploy: {…}`).
fn norm_a_map(
    s: &Schema,
    node: &Node,
    sch: &J,
    forms: &Forms,
    path: &str,
    ctx: &mut Ctx,
) -> Option<Node> {
    let list_of_maps = forms.array.filter(|a| has_object_items(s, a));
    let list_first = list_of_maps.is_some_and(|a| forms.first(a));
    if let Some(arr) = list_of_maps.filter(|_| list_first || forms.object.is_none()) {
        let item = norm(s, node, &arr["items"], path, ctx)?;
        return Some(Node::new(node.pos, Value::Seq(vec![item])));
    }
    if let Some(obj) = forms.object {
        if let Some(prefixed) = prefix_env_map(obj, node) {
            return norm_map(s, &prefixed, sch, path, ctx);
        }
        return norm_map(s, node, sch, path, ctx);
    }
    ctx.diags.error(
        node.pos,
        path,
        "invalid_type",
        format!(
            "dropping unexpected map, expected {}",
            expected_name(&forms.all)
        ),
    );
    None
}

/// A list: each item normalised where a list is allowed; wrapped under the prefix key
/// where a map with one is the normal form (`env: [..]` is `{jobs: [..]}`, `jobs: [..]`
/// is `{include: [..]}`); else its first value, with a warning.
fn norm_a_seq(
    s: &Schema,
    node: &Node,
    items: &[Node],
    sch: &J,
    forms: &Forms,
    path: &str,
    ctx: &mut Ctx,
) -> Option<Node> {
    if let Some(obj) = forms.object.filter(|o| forms.first(o))
        && let Some(key) = prefix_key(obj, false)
    {
        return norm_map(s, &wrap(node, key), sch, path, ctx);
    }
    if let Some(arr) = forms.array {
        let out: Vec<Node> = items
            .iter()
            .filter_map(|i| norm(s, i, &arr["items"], path, ctx))
            .collect();
        return Some(Node::new(node.pos, Value::Seq(out)));
    }
    if let Some(key) = forms.object.and_then(|o| prefix_key(o, false)) {
        return norm_map(s, &wrap(node, key), sch, path, ctx);
    }
    let first = items.first()?;
    ctx.diags.warn(
        node.pos,
        path,
        "unexpected_seq",
        "unexpected list, using the first value",
    );
    norm(s, first, sch, path, ctx)
}

/// A scalar: itself where a scalar (or a boolean) is allowed, a one-item list where a
/// list is, wrapped under a prefix key where a map with one is; else dropped.
fn norm_a_scalar(
    s: &Schema,
    node: &Node,
    sch: &J,
    forms: &Forms,
    path: &str,
    ctx: &mut Ctx,
) -> Option<Node> {
    let is_bool = node.as_bool().is_some();
    if is_bool && forms.scalar.iter().any(|a| kind_of(a) == "boolean") {
        return Some(node.clone());
    }
    if let Some(obj) = forms.object.filter(|o| forms.first(o))
        && let Some(key) = prefix_key(obj, true)
    {
        return norm_map(s, &wrap(node, key), sch, path, ctx);
    }
    if let Some(arr) = forms.array {
        let item = norm(s, node, &arr["items"], path, ctx)?;
        return Some(Node::new(node.pos, Value::Seq(vec![item])));
    }
    if let Some(first) = forms.scalar.first() {
        return norm_scalar(node, &forms.scalar, first, path, ctx);
    }
    if let Some(key) = forms.object.and_then(|o| prefix_key(o, true)) {
        return norm_map(s, &wrap(node, key), sch, path, ctx);
    }
    let (level, what) = if is_bool {
        (Level::Warning, "boolean")
    } else {
        (Level::Error, "string")
    };
    ctx.diags.push(
        level,
        node.pos,
        path,
        "invalid_type",
        format!(
            "dropping unexpected {what}, expected {}",
            expected_name(&forms.all)
        ),
    );
    None
}

/// travis-yml's `cache` change: `cache: pip` and `cache: [pip, npm]` mean
/// `{pip: true, npm: true}`.
fn cache_names_to_map(node: &Node) -> Option<Node> {
    let names: Vec<&Node> = match &node.value {
        Value::Scalar(_) if node.as_bool().is_none() => vec![node],
        Value::Seq(items) if items.iter().all(|i| i.as_str().is_some()) => items.iter().collect(),
        _ => return None,
    };
    let entries = names
        .into_iter()
        .map(|n| Entry {
            key: n.as_str().unwrap_or_default().to_string(),
            key_pos: n.pos,
            value: Node::scalar(n.pos, "true"),
        })
        .collect();
    Some(Node::new(node.pos, Value::Map(entries)))
}

fn has_object_items(s: &Schema, arr: &J) -> bool {
    let mut alts = Vec::new();
    s.alts(&arr["items"], &mut alts);
    alts.iter().any(|a| kind_of(a) == "object")
}

fn expected_name(alts: &[&J]) -> String {
    let mut kinds: Vec<&str> = alts
        .iter()
        .map(|a| match kind_of(a) {
            "string" | "number" => "str",
            "boolean" => "bool",
            "array" => "list",
            "object" => "map",
            _ => "str",
        })
        .collect();
    kinds.dedup();
    kinds.join(" or ")
}

fn prefix_key(obj: &J, scalar: bool) -> Option<&str> {
    let Some(p) = obj.get("prefix") else {
        // `allOf: [{…, prefix}, …]` keeps the prefix in its first part.
        return obj
            .get("allOf")?
            .as_array()?
            .iter()
            .find_map(|part| prefix_key(part, scalar));
    };
    let only_str = p
        .get("only")
        .and_then(J::as_array)
        .is_some_and(|o| o.iter().any(|v| v == "str"));
    if only_str && !scalar {
        return None;
    }
    p.get("key").and_then(J::as_str)
}

/// True when `obj` has patternProperties, `node` has entries, and every key matches a
/// pattern with a value that is a string, number, boolean or `{secure: …}` (what
/// travis-yml's `env_var` map takes; anything else is not that map).
fn takes_every_entry(obj: &J, node: &Node) -> bool {
    let Some(patterns) = obj.get("patternProperties").and_then(J::as_object) else {
        return false;
    };
    let Some(entries) = node.as_map().filter(|e| !e.is_empty()) else {
        return false;
    };
    let regexes: Vec<fancy_regex::Regex> = patterns
        .keys()
        .filter_map(|p| fancy_regex::Regex::new(p).ok())
        .collect();
    entries.iter().all(|e| {
        is_env_value(&e.value) && regexes.iter().any(|r| r.is_match(&e.key).unwrap_or(false))
    })
}

/// A value an env var map takes: a string, number or boolean, or `{secure: …}`.
fn is_env_value(v: &Node) -> bool {
    match &v.value {
        Value::Scalar(_) | Value::Null => true,
        Value::Map(m) => m.len() == 1 && v.get("secure").is_some(),
        Value::Seq(_) => false,
    }
}

/// travis-yml's `Change::Prefix#prefix_map` for `env`: a map with keys other than
/// `global` and `jobs` (`env: {FOO: foo}`) puts those under `jobs`, so it is one job's
/// vars (spec/travis/yml/accept/env_spec.rb, "given a map"). Other prefixed types keep
/// their unknown keys (travis-yml prefixes them only when the result validates, which
/// for them it does not).
fn prefix_env_map(obj: &J, node: &Node) -> Option<Node> {
    let props = obj.get("properties")?.as_object()?;
    if prefix_key(obj, false) != Some("jobs") || !props.contains_key("global") {
        return None;
    }
    let entries = node.as_map()?;
    let known = |k: &str| matches!(k, "global" | "jobs" | "matrix");
    if entries.iter().any(|e| e.key == "jobs") || entries.iter().all(|e| known(&e.key)) {
        return None;
    }
    let (kept, moved): (Vec<Entry>, Vec<Entry>) =
        entries.iter().cloned().partition(|e| known(&e.key));
    // travis-yml keeps the prefixed map only when it validates: every moved entry
    // must be an env var (misplaced keys such as `env: {include: [..]}` stay unknown).
    if !moved.iter().all(|e| is_env_value(&e.value)) {
        return None;
    }
    let mut out = vec![Entry {
        key: "jobs".into(),
        key_pos: moved[0].key_pos,
        value: Node::new(moved[0].key_pos, Value::Map(moved)),
    }];
    out.extend(kept);
    Some(Node::new(node.pos, Value::Map(out)))
}

fn wrap(node: &Node, key: &str) -> Node {
    Node::new(
        node.pos,
        Value::Map(vec![Entry {
            key: key.to_string(),
            key_pos: node.pos,
            value: node.clone(),
        }]),
    )
}

/// Enum keys whose unknown values are errors (docs/semantics.md §9); other enums warn.
const STRICT_ENUMS: &[&str] = &[
    "os",
    "language",
    "revision_type",
    "file_exists_behavior",
    "strategy",
];

fn last_key(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Checks a scalar against enum values, with downcasing and value aliases.
fn norm_scalar(node: &Node, alts: &[&J], first: &J, path: &str, ctx: &mut Ctx) -> Option<Node> {
    let text = node.as_str().unwrap_or_default();
    let Some(enum_vals) = alts
        .iter()
        .find_map(|a| a.get("enum").and_then(J::as_array))
    else {
        return Some(node.clone());
    };
    let fold = first.get("downcase").is_some() || first.get("ignore_case").is_some();
    let wanted = if fold {
        text.to_lowercase()
    } else {
        text.to_string()
    };
    let values: Vec<&str> = enum_vals.iter().filter_map(J::as_str).collect();
    let out = |v: &str| Node::scalar(node.pos, v);
    if values.contains(&wanted.as_str()) {
        if wanted != text {
            ctx.diags.info(
                node.pos,
                path,
                "downcase",
                format!("downcasing \"{text}\" to \"{wanted}\""),
            );
        }
        return Some(out(&wanted));
    }
    if enum_vals.iter().all(|v| v.is_boolean()) {
        return Some(node.clone());
    }
    if let Some(J::Object(vals)) = first.get("values") {
        for (canonical, meta) in vals {
            let aliases = meta.get("aliases").and_then(J::as_array);
            if aliases.is_some_and(|a| a.iter().any(|x| x.as_str() == Some(wanted.as_str()))) {
                ctx.diags.info(
                    node.pos,
                    path,
                    "alias_value",
                    format!("\"{text}\" is an alias for \"{canonical}\", using \"{canonical}\""),
                );
                return Some(out(canonical));
            }
        }
    }
    if first.get("strict") == Some(&J::Bool(false)) {
        return Some(node.clone());
    }
    // Travis's internal test values (`__connie__`, …) are accepted but never suggested.
    let values: Vec<&str> = values
        .into_iter()
        .filter(|v| !v.starts_with("__"))
        .collect();
    if !STRICT_ENUMS.contains(&id_of(first)) && !STRICT_ENUMS.contains(&last_key(path)) {
        ctx.diags.warn(
            node.pos,
            path,
            "unknown_value",
            format!("unknown value \"{text}\" (known: {})", values.join(", ")),
        );
        return Some(node.clone());
    }
    let hint = did_you_mean(&wanted, values.iter().copied())
        .map(|s| format!("; did you mean \"{s}\"?"))
        .unwrap_or_default();
    ctx.diags.error(
        node.pos,
        path,
        "unknown_value",
        format!(
            "unknown value \"{text}\"{hint} (expected one of: {})",
            values.join(", ")
        ),
    );
    None
}

/// Chooses among object alternatives: a deploy provider by its `provider` value.
fn choose_object<'a>(
    s: &'a Schema,
    node: &Node,
    objects: &[&'a J],
    path: &str,
    ctx: &mut Ctx,
) -> Option<&'a J> {
    let discriminated: Vec<(&J, &str)> = objects
        .iter()
        .filter_map(|o| {
            let p = o.get("properties")?.get("provider")?;
            let v = p.get("enum")?.as_array()?.first()?.as_str()?;
            Some((*o, v))
        })
        .collect();
    if discriminated.len() < 2 {
        if node.get("secure").is_some()
            && let Some(sec) = objects
                .iter()
                .find(|o| o.get("properties").and_then(|p| p.get("secure")).is_some())
        {
            return Some(sec);
        }
        // An object that names one of the node's keys; else, for a map of names
        // (`env: [{FOO: bar}]`, travis-yml's `env_var` map), the one whose
        // patternProperties take any key; else the first with fixed keys.
        let keys: Vec<&str> = node
            .as_map()
            .unwrap_or_default()
            .iter()
            .map(|e| e.key.as_str())
            .collect();
        let names_a_key = |o: &&J| {
            o.get("properties").and_then(J::as_object).is_some_and(|p| {
                keys.iter().any(|k| {
                    p.contains_key(*k) || p.values().any(|prop| s.aliases(prop).contains(k))
                })
            })
        };
        if let Some(o) = objects.iter().copied().find(names_a_key) {
            return Some(o);
        }
        if let Some(o) = objects.iter().copied().find(|o| takes_every_entry(o, node)) {
            return Some(o);
        }
        return objects
            .iter()
            .copied()
            .find(|o| o.get("patternProperties").is_none())
            .or(objects.first().copied());
    }
    let Some(provider) = node.get("provider") else {
        ctx.diags.error(
            node.pos,
            path,
            "required",
            "missing required key \"provider\"; this deploy is dropped",
        );
        return None;
    };
    let name = provider.as_str().unwrap_or_default();
    let wanted = name.to_lowercase().replace('-', "_");
    if let Some((o, _)) = discriminated.iter().find(|(_, v)| *v == wanted) {
        return Some(o);
    }
    let hint = did_you_mean(&wanted, discriminated.iter().map(|(_, v)| *v))
        .map(|s| format!("; did you mean \"{s}\"?"))
        .unwrap_or_default();
    ctx.diags.error(
        provider.pos,
        &join(path, "provider"),
        "unknown_value",
        format!("unknown provider \"{name}\"{hint}"),
    );
    None
}

/// Normalises a map against the object schema it matches: each key resolved (aliases,
/// misspellings), checked for its language and deprecation, its value normalised, and
/// placed as travis-yml places repeats and aliases.
fn norm_map(s: &Schema, node: &Node, sch: &J, path: &str, ctx: &mut Ctx) -> Option<Node> {
    let mut alts = Vec::new();
    s.alts(sch, &mut alts);
    let objects: Vec<&J> = alts
        .iter()
        .copied()
        .filter(|a| kind_of(a) == "object")
        .collect();
    let obj = choose_object(s, node, &objects, path, ctx)?;
    let mut props = Vec::new();
    s.props(obj, &mut props);
    let open = obj.get("patternProperties").is_some();
    let entries = node.as_map().unwrap_or_default();

    // The language decides which language-specific keys apply below this map.
    let saved_language = ctx.language.clone();
    if let Some(lang) = entries.iter().find(|e| e.key == "language") {
        ctx.language = lang.value.as_str().map(canonical_language);
    }

    let mut out: Vec<Entry> = Vec::new();
    let mut moved_keys: Vec<&str> = Vec::new();
    for e in entries {
        if open && !props.iter().any(|(k, _)| *k == e.key) {
            out.extend(open_entry(e, path, ctx));
            continue;
        }
        let Some((name, value)) = norm_entry(s, e, &props, obj, path, ctx) else {
            continue;
        };
        place(&mut out, &mut moved_keys, e, name, value, path, ctx);
    }
    ctx.language = saved_language;
    Some(Node::new(node.pos, Value::Map(out)))
}

/// A key of an open map (`patternProperties`: env vars and the like): a string or a
/// `secure:` value; anything else is dropped with an error.
fn open_entry(e: &Entry, path: &str, ctx: &mut Ctx) -> Option<Entry> {
    let value = match &e.value.value {
        Value::Map(_) if e.value.get("secure").is_some() => e.value.clone(),
        Value::Map(_) | Value::Seq(_) => {
            ctx.diags.error(
                e.value.pos,
                &join(path, &e.key),
                "invalid_type",
                format!("dropping unexpected {}, expected str", e.value.kind()),
            );
            return None;
        }
        _ => e.value.clone(),
    };
    Some(Entry {
        key: e.key.clone(),
        key_pos: e.key_pos,
        value,
    })
}

/// A known key: its canonical name and normalised value, or `None` (said why) when it
/// is unknown, not used by the language, empty or invalid.
fn norm_entry<'s>(
    s: &'s Schema,
    e: &Entry,
    props: &[(&'s str, &'s J)],
    obj: &'s J,
    path: &str,
    ctx: &mut Ctx,
) -> Option<(&'s str, Node)> {
    let (name, prop) = resolve_key(s, &e.key, e.key_pos, props, path, obj, ctx)?;
    // Several languages may define the same key (`node_js` for node_js and elm):
    // take the definition that applies to the language in force.
    let prop = props
        .iter()
        .filter(|(n, _)| *n == name)
        .map(|(_, p)| *p)
        .find(|p| supports(p, ctx.language.as_deref()))
        .unwrap_or(prop);
    let key_path = join(path, name);
    if let Some(msg) = deprecation(s, prop) {
        ctx.diags.warn(
            e.key_pos,
            &key_path,
            "deprecated_key",
            format!("deprecated key \"{name}\": {msg}"),
        );
    }
    if !supports(prop, ctx.language.as_deref()) {
        let lang = ctx.language.clone().unwrap_or_else(|| "ruby".into());
        ctx.diags.warn(
            e.key_pos,
            &key_path,
            "unsupported",
            format!("\"{name}\" is not used by language {lang}; it is ignored"),
        );
        return None;
    }
    if e.value.is_null() {
        ctx.diags.warn(
            e.key_pos,
            &key_path,
            "empty",
            format!("\"{name}\" is empty; it is ignored"),
        );
        return None;
    }
    check_value(s, &e.value, prop, &key_path, ctx);
    Some((name, norm(s, &e.value, prop, &key_path, ctx)?))
}

/// Places a normalised entry as travis-yml does: an alias (or a repaired spelling) is
/// moved onto its key, replacing the key's value whichever comes first in the file; a
/// plain repeat of the key cannot replace a moved alias.
fn place<'s>(
    out: &mut Vec<Entry>,
    moved_keys: &mut Vec<&'s str>,
    e: &Entry,
    name: &'s str,
    value: Node,
    path: &str,
    ctx: &mut Ctx,
) {
    let key_path = join(path, name);
    let moved = name != e.key;
    if let Some(i) = out.iter().position(|o| o.key == name) {
        if !moved && moved_keys.contains(&name) {
            ctx.diags.warn(
                e.key_pos,
                &key_path,
                "overwrite",
                format!("\"{name}\" is also given under another spelling, which wins; this one is ignored"),
            );
            return;
        }
        ctx.diags.warn(
            e.key_pos,
            &key_path,
            "overwrite",
            format!(
                "\"{}\" replaces the \"{name}\" given on line {}",
                e.key, out[i].key_pos.line
            ),
        );
        out.remove(i);
    }
    if moved {
        moved_keys.push(name);
    }
    out.push(Entry {
        key: name.to_string(),
        key_pos: e.key_pos,
        value,
    });
}

/// False when a key is language-specific and the language in force (default ruby) is not one of its.
fn supports(prop: &J, language: Option<&str>) -> bool {
    let lang = language.unwrap_or("ruby");
    match prop
        .get("only")
        .and_then(|o| o.get("language"))
        .and_then(J::as_array)
    {
        Some(only) => only.iter().any(|l| l.as_str() == Some(lang)),
        None => true,
    }
}

/// Checks that need the value as written: conditions and secrets.
fn check_value(s: &Schema, value: &Node, prop: &J, path: &str, ctx: &mut Ctx) {
    let def = s.resolve(prop);
    match id_of(def) {
        "condition" => {
            if let Some(text) = value.as_str()
                && let Err(e) = condition::parse(text)
            {
                let quoted = condition::excerpt(text, e.offset);
                if e.limit {
                    ctx.diags.error(
                        value.pos,
                        path,
                        "limit",
                        format!("condition \"{quoted}\": {e}; runway reads at most that"),
                    );
                } else {
                    ctx.diags.error(
                        value.pos,
                        path,
                        "invalid_condition",
                        format!("invalid condition \"{quoted}\": {e}; it counts as false"),
                    );
                }
            }
        }
        "secure" if prop.get("strict") != Some(&J::Bool(false)) => {
            if let Some(text) = value.as_str()
                && !text.starts_with('$')
                && !text.is_empty()
            {
                ctx.diags.warn(
                    value.pos,
                    path,
                    "secure",
                    "this field expects a secret but holds plain text; anyone who can read the \
                     repository can read it. Keep it in a repository setting (--env-file, runway.toml) \
                     and write \"$NAME\" here",
                );
            }
        }
        _ => {}
    }
}

fn deprecation<'a>(s: &'a Schema, prop: &'a J) -> Option<&'a str> {
    prop.get("deprecated")
        .or_else(|| s.resolve(prop).get("deprecated"))
        .and_then(J::as_str)
}

/// Finds the property a written key means, reporting aliases, hyphens and typos.
fn resolve_key<'a>(
    s: &'a Schema,
    key: &str,
    pos: Pos,
    props: &[(&'a str, &'a J)],
    path: &str,
    obj: &J,
    ctx: &mut Ctx,
) -> Option<(&'a str, &'a J)> {
    let find = |k: &str| props.iter().find(|(n, _)| *n == k).copied();
    if let Some(p) = find(key) {
        return Some(p);
    }
    for (name, prop) in props.iter().filter(|_| s.any_alias().contains(key)) {
        if s.aliases(prop).contains(&key) {
            ctx.diags.info(
                pos,
                &join(path, name),
                "alias_key",
                format!("\"{key}\" is an alias for \"{name}\", using \"{name}\""),
            );
            return Some((name, prop));
        }
    }
    let underscored = key.replace('-', "_").to_lowercase();
    if let Some(p) = find(&underscored) {
        ctx.diags.info(
            pos,
            &join(path, p.0),
            "underscore_key",
            format!("\"{key}\" is written \"{}\", using \"{}\"", p.0, p.0),
        );
        return Some(p);
    }
    // Anchor holders such as `_shared: &shared …` at any level are not keys.
    if key.starts_with('_') || key.starts_with('.') {
        return None;
    }
    let known = props.iter().map(|(n, _)| *n);
    if let Some(guess) = did_you_mean(&underscored, known)
        && let Some(p) = find(guess)
    {
        ctx.diags.warn(
            pos,
            &join(path, key),
            "find_key",
            format!("unknown key \"{key}\"; did you mean \"{guess}\"? using \"{guess}\""),
        );
        return Some(p);
    }
    let provider = obj
        .get("properties")
        .and_then(|p| p.get("provider"))
        .and_then(|p| p.get("enum"))
        .and_then(|e| e.get(0))
        .and_then(J::as_str);
    let here = match provider {
        Some(p) => format!("for the {p} provider"),
        None => "here".to_string(),
    };
    let homes = s.homes().get(&underscored).map(|h| {
        h.iter()
            .filter(|x| !x.is_empty() && Some(x.as_str()) != provider)
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
    });
    match homes.filter(|h| !h.is_empty()) {
        Some(h) => ctx.diags.warn(
            pos,
            &join(path, key),
            "wrong_place",
            format!(
                "key \"{key}\" is not valid {here}; it belongs to {}; it is ignored",
                h.join(", ")
            ),
        ),
        None => ctx.diags.warn(
            pos,
            &join(path, key),
            "unknown_key",
            format!("unknown key \"{key}\" {here}; it is ignored"),
        ),
    }
    None
}

/// The closest known name within a small edit distance (a swap of two
/// neighbouring letters counts as one edit: `barnches` → `branches`); the first of
/// equally close names.
pub fn did_you_mean<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let w: Vec<char> = word.chars().collect();
    let limit = match w.len() {
        0..=3 => return None,
        4..=6 => 1,
        _ => 2,
    };
    let mut rows = Rows::default();
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        // More letters apart than the limit can never be within it.
        if k.chars().count().abs_diff(w.len()) > limit {
            continue;
        }
        if let Some(d) = rows.distance_within(&w, k, limit)
            && best.is_none_or(|(b, _)| d < b)
        {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

/// Buffers for [`Rows::distance_within`], reused across the names compared.
#[derive(Default)]
struct Rows {
    b: Vec<char>,
    before: Vec<usize>,
    prev: Vec<usize>,
    cur: Vec<usize>,
}

impl Rows {
    /// Optimal string alignment distance (insertions, deletions, substitutions and
    /// transpositions of neighbours each cost one), or `None` as soon as it must be
    /// more than `limit`: three rolling rows, no table.
    fn distance_within(&mut self, a: &[char], b: &str, limit: usize) -> Option<usize> {
        self.b.clear();
        self.b.extend(b.chars());
        let b = &self.b;
        let n = b.len();
        self.before.clear();
        self.before.resize(n + 1, 0);
        self.prev.clear();
        self.prev.extend(0..=n);
        self.cur.clear();
        self.cur.resize(n + 1, 0);
        for i in 1..=a.len() {
            self.cur[0] = i;
            let mut row_min = i;
            for j in 1..=n {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut v = (self.prev[j] + 1)
                    .min(self.cur[j - 1] + 1)
                    .min(self.prev[j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    v = v.min(self.before[j - 2] + 1);
                }
                self.cur[j] = v;
                row_min = row_min.min(v);
            }
            // Every later row is at least this row's minimum minus nothing: stop early.
            if row_min > limit + 1 {
                return None;
            }
            std::mem::swap(&mut self.before, &mut self.prev);
            std::mem::swap(&mut self.prev, &mut self.cur);
        }
        Some(self.prev[n]).filter(|d| *d <= limit)
    }
}

/// `jvm` → `java`, `node` → `node_js`, …: the language key's value aliases.
pub fn canonical_language(text: &str) -> String {
    let lower = text.to_lowercase();
    let s = schema();
    let def = &s.group("type")["language"];
    if let Some(J::Object(vals)) = def.get("values") {
        for (canonical, meta) in vals {
            if meta
                .get("aliases")
                .and_then(J::as_array)
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(lower.as_str())))
            {
                return canonical.clone();
            }
        }
    }
    lower
}

/// The matrix expansion keys, in Travis's order.
pub fn expand_keys() -> Vec<&'static str> {
    schema().root["expand"]
        .as_array()
        .map(|a| a.iter().filter_map(J::as_str).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &Schema, group: &str) -> bool {
        s.groups
            .iter()
            .any(|(n, _, p)| *n == group && p.get().is_some())
    }

    #[test]
    fn a_group_of_definitions_is_parsed_when_first_reached() {
        let s = Schema::new();
        assert!(!parsed(&s, "type") && !parsed(&s, "deploy"));
        let language: J = serde_json::json!({"$ref": "#/definitions/type/language"});
        assert!(s.resolve(&language).get("values").is_some());
        assert!(parsed(&s, "type") && !parsed(&s, "deploy"));
        let s3: J = serde_json::json!({"$ref": "#/definitions/deploy/s3"});
        assert_eq!(id_of(s.resolve(&s3)), "s3");
        assert!(parsed(&s, "deploy"));
        let nowhere: J = serde_json::json!({"$ref": "#/definitions/nowhere/x"});
        assert!(s.resolve(&nowhere).is_null());
    }

    #[test]
    fn words_for_people_are_left_out_and_properties_named_like_them_stay() {
        fn for_people(v: &J, names: bool, found: &mut Vec<String>) {
            match v {
                J::Object(o) => {
                    for (k, c) in o {
                        if !names
                            && ["summary", "description", "title", "see", "example"]
                                .contains(&k.as_str())
                        {
                            found.push(k.clone());
                        }
                        let maps = ["properties", "patternProperties", "values"];
                        for_people(c, !names && maps.contains(&k.as_str()), found);
                    }
                }
                J::Array(a) => a.iter().for_each(|c| for_people(c, false, found)),
                _ => {}
            }
        }
        let s = Schema::new();
        let mut found = Vec::new();
        for_people(s.root, false, &mut found);
        for (name, _, _) in &s.groups {
            for_people(s.group(name), true, &mut found);
        }
        assert_eq!(found, Vec::<String>::new());
        // CodeDeploy's deployment has a description, a property of that name.
        let codedeploy = s.resolve(&s.group("deploy")["codedeploy"]);
        let mut alts = Vec::new();
        s.alts(codedeploy, &mut alts);
        assert!(
            alts.iter()
                .any(|a| a["properties"].get("description").is_some())
        );
    }
}
