//! `runway codedeploy rehearse BUNDLE...`: the other half of a CodeDeploy deployment,
//! the revision's `appspec.yml` run as the agent runs it (aws-codedeploy-agent's
//! `hook_executor.rb` and `installer.rb` are the spec), on a throwaway copy of this
//! machine (the job sandbox), so absolute destinations and `runas` users work and the
//! host is never touched. Several bundles deploy one after another on the same copy,
//! the later one's ApplicationStop running the earlier one's scripts, as on a server;
//! processes hooks start keep running between events.
//!
//! Each event is one command in one sandboxed shell; the agent's behaviour lives in
//! the shell functions below ([`AGENT`]), its error codes and messages included.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::appspec::{self, AppSpec};
use crate::beneath::Beneath;
use crate::inside::bundle;
use crate::process::quote;
use crate::process::shell::{Shell, Wait};
use crate::sandbox::{JobPaths, Sandbox};

/// The agent's ways, as shell functions in the rehearsal's shell.
const AGENT: &str = r#"
runway_cd_hook() { # ARCHIVE LOCATION TIMEOUT RUNAS
  local path="$1/$2" rc limit=$3 left
  # The event's scripts together get 3600 seconds, as CodeDeploy allows an event.
  left=$(( RUNWAY_CD_EVENT_DEADLINE - $(date +%s) ))
  if [ "$left" -lt 1 ]; then
    echo "ScriptTimedOut: Script at specified location: $2 was not started: the $LIFECYCLE_EVENT scripts used up the event's time"; return 103
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  if [ ! -e "$path" ]; then
    echo "ScriptMissing: Script does not exist at specified location: $2"; return 101
  fi
  if [ ! -x "$path" ]; then
    echo "Script at specified location: $2 is not executable.  Trying to make it executable."
    chmod +x "$path" 2>/dev/null || { echo "ScriptNotExecutable: Unable to set script at specified location: $2 as executable"; return 102; }
  fi
  if [ -n "$4" ]; then
    id -u "$4" >/dev/null 2>&1 || useradd -m "$4" || { echo "ScriptFailed: runas user $4 could not be made"; return 104; }
    ( cd / && timeout -s TERM "$limit" runuser -u "$4" -- "$path" < /dev/null ); rc=$?
  else
    ( cd / && timeout -s TERM "$limit" "$path" < /dev/null ); rc=$?
  fi
  if [ $rc -eq 124 ]; then
    echo "ScriptTimedOut: Script at specified location: $2 failed to complete in $limit seconds"; return 103
  elif [ $rc -ne 0 ]; then
    if [ -n "$4" ]; then
      echo "ScriptFailed: Script at specified location: $2 run as user $4 failed with exit code $rc"
    else
      echo "ScriptFailed: Script at specified location: $2 failed with exit code $rc"
    fi
    return 104
  fi
}
runway_cd_accounts() { # USERS -- GROUPS: what an EC2 instance would already have
  local u g
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    u=$1; shift
    if ! id -u "$u" >/dev/null 2>&1; then
      useradd -m "$u" || return 1
      # As ec2-user on Amazon Linux: sudo without a password.
      if [ -d /etc/sudoers.d ]; then echo "$u ALL=(ALL) NOPASSWD:ALL" > "/etc/sudoers.d/runway-$u"; fi
    fi
  done
  [ $# -gt 0 ] && shift
  for g in "$@"; do getent group "$g" >/dev/null || groupadd "$g" || return 1; done
}
runway_cd_install() { # SRC DEST BEHAVIOR
  if [ -e "$2" ] && [ ! -d "$2" ]; then
    case $3 in
      DISALLOW) echo "The deployment failed because a specified file already exists at this location: $2"; return 1;;
      RETAIN) echo "Retained $2 (file_exists_behavior: RETAIN)"; return 0;;
    esac
  fi
  mkdir -p "$(dirname "$2")" && cp -a "$1" "$2"
}
"#;

/// What a rehearsal is called, as CodeDeploy would name it.
pub struct RehearseOptions {
    /// `APPLICATION_NAME`.
    pub application: String,
    /// `DEPLOYMENT_GROUP_NAME`.
    pub group: String,
    /// Where it runs (the job sandbox; the bare host is refused by the command).
    pub sandbox: std::sync::Arc<dyn Sandbox>,
    /// Keep the copy (and what the hooks started) running after the last event until
    /// standard input ends: to look at it, or to send it requests.
    pub hold: bool,
}

/// Why a rehearsal could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RehearseError {
    /// The bundle could not be read or unpacked.
    #[error("{0}")]
    Bundle(String),
    /// Files, the shell or the sandbox failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One revision, unpacked.
struct Revision {
    dir: PathBuf,
    spec: AppSpec,
    id: String,
}

/// The bundle `bundle` as a file to unpack and how it is packed: a directory (the
/// developer's own, named on the command line) is packed as a tar first, by runway,
/// without following its links.
/// A bundle to rehearse: a path (named on the command line), or a file a job built,
/// already opened beneath its workspace (read through that descriptor, never the path).
pub struct Bundle {
    /// The path, as shown (its extension says how it is packed).
    pub shown: PathBuf,
    /// The opened file, when the path is not to be opened again.
    pub file: Option<std::fs::File>,
}

impl From<&PathBuf> for Bundle {
    fn from(p: &PathBuf) -> Bundle {
        Bundle {
            shown: p.clone(),
            file: None,
        }
    }
}

fn packed(b: &Bundle) -> Result<(std::fs::File, bundle::Kind), RehearseError> {
    let bundle = &b.shown;
    if let Some(f) = &b.file {
        let kind = bundle::kind_of(&bundle.to_string_lossy()).ok_or_else(|| {
            RehearseError::Bundle(format!(
                "{}: cannot unpack: a bundle is a .zip, .tar, .tgz or .tar.gz",
                bundle.display()
            ))
        })?;
        return Ok((f.try_clone()?, kind));
    }
    let shown = |e: std::io::Error| RehearseError::Bundle(format!("{}: {e}", bundle.display()));
    if bundle.is_dir() {
        let mut tar = tar::Builder::new(tempfile::tempfile()?);
        tar.follow_symlinks(false);
        tar.append_dir_all(".", bundle).map_err(shown)?;
        let mut f = tar.into_inner().map_err(shown)?;
        std::io::Seek::rewind(&mut f)?;
        return Ok((f, bundle::Kind::Tar));
    }
    let kind = bundle::kind_of(&bundle.to_string_lossy()).ok_or_else(|| {
        RehearseError::Bundle(format!(
            "{}: cannot unpack: a bundle is a .zip, .tar, .tgz or .tar.gz (or a directory)",
            bundle.display()
        ))
    })?;
    Ok((std::fs::File::open(bundle).map_err(shown)?, kind))
}

/// Every file (and link) under `rel` of the revision, relative to `rel`, sorted; read
/// through descriptors beneath the revision, never following a link.
fn files_under(top: &Beneath, rel: &Path) -> Vec<PathBuf> {
    let Ok(dir) = top.dir(rel) else {
        return Vec::new();
    };
    dir.walk_with_links()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, m)| !m.is_dir())
        .map(|(p, _)| p)
        .collect()
}

/// The Install event's commands: each file of each `files` entry, then permissions.
fn install_commands(rev: &Revision, archive: &str) -> Vec<String> {
    let mut cmds = Vec::new();
    // Every path Install makes, and whether it is a directory.
    let mut installed: Vec<(PathBuf, bool)> = Vec::new();
    let behavior = rev.spec.file_exists.as_str();
    let Ok(top) = Beneath::open(&rev.dir) else {
        return cmds;
    };
    for f in &rev.spec.files {
        // Checked at unpack: every source stays inside the revision.
        let Ok(source_rel) =
            crate::beneath::inside(&rev.dir, &rev.dir.join(f.source.trim_start_matches('/')))
        else {
            continue;
        };
        let source = rev.dir.join(&source_rel);
        let dest = Path::new(&f.destination);
        let archive_src = Path::new(archive).join(&source_rel);
        installed.push((dest.to_path_buf(), true));
        if top.lstat(&source_rel).is_ok_and(|m| m.is_dir()) {
            cmds.push(format!("mkdir -p {}", quote(&f.destination)));
            for rel in files_under(&top, &source_rel) {
                for dir in rel
                    .ancestors()
                    .skip(1)
                    .filter(|a| !a.as_os_str().is_empty())
                {
                    let d = dest.join(dir);
                    if !installed.iter().any(|(p, _)| *p == d) {
                        installed.push((d, true));
                    }
                }
                installed.push((dest.join(&rel), false));
                cmds.push(format!(
                    "runway_cd_install {} {} {behavior}",
                    quote(&archive_src.join(&rel).to_string_lossy()),
                    quote(&dest.join(&rel).to_string_lossy())
                ));
            }
        } else {
            let name = source.file_name().unwrap_or_default();
            installed.push((dest.join(name), false));
            cmds.push(format!(
                "runway_cd_install {} {} {behavior}",
                quote(&archive_src.to_string_lossy()),
                quote(&dest.join(name).to_string_lossy())
            ));
        }
    }
    // Permissions apply to what this Install put there, as the agent's installer does.
    for p in &rev.spec.permissions {
        let object = Path::new(&p.object);
        for (path, is_dir) in &installed {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let wanted_type = if *is_dir { "directory" } else { "file" };
            if !path.starts_with(object)
                || !p.types.iter().any(|t| t == wanted_type)
                || !(p.pattern == "**" || super::glob_match(&p.pattern, &name))
                || p.except.iter().any(|e| super::glob_match(e, &name))
            {
                continue;
            }
            let q = quote(&path.to_string_lossy());
            if p.owner.is_some() || p.group.is_some() {
                let who = match (&p.owner, &p.group) {
                    (Some(o), Some(g)) => format!("{o}:{g}"),
                    (Some(o), None) => o.clone(),
                    (None, Some(g)) => format!(":{g}"),
                    (None, None) => unreachable!(),
                };
                cmds.push(format!("chown -h {} {q}", quote(&who)));
            }
            if let Some(m) = &p.mode {
                cmds.push(format!("chmod {} {q}", quote(m)));
            }
        }
    }
    cmds
}

/// The hook commands of `event` for a revision whose archive is at `archive`.
fn hook_commands(spec: &AppSpec, event: &str, archive: &str) -> Vec<String> {
    spec.scripts(event)
        .iter()
        .map(|s| {
            format!(
                "runway_cd_hook {} {} {} {}",
                quote(archive),
                quote(&s.location),
                s.timeout,
                quote(s.runas.as_deref().unwrap_or(""))
            )
        })
        .collect()
}

/// A throwaway copy of this machine with the agent's functions loaded: revisions
/// deploy on it one after another, what their hooks start keeps running between
/// events and between deployments, and it is gone when [`Machine::end`] is called (or
/// runway exits).
pub struct Machine {
    ws: tempfile::TempDir,
    paths: JobPaths,
    sh: Shell,
    application: String,
    group: String,
    /// The last revision that deployed, for the next one's ApplicationStop.
    previous: Option<(AppSpec, String)>,
    /// Revisions unpacked so far (successful or not): the next deployment's number.
    count: usize,
}

impl Machine {
    /// Makes the copy and loads the agent's functions into its shell.
    pub fn start(opts: &RehearseOptions) -> Result<Machine, RehearseError> {
        let ws = crate::sandbox::job_dir()?;
        let paths = JobPaths {
            root: ws.path().to_path_buf(),
            build_dir: ws.path().join("build"),
            home: ws.path().join("home"),
            scratch: ws.path().join("runway"),
        };
        for d in [&paths.build_dir, &paths.home, &paths.scratch] {
            std::fs::create_dir_all(d)?;
        }
        let env: Vec<(String, String)> = vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOME".into(), "/root".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        let sh = Shell::start(&paths.build_dir, &env, &*opts.sandbox, &paths)
            .map_err(|e| RehearseError::Bundle(e.to_string()))?;
        let mut m = Machine {
            ws,
            paths,
            sh,
            application: opts.application.clone(),
            group: opts.group.clone(),
            previous: None,
            count: 0,
        };
        m.run(AGENT, &mut Vec::new());
        Ok(m)
    }

    /// Runs one command in the copy's shell, collecting what it says; its exit code.
    fn run(&mut self, cmd: &str, said: &mut Vec<u8>) -> i32 {
        let long = Duration::from_secs(7 * 24 * 3600);
        if self.sh.send(cmd).is_err() {
            return 127;
        }
        match self.sh.wait(long, long, &mut |b| {
            said.extend_from_slice(b);
            true
        }) {
            Wait::Done(code) => code,
            _ => 127,
        }
    }

    /// Unpacks `bundle` into `dest` inside the copy, by runway's own code in a helper
    /// there ([`crate::inside`]): links and paths in the bundle land in the copy only.
    fn unpack(&self, bundle: &Bundle, dest: &Path) -> Result<(), String> {
        let (file, kind) = packed(bundle).map_err(|e| e.to_string())?;
        match self.sh.files() {
            crate::sandbox::Files::Job(view) => {
                crate::inside::unpack(view, file, kind, dest, 600).map_err(|e| e.to_string())?;
                Ok(())
            }
            crate::sandbox::Files::Gone(why) => {
                Err(format!("the copy of the machine is gone ({why})"))
            }
            crate::sandbox::Files::Host => {
                Err("a rehearsal runs only in the job sandbox, never on the bare host".into())
            }
        }
    }

    /// Unpacks and reads every bundle (an invalid appspec deploys nothing), then deploys
    /// them in order. Returns the exit code: 0 when every revision deployed, 3 when one
    /// failed or an appspec is invalid.
    pub fn deploy(
        &mut self,
        bundles: &[PathBuf],
        out: &mut dyn Write,
    ) -> Result<i32, RehearseError> {
        let bundles: Vec<Bundle> = bundles.iter().map(Bundle::from).collect();
        self.deploy_bundles(&bundles, out)
    }

    /// [`Machine::deploy`] of bundles that may be open already.
    pub fn deploy_bundles(
        &mut self,
        bundles: &[Bundle],
        out: &mut dyn Write,
    ) -> Result<i32, RehearseError> {
        let mut revisions = Vec::new();
        for bundle in bundles {
            let b = &bundle.shown;
            self.count += 1;
            let dir = self
                .paths
                .build_dir
                .join(format!("revision-{}", self.count));
            if let Err(why) = self.unpack(bundle, &dir) {
                writeln!(out, "Rehearsal failed: {}: {why}", b.display())?;
                return Ok(crate::exit::ERRORED);
            }
            // The revision's directory is the copy's: read beneath it, following no
            // link, no further than an appspec may be.
            let top = Beneath::open(&dir)?;
            let name = ["appspec.yml", "appspec.yaml"]
                .into_iter()
                .find(|n| top.lstat(Path::new(n)).is_ok())
                .ok_or_else(|| {
                    RehearseError::Bundle(format!(
                        "{}: the revision has no appspec.yml at its top",
                        b.display()
                    ))
                })?;
            let cap = crate::config::MAX_CONFIG_BYTES as u64;
            let bytes = top.read_capped(Path::new(name), cap).map_err(|e| {
                RehearseError::Bundle(format!(
                    "{}: {name}: {}",
                    b.display(),
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        format!("larger than {} MiB, more than an appspec may be", cap >> 20)
                    } else {
                        crate::beneath::refused(Path::new(name), &e)
                    }
                ))
            })?;
            let text = String::from_utf8_lossy(&bytes);
            let (spec, diags) = appspec::load(&text);
            let shown = format!("{}:appspec.yml", b.display());
            for d in &diags {
                writeln!(out, "{}", d.render(&shown))?;
            }
            let Some(spec) = spec else {
                writeln!(
                    out,
                    "Rehearsal failed: the appspec of {} is invalid (the agent would fail the deployment before any event)",
                    b.display()
                )?;
                return Ok(crate::exit::ERRORED);
            };
            if let Some(f) = spec.files.iter().find(|f| {
                crate::beneath::inside(&dir, &dir.join(f.source.trim_start_matches('/'))).is_err()
            }) {
                writeln!(
                    out,
                    "Rehearsal failed: the appspec of {} has files: source {}, which leaves the bundle (the agent installs only what the bundle holds)",
                    b.display(),
                    f.source
                )?;
                return Ok(crate::exit::ERRORED);
            }
            revisions.push(Revision {
                dir,
                spec,
                id: format!("d-RUNWAY{:05}", self.count),
            });
        }
        if !self.make_accounts(&revisions, out)? {
            return Ok(crate::exit::ERRORED);
        }
        for rev in &revisions {
            if !self.deploy_one(rev, out)? {
                return Ok(crate::exit::ERRORED);
            }
        }
        writeln!(out, "Deployed: {} revision(s)", revisions.len())?;
        Ok(crate::exit::PASSED)
    }

    /// The users and groups the appspecs name exist on the instance they were written
    /// for; the copy gets them. False (having said why) when they cannot be made.
    fn make_accounts(
        &mut self,
        revisions: &[Revision],
        out: &mut dyn Write,
    ) -> std::io::Result<bool> {
        let mut users: Vec<&str> = Vec::new();
        let mut groups: Vec<&str> = Vec::new();
        for rev in revisions {
            for (_, scripts) in &rev.spec.hooks {
                users.extend(scripts.iter().filter_map(|s| s.runas.as_deref()));
            }
            for p in &rev.spec.permissions {
                users.extend(p.owner.as_deref());
                groups.extend(p.group.as_deref());
            }
        }
        users.sort_unstable();
        users.dedup();
        groups.sort_unstable();
        groups.dedup();
        if users.is_empty() && groups.is_empty() {
            return Ok(true);
        }
        let q = |v: &[&str]| v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" ");
        let mut said = Vec::new();
        let accounts = format!("runway_cd_accounts {} -- {}", q(&users), q(&groups));
        if self.run(&accounts, &mut said) != 0 {
            writeln!(
                out,
                "Rehearsal failed: the users and groups the appspec names could not be made: {}",
                String::from_utf8_lossy(&said).trim()
            )?;
            return Ok(false);
        }
        Ok(true)
    }

    /// One revision's lifecycle, event by event. False (having said where and why) when
    /// an event failed; the revision before stays the last successful one.
    fn deploy_one(&mut self, rev: &Revision, out: &mut dyn Write) -> std::io::Result<bool> {
        let group_id = format!("dg-runway-{}", self.group);
        // What an event's scripts get together: CodeDeploy's hour, or less to try it out.
        let event_secs: u64 = std::env::var("RUNWAY_CODEDEPLOY_EVENT_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|s| (1..=appspec::MAX_TIMEOUT_SECS).contains(s))
            .unwrap_or(appspec::MAX_TIMEOUT_SECS);
        let root = format!("/opt/codedeploy-agent/deployment-root/{group_id}");
        writeln!(
            out,
            "Deployment {} of {} to {}: {}",
            rev.id,
            self.application,
            self.group,
            rev.dir.display()
        )?;
        let archive = format!("{root}/{}/deployment-archive", rev.id);
        let exports = format!(
            "export DEPLOYMENT_ID={} APPLICATION_NAME={} DEPLOYMENT_GROUP_NAME={} DEPLOYMENT_GROUP_ID={}",
            quote(&rev.id),
            quote(&self.application),
            quote(&self.group),
            quote(&group_id)
        );
        self.run(&exports, &mut Vec::new());
        for event in appspec::EVENTS {
            let cmds: Vec<String> = match *event {
                // The agent runs the last successful revision's ApplicationStop.
                "ApplicationStop" => self
                    .previous
                    .as_ref()
                    .map(|(spec, arch)| hook_commands(spec, event, arch))
                    .unwrap_or_default(),
                "DownloadBundle" => vec![format!(
                    "mkdir -p {a} && cp -a {}/. {a}/",
                    quote(&rev.dir.to_string_lossy()),
                    a = quote(&archive)
                )],
                "Install" => install_commands(rev, &archive),
                _ => hook_commands(&rev.spec, event, &archive),
            };
            let started = Instant::now();
            let mut said = Vec::new();
            self.run(
                &format!(
                    "export LIFECYCLE_EVENT={event} RUNWAY_CD_EVENT_DEADLINE=$(( $(date +%s) + {event_secs} ))"
                ),
                &mut Vec::new(),
            );
            let mut failed = None;
            for c in &cmds {
                let code = self.run(c, &mut said);
                if code != 0 {
                    failed = Some(code);
                    break;
                }
            }
            let took = started.elapsed().as_secs_f64();
            let text = String::from_utf8_lossy(&said).into_owned();
            let status = match (cmds.is_empty(), failed) {
                (true, _) => "Skipped",
                (false, None) => "Succeeded",
                (false, Some(_)) => "Failed",
            };
            writeln!(out, "  {event:<17} {status:<9} {took:>7.2}s")?;
            let lines: Vec<&str> = text.lines().collect();
            let shown = if failed.is_some() {
                &lines[lines.len().saturating_sub(20)..]
            } else {
                &lines[..]
            };
            for l in shown {
                writeln!(out, "    | {l}")?;
            }
            if failed.is_some() {
                let why = lines
                    .iter()
                    .rev()
                    .find(|l| {
                        l.starts_with("Script")
                            || l.starts_with("The deployment failed")
                            || l.contains("cannot")
                    })
                    .or_else(|| lines.iter().rev().find(|l| !l.trim().is_empty()))
                    .copied()
                    .unwrap_or("the event failed");
                writeln!(out, "Rehearsal failed at {event} of {}: {why}", rev.id)?;
                return Ok(false);
            }
        }
        self.previous = Some((rev.spec.clone(), archive));
        Ok(true)
    }

    /// Ends the copy and everything running in it, after holding it until standard
    /// input ends when asked.
    pub fn end(self, hold: bool, out: &mut dyn Write) -> std::io::Result<()> {
        if hold {
            writeln!(
                out,
                "Holding the copy of the machine: what the hooks started keeps running until standard input ends (Enter or Ctrl-D)"
            )?;
            out.flush()?;
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        self.sh.finish(Duration::from_secs(2));
        drop(self.ws);
        Ok(())
    }
}

/// Rehearses `bundles` in order on one throwaway copy of the machine, gone afterwards.
/// Returns the exit code: 0 when every revision deployed, 3 when one failed (or its
/// appspec is invalid).
pub fn rehearse(
    bundles: &[PathBuf],
    opts: &RehearseOptions,
    out: &mut dyn Write,
) -> Result<i32, RehearseError> {
    let bundles: Vec<Bundle> = bundles.iter().map(Bundle::from).collect();
    rehearse_bundles(&bundles, opts, out)
}

/// [`rehearse`] of bundles that may be open already.
pub fn rehearse_bundles(
    bundles: &[Bundle],
    opts: &RehearseOptions,
    out: &mut dyn Write,
) -> Result<i32, RehearseError> {
    let mut machine = Machine::start(opts)?;
    let code = machine.deploy_bundles(bundles, out);
    machine.end(opts.hold, out)?;
    let code = code?;
    if code == crate::exit::PASSED {
        writeln!(
            out,
            "Rehearsal succeeded: {} revision(s) deployed on a throwaway copy of this machine (now gone)",
            bundles.len()
        )?;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_copies_each_file_and_sets_permissions_as_asked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("app.jar"), "x").unwrap();
        std::fs::write(dir.path().join("scripts/start.sh"), "x").unwrap();
        let (spec, d) = appspec::load(
            "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /srv/app\nfile_exists_behavior: RETAIN\npermissions:\n  - object: /srv/app\n    pattern: \"*.sh\"\n    mode: 755\n    owner: app\n    type: [file]\n",
        );
        assert!(d.is_empty(), "{d:?}");
        let rev = Revision {
            dir: dir.path().to_path_buf(),
            spec: spec.unwrap(),
            id: "d-1".into(),
        };
        let cmds = install_commands(&rev, "/a");
        assert_eq!(
            cmds,
            [
                "mkdir -p '/srv/app'",
                "runway_cd_install '/a/app.jar' '/srv/app/app.jar' RETAIN",
                "runway_cd_install '/a/scripts/start.sh' '/srv/app/scripts/start.sh' RETAIN",
                "chown -h 'app' '/srv/app/scripts/start.sh'",
                "chmod '755' '/srv/app/scripts/start.sh'",
            ]
        );
    }

    #[test]
    fn globs_match_names_as_appspec_patterns_do() {
        assert!(super::super::glob_match("*.sh", "start.sh"));
        assert!(!super::super::glob_match("*.sh", "start.shx"));
        assert!(super::super::glob_match("app-?.jar", "app-1.jar"));
        assert!(super::super::glob_match("*", "anything"));
        assert!(!super::super::glob_match("a*b", "ac"));
    }
}
