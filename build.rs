//! Build step: Travis's schema (`src/config/travis-schema.json`) made ready to read
//! fast. The words written for people (`summary`, `description`, `title`, `see`,
//! `example`: nothing reads them) are left out, the text is minified, and each group of
//! definitions (`type`, `deploy`, `notification`, …) goes to a file of its own, so a
//! run parses only the groups its config reaches (`runway::config::schema`).
//! Writes `$OUT_DIR/schema.rs`, which names those files.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

const SCHEMA: &str = "src/config/travis-schema.json";
/// Keys of a schema object that only people read.
const FOR_PEOPLE: [&str; 5] = ["summary", "description", "title", "see", "example"];
/// Keys whose value maps names (of properties, of enum values) to schemas: their own
/// keys are names, never dropped.
const NAME_MAPS: [&str; 3] = ["properties", "patternProperties", "values"];

fn main() {
    println!("cargo::rerun-if-changed={SCHEMA}");
    println!("cargo::rerun-if-changed=build.rs");
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    let out = Path::new(&out);
    let text = std::fs::read_to_string(SCHEMA).expect("the schema is in the source tree");
    let mut root: Value = serde_json::from_str(&text).expect("the schema is valid JSON");
    let Some(Value::Object(groups)) = root.as_object_mut().and_then(|o| o.remove("definitions"))
    else {
        panic!("the schema has no definitions");
    };
    strip(&mut root, false);
    let mut rust = String::from("/// Travis's schema without its definitions, minified.\n");
    write_part(out, "root", &root);
    rust.push_str(
        "const ROOT: &str = include_str!(concat!(env!(\"OUT_DIR\"), \"/schema-root.json\"));\n",
    );
    rust.push_str("/// Each group of definitions: its name, its text (minified).\nconst GROUPS: &[(&str, &str)] = &[\n");
    for (name, mut group) in groups {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "a group's name is a file's name: {name:?}"
        );
        // A group maps the names of its definitions to them.
        strip(&mut group, true);
        write_part(out, &name, &group);
        let _ = writeln!(
            rust,
            "    (\"{name}\", include_str!(concat!(env!(\"OUT_DIR\"), \"/schema-{name}.json\"))),"
        );
    }
    rust.push_str("];\n");
    std::fs::write(out.join("schema.rs"), rust).expect("OUT_DIR is writable");
}

fn write_part(out: &Path, name: &str, v: &Value) {
    let text = serde_json::to_string(v).expect("a parsed value prints");
    std::fs::write(out.join(format!("schema-{name}.json")), text).expect("OUT_DIR is writable");
}

/// Drops [`FOR_PEOPLE`] keys from every schema object under `v`; `names`: `v` maps
/// names (of properties, of enum values) to schemas, and its own keys stay.
fn strip(v: &mut Value, names: bool) {
    match v {
        Value::Object(o) => {
            if !names {
                o.retain(|k, _| !FOR_PEOPLE.contains(&k.as_str()));
            }
            for (k, child) in o.iter_mut() {
                strip(child, !names && NAME_MAPS.contains(&k.as_str()));
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| strip(c, false)),
        _ => {}
    }
}
