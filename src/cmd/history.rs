//! `runway builds [--repo R] [--branch B] [--json]` and
//! `runway log BUILD[.JOB] [--repo R] [--follow]`: the recorded build history read back,
//! and a server build followed as it runs.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use super::CmdError;
use crate::exit;
use crate::store::{self, BuildRow, Store};

use std::path::{Path, PathBuf};

use super::open_store as open;

/// The flags of `runway builds`.
#[derive(clap::Args)]
pub struct BuildsArgs {
    /// Only this repository (owner/repo).
    #[arg(long)]
    pub repo: Option<String>,
    /// Only this branch.
    #[arg(long)]
    pub branch: Option<String>,
    /// Print JSON for programs.
    #[arg(long)]
    pub json: bool,
    /// runway.toml: its `database_url_env` names the PostgreSQL store to read.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The flags of `runway log`.
#[derive(clap::Args)]
pub struct LogArgs {
    /// `12` or `12.2`.
    pub build: String,
    /// The repository, when several have this build number.
    #[arg(long)]
    pub repo: Option<String>,
    /// Follow a queued or running server build until it ends; exit with its result.
    #[arg(long, short)]
    pub follow: bool,
    /// Keep Travis's fold and timer markers (for tools).
    #[arg(long)]
    pub raw: bool,
    /// runway.toml: its `database_url_env` names the PostgreSQL store to read.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Lists builds, newest first.
pub fn builds(
    repo: Option<&str>,
    branch: Option<&str>,
    json: bool,
    config: Option<&Path>,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let st = open(config)?;
    let rows = st.builds(repo, branch)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &rows).map_err(std::io::Error::other)?;
        writeln!(out)?;
        return Ok(exit::PASSED);
    }
    if rows.is_empty() {
        writeln!(out, "{}", none_found(repo, branch, &store::default_dir()))?;
    } else {
        write!(out, "{}", table(&rows))?;
    }
    Ok(exit::PASSED)
}

/// What `runway builds` says when it lists nothing: of that branch, of that repository,
/// or nothing recorded at all (and how builds get recorded).
fn none_found(repo: Option<&str>, branch: Option<&str>, dir: &Path) -> String {
    match (repo, branch) {
        (Some(r), Some(b)) => format!("no build of branch {b} of {r}"),
        (None, Some(b)) => format!("no build of branch {b}"),
        (Some(r), None) => format!("no build of {r}"),
        (None, None) => format!(
            "no builds recorded in {} (runway run --notify records them)",
            dir.display()
        ),
    }
}

/// The builds as a table for people: a header row, then one aligned row per build
/// with its start (UTC) and its commit's first line.
fn table(rows: &[store::BuildRow]) -> String {
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|b| {
            let what = b
                .tag
                .as_deref()
                .map(|t| format!("tag {t}"))
                .or(b.branch.clone())
                .unwrap_or_default();
            let took = b
                .finished_at
                .map(|f| {
                    crate::job::log::human(std::time::Duration::from_secs(
                        (f - b.started_at).max(0) as u64,
                    ))
                })
                .unwrap_or_else(|| "-".into());
            let started = crate::clock::utc(b.started_at)
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_string();
            let first: String = b
                .message
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(60)
                .collect();
            [
                format!("#{}", b.number),
                b.state.as_str().to_string(),
                b.repo.clone(),
                what,
                b.commit[..b.commit.len().min(7)].to_string(),
                started[..started.len().min(16)].to_string(),
                took,
                first,
            ]
        })
        .collect();
    let head = [
        "#",
        "STATE",
        "REPO",
        "BRANCH",
        "COMMIT",
        "STARTED (UTC)",
        "TOOK",
        "MESSAGE",
    ];
    let mut width = head.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: &[&str]| {
        let mut l = String::new();
        for (i, c) in row.iter().enumerate() {
            if i + 1 == row.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(&head);
    for row in &cells {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    out
}

/// Prints the log of a build's jobs (`12`) or one job (`12.2`). With `follow`, a
/// queued or running build is followed to its end, and the exit code is the build's
/// result, whether it had ended already or not.
pub fn log(
    spec: &str,
    repo: Option<&str>,
    (follow, raw): (bool, bool),
    config: Option<&Path>,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    if raw {
        return log_to(spec, repo, follow, config, out);
    }
    // Colours only on a terminal: a pipe or a file gets plain text.
    let sink: Box<dyn Write + '_> = if super::Style::stdout().is_terminal() {
        Box::new(out)
    } else {
        Box::new(crate::job::log::PlainWriter::new(out))
    };
    let mut readable = crate::job::log::Readable::new(sink);
    let code = log_to(spec, repo, follow, config, &mut readable);
    readable.flush()?;
    code
}

fn log_to(
    spec: &str,
    repo: Option<&str>,
    follow: bool,
    config: Option<&Path>,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let (build, job) = match spec.split_once('.') {
        Some((b, j)) => (b, Some(j)),
        None => (spec, None),
    };
    let number: u64 = build
        .trim_start_matches('#')
        .parse()
        .map_err(|_| CmdError::Usage(format!("\"{spec}\" is not BUILD or BUILD.JOB")))?;
    let st = open(config)?;
    let row = super::find_build(&st, repo, number)?;
    if follow && job.is_none() {
        return follow_build(&st, row, out);
    }
    let jobs = st.jobs(row.id)?;
    let wanted: Vec<_> = jobs
        .iter()
        .filter(|j| job.is_none_or(|n| j.is(number, n)))
        .collect();
    // A build a crash interrupted (or one that ended before its first job) kept its
    // log up to that point: show it, or say that it ran nothing, and why it ended.
    if job.is_none() && jobs.is_empty() {
        let partial = st.partial_log(row.id);
        let why = row
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let ran = if partial.is_some() {
            ""
        } else {
            " ran no job;"
        };
        out.write_all(&partial.unwrap_or_default())?;
        writeln!(
            out,
            "runway: build {}#{number}{ran} is {}{why}",
            row.repo, row.state
        )?;
        return Ok(exit::PASSED);
    }
    if wanted.is_empty() {
        return Err(CmdError::Usage(format!(
            "build #{number} has no job {}",
            job.unwrap_or("?")
        )));
    }
    for j in wanted {
        out.write_all(&j.log)?;
    }
    Ok(exit::PASSED)
}

/// Prints a server build's log as it grows (the log file the server writes), until the
/// build ends; then its result, which is also the exit code.
fn follow_build(st: &Store, mut row: BuildRow, out: &mut dyn Write) -> Result<i32, CmdError> {
    let path = st.partial_log_path(row.id);
    let mut read = 0u64;
    let mut said_queued = false;
    loop {
        if let Ok(mut f) = std::fs::File::open(&path) {
            f.seek(SeekFrom::Start(read))?;
            read += std::io::copy(&mut f, out)?;
            out.flush()?;
        }
        let ended = !row.state.is_active();
        if ended {
            break;
        }
        if row.state == crate::store::Status::Queued && !said_queued {
            writeln!(
                out,
                "runway: build {}#{} is queued; waiting for it to start",
                row.repo, row.number
            )?;
            out.flush()?;
            said_queued = true;
        }
        std::thread::sleep(Duration::from_millis(200));
        row = st
            .by_id(row.id)?
            .ok_or_else(|| CmdError::Usage(format!("build #{} was deleted", row.number)))?;
    }
    if read == 0 {
        // Not a server build (a hook's foreground build writes no log file): its jobs.
        for j in st.jobs(row.id)? {
            out.write_all(&j.log)?;
        }
    }
    let why = row
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    writeln!(
        out,
        "runway: build {}#{} {}{why}",
        row.repo, row.number, row.state
    )?;
    Ok(match row.state.as_str() {
        "passed" => exit::PASSED,
        "failed" => exit::FAILED,
        "canceled" => exit::CANCELED,
        _ => exit::ERRORED,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 28 (11): a header row, aligned columns for every state, the start and the
    /// commit's first line; an empty answer says of what.
    #[test]
    fn builds_are_a_table_with_a_header() {
        let row = |number, state, branch: &str, message: &str| store::BuildRow {
            number,
            state,
            repo: "o/app".into(),
            branch: Some(branch.into()),
            commit: "abcdef1234".into(),
            started_at: 1_796_138_438,
            finished_at: Some(1_796_138_438 + 75),
            message: message.into(),
            ..store::BuildRow::default()
        };
        let t = table(&[
            row(
                12,
                store::Status::Canceled,
                "feature/long-name",
                "Fix it\n\nbody",
            ),
            row(3, store::Status::Passed, "main", "First"),
        ]);
        insta::assert_snapshot!(t);
        assert_eq!(
            none_found(None, Some("nope"), Path::new("/s")),
            "no build of branch nope"
        );
    }
}
