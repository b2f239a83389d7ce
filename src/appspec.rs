//! `appspec.yml`, read as the CodeDeploy agent reads it (aws-codedeploy-agent's
//! `application_specification.rb`), with every problem at its `file:line:col`: version
//! `0.0`, `os` linux or windows, `files` (source, destination), `file_exists_behavior`,
//! `permissions` (object, pattern, except, owner, group, mode, type), and `hooks` by
//! their lifecycle names, each script a map with a `location` (and `timeout`,
//! `runas`). Pure: text in, a typed [`AppSpec`] and diagnostics out.

use crate::config::diag::{Diagnostic, Diagnostics, Pos};
use crate::config::yaml::{self, Entry, Node};

/// The in-place lifecycle events, in the agent's order; hooks may name these.
pub const EVENTS: &[&str] = &[
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];

/// Events that belong to load balancers and blue/green deployments: accepted, never run
/// by a rehearsal of one instance.
const OTHER_EVENTS: &[&str] = &[
    "BeforeBlockTraffic",
    "AfterBlockTraffic",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
    "BeforeELBRemove",
    "AfterELBRemove",
    "BeforeELBAdd",
    "AfterELBAdd",
];

/// The agent's default script timeout, and its most.
pub const MAX_TIMEOUT_SECS: u64 = 3600;

/// What to do when an installed file is already there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileExists {
    /// Fail the deployment (the agent's default).
    #[default]
    Disallow,
    /// Replace it.
    Overwrite,
    /// Keep the file that is there.
    Retain,
}

impl FileExists {
    /// As appspec.yml writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            FileExists::Disallow => "DISALLOW",
            FileExists::Overwrite => "OVERWRITE",
            FileExists::Retain => "RETAIN",
        }
    }
}

/// One `files` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMap {
    /// Within the revision (`/` for all of it).
    pub source: String,
    /// An absolute directory on the instance.
    pub destination: String,
}

/// One `permissions` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permission {
    /// The path it applies to.
    pub object: String,
    /// A name pattern (`**` for everything).
    pub pattern: String,
    /// Names left out.
    pub except: Vec<String>,
    /// `file`, `directory`, or both.
    pub types: Vec<String>,
    /// The owner to set.
    pub owner: Option<String>,
    /// The group to set.
    pub group: Option<String>,
    /// The mode to set (`0644`).
    pub mode: Option<String>,
}

/// One hook script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// Within the revision.
    pub location: String,
    /// Seconds it may take (default 3600).
    pub timeout: u64,
    /// The user it runs as.
    pub runas: Option<String>,
}

/// A valid appspec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppSpec {
    /// `linux` or `windows`.
    pub os: String,
    /// What Install copies.
    pub files: Vec<FileMap>,
    /// When a file is already there.
    pub file_exists: FileExists,
    /// What Install sets after copying.
    pub permissions: Vec<Permission>,
    /// Scripts per event, in file order.
    pub hooks: Vec<(String, Vec<Script>)>,
}

impl AppSpec {
    /// The scripts of `event`.
    pub fn scripts(&self, event: &str) -> &[Script] {
        self.hooks
            .iter()
            .find(|(e, _)| e == event)
            .map(|(_, s)| s.as_slice())
            .unwrap_or_default()
    }
}

/// Reads an appspec text: the spec when it has no errors, and every diagnostic.
pub fn load(text: &str) -> (Option<AppSpec>, Vec<Diagnostic>) {
    let mut d = Diagnostics::default();
    let root = match yaml::parse(text, &mut d) {
        Ok(root) => root,
        Err(e) => {
            d.error(e.pos, "", "syntax", format!("invalid YAML: {}", e.message));
            return (None, d.into_sorted());
        }
    };
    let spec = read(&root, &mut d);
    let diags = d.into_sorted();
    let ok = !diags
        .iter()
        .any(|x| x.level == crate::config::diag::Level::Error);
    (ok.then_some(spec), diags)
}

fn text(n: &Node) -> Option<String> {
    n.as_str().map(|s| s.trim().to_string())
}

/// Reads each section of an appspec as the agent does, saying what is wrong where.
fn read(root: &Node, d: &mut Diagnostics) -> AppSpec {
    let mut spec = AppSpec::default();
    let Some(entries) = root.as_map() else {
        d.error(root.pos, "", "type", "an appspec is a mapping of sections");
        return spec;
    };
    for e in entries {
        let known = [
            "version",
            "os",
            "files",
            "permissions",
            "hooks",
            "file_exists_behavior",
            "resources",
        ];
        if !known.contains(&e.key.as_str()) {
            d.warn(
                e.key_pos,
                &e.key,
                "unknown_key",
                "not a section the agent reads",
            );
        }
    }
    read_version_and_os(root, &mut spec, d);
    if let Some(b) = root.get("file_exists_behavior") {
        spec.file_exists = match text(b).as_deref() {
            Some("DISALLOW") => FileExists::Disallow,
            Some("OVERWRITE") => FileExists::Overwrite,
            Some("RETAIN") => FileExists::Retain,
            other => {
                d.error(
                    b.pos,
                    "file_exists_behavior",
                    "enum",
                    format!(
                        "\"{}\" is not DISALLOW, OVERWRITE or RETAIN",
                        other.unwrap_or_default()
                    ),
                );
                FileExists::Disallow
            }
        };
    }
    for (i, f) in seq(root.get("files"), "files", d).iter().enumerate() {
        let path = format!("files[{i}]");
        let source = f.get("source").and_then(text);
        let destination = f.get("destination").and_then(text);
        match (source, destination) {
            (Some(source), Some(destination)) if destination.starts_with('/') => {
                spec.files.push(FileMap {
                    source,
                    destination,
                })
            }
            (Some(_), Some(dest)) => d.error(
                f.pos,
                &path,
                "destination",
                format!("destination \"{dest}\" is not an absolute path"),
            ),
            _ => d.error(
                f.pos,
                &path,
                "required",
                "a files entry needs a source and a destination",
            ),
        }
    }
    for (i, p) in seq(root.get("permissions"), "permissions", d)
        .iter()
        .enumerate()
    {
        spec.permissions.extend(permission(p, i, d));
    }
    if let Some(hooks) = root.get("hooks") {
        let Some(entries) = hooks.as_map() else {
            d.error(
                hooks.pos,
                "hooks",
                "type",
                "hooks is a mapping of lifecycle events to scripts",
            );
            return spec;
        };
        for e in entries {
            spec.hooks.extend(event_scripts(e, d));
        }
    }
    spec
}

/// `version` (only `0.0`) and `os` (linux or windows), with the agent's messages.
fn read_version_and_os(root: &Node, spec: &mut AppSpec, d: &mut Diagnostics) {
    let top = Pos { line: 1, col: 1 };
    match root.get("version").and_then(text) {
        Some(v) if v == "0.0" => {}
        v => d.error(
            root.get("version").map_or(top, |n| n.pos),
            "version",
            "version",
            format!(
                "The deployment failed because an invalid version value ({}) was entered in the application specification file. Make sure your AppSpec file specifies \"0.0\" as the version",
                v.unwrap_or_default()
            ),
        ),
    }
    match root.get("os").and_then(text) {
        Some(os) if os == "linux" || os == "windows" => spec.os = os,
        os => d.error(
            root.get("os").map_or(top, |n| n.pos),
            "os",
            "os",
            format!(
                "the application specification file specifies an unsupported operating system ({}); specify either \"linux\" or \"windows\"",
                os.unwrap_or_default()
            ),
        ),
    }
}

/// One `permissions` entry (entry `i`), or `None` without its object.
fn permission(p: &Node, i: usize, d: &mut Diagnostics) -> Option<Permission> {
    let path = format!("permissions[{i}]");
    let Some(object) = p.get("object").and_then(text) else {
        d.error(
            p.pos,
            &path,
            "required",
            "The deployment failed because a permission listed in the application specification file has no object value",
        );
        return None;
    };
    let strs = |k: &str| -> Vec<String> {
        p.get(k)
            .map(|n| match n.as_seq() {
                Some(items) => items.iter().filter_map(text).collect(),
                None => text(n).into_iter().collect(),
            })
            .unwrap_or_default()
    };
    let mut types = strs("type");
    if types.is_empty() {
        types = vec!["file".into(), "directory".into()];
    }
    if let Some(bad) = types.iter().find(|t| *t != "file" && *t != "directory") {
        d.error(
            p.get("type").map_or(p.pos, |n| n.pos),
            &format!("{path}.type"),
            "enum",
            format!("the application specification file specifies a permission for an object type not supported for permissions ({bad})"),
        );
    }
    let mode = p.get("mode").and_then(text);
    if let Some(m) = &mode
        && !(m.len() <= 4 && !m.is_empty() && m.chars().all(|c| ('0'..='7').contains(&c)))
    {
        d.error(
            p.get("mode").map_or(p.pos, |n| n.pos),
            &format!("{path}.mode"),
            "mode",
            format!("mode \"{m}\" is not an octal mode (644, 0755)"),
        );
    }
    Some(Permission {
        object,
        pattern: p
            .get("pattern")
            .and_then(text)
            .unwrap_or_else(|| "**".into()),
        except: strs("except"),
        types,
        owner: p.get("owner").and_then(text),
        group: p.get("group").and_then(text),
        mode,
    })
}

/// One event of `hooks` with its scripts, or `None` (said why) for a name that is not
/// an event the agent runs scripts for.
fn event_scripts(e: &Entry, d: &mut Diagnostics) -> Option<(String, Vec<Script>)> {
    let path = format!("hooks.{}", e.key);
    if !EVENTS.contains(&e.key.as_str()) && !OTHER_EVENTS.contains(&e.key.as_str()) {
        d.error(
            e.key_pos,
            &path,
            "unknown_event",
            format!(
                "\"{}\" is not a lifecycle event (in place: {})",
                e.key,
                EVENTS.join(", ")
            ),
        );
        return None;
    }
    if matches!(e.key.as_str(), "DownloadBundle" | "Install") {
        d.error(
            e.key_pos,
            &path,
            "reserved_event",
            format!("{} is run by the agent itself; it takes no scripts", e.key),
        );
        return None;
    }
    let mut scripts = Vec::new();
    for (i, s) in seq(Some(&e.value), &path, d).iter().enumerate() {
        scripts.extend(script(s, &format!("{path}[{i}]"), d));
    }
    let total: u64 = scripts.iter().map(|s| s.timeout).sum();
    if total > MAX_TIMEOUT_SECS {
        d.warn(
            e.key_pos,
            &path,
            "event_timeout",
            format!(
                "the {} scripts may take {total} s together; CodeDeploy fails an event whose scripts run past {MAX_TIMEOUT_SECS} s",
                e.key
            ),
        );
    }
    Some((e.key.clone(), scripts))
}

/// One script of an event (at `here`), or `None` without its location.
fn script(s: &Node, here: &str, d: &mut Diagnostics) -> Option<Script> {
    let Some(location) = s.get("location").and_then(text) else {
        d.error(
            s.pos,
            here,
            "location",
            "The deployment failed because the application specification file specifies a script with no location value",
        );
        return None;
    };
    let timeout = match s.get("timeout") {
        None => MAX_TIMEOUT_SECS,
        Some(t) => match text(t).and_then(|t| t.parse::<u64>().ok()) {
            Some(n) if (1..=MAX_TIMEOUT_SECS).contains(&n) => n,
            _ => {
                d.error(
                    t.pos,
                    &format!("{here}.timeout"),
                    "timeout",
                    format!("timeout is a number of seconds from 1 to {MAX_TIMEOUT_SECS}"),
                );
                MAX_TIMEOUT_SECS
            }
        },
    };
    Some(Script {
        location,
        timeout,
        runas: s.get("runas").and_then(text),
    })
}

/// The items of a list section; an error when it is something else.
fn seq<'a>(node: Option<&'a Node>, path: &str, d: &mut Diagnostics) -> &'a [Node] {
    match node {
        None => &[],
        Some(n) => match n.as_seq() {
            Some(items) => items,
            None if n.as_str().is_none() && n.as_map().is_none() => &[],
            None => {
                d.error(n.pos, path, "type", format!("{path} is a list"));
                &[]
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        load(text)
            .1
            .iter()
            .map(|d| d.render("appspec.yml"))
            .collect()
    }

    #[test]
    fn a_valid_appspec_is_read_as_the_agent_reads_it() {
        let (spec, diags) = load(
            "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /home/ec2-user/app\nfile_exists_behavior: OVERWRITE\npermissions:\n  - object: /home/ec2-user/app\n    pattern: \"**\"\n    owner: ec2-user\n    mode: 755\n    type: [file]\nhooks:\n  ApplicationStart:\n    - location: start.sh\n      timeout: 60\n      runas: ec2-user\n  ValidateService:\n    - location: health.sh\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let spec = spec.unwrap();
        assert_eq!(spec.file_exists, FileExists::Overwrite);
        assert_eq!(spec.files[0].destination, "/home/ec2-user/app");
        assert_eq!(spec.permissions[0].types, ["file"]);
        assert_eq!(spec.permissions[0].mode.as_deref(), Some("755"));
        let start = &spec.scripts("ApplicationStart")[0];
        assert_eq!(
            (start.timeout, start.runas.as_deref()),
            (60, Some("ec2-user"))
        );
        assert_eq!(spec.scripts("ValidateService")[0].timeout, 3600);
        assert!(spec.scripts("BeforeInstall").is_empty());
        // Scripts whose timeouts add up past an hour: the event would time out.
        let (spec, diags) = load(
            "version: 0.0\nos: linux\nhooks:\n  ApplicationStart:\n    - location: a.sh\n      timeout: 3000\n    - location: b.sh\n      timeout: 900\n",
        );
        assert!(spec.is_some());
        assert_eq!(
            diags[0].render("appspec.yml"),
            "appspec.yml:4:3: warning: hooks.ApplicationStart: the ApplicationStart scripts may take 3900 s together; CodeDeploy fails an event whose scripts run past 3600 s"
        );
    }

    #[test]
    fn every_problem_is_placed() {
        let e = errors(
            "version: 1.0\nos: macos\nfile_exists_behavior: KEEP\nfiles:\n  - source: /\n    destination: app\nhooks:\n  AfterInstal:\n    - location: a.sh\n  ValidateService:\n    - location: health.sh\n      timeout: 9000\n    - master\n",
        );
        let want = [
            "appspec.yml:1:10: error: version: The deployment failed because an invalid version value (1.0)",
            "appspec.yml:2:5: error: os: the application specification file specifies an unsupported operating system (macos)",
            "appspec.yml:3:23: error: file_exists_behavior: \"KEEP\" is not DISALLOW, OVERWRITE or RETAIN",
            "appspec.yml:5:5: error: files[0]: destination \"app\" is not an absolute path",
            "appspec.yml:8:3: error: hooks.AfterInstal: \"AfterInstal\" is not a lifecycle event",
            "appspec.yml:12:16: error: hooks.ValidateService[0].timeout: timeout is a number of seconds from 1 to 3600",
            "appspec.yml:13:7: error: hooks.ValidateService[1]: The deployment failed because the application specification file specifies a script with no location value",
        ];
        for w in want {
            assert!(e.iter().any(|x| x.starts_with(w)), "{w}\nin {e:#?}");
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
    }
}
