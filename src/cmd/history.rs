//! `runway builds [--repo R] [--branch B] [--json]` and
//! `runway log BUILD[.JOB] [--repo R] [--follow]`: the recorded build history read back,
//! and a server build followed as it runs.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use super::CmdError;
use crate::exit;
use crate::store::{self, BuildRow, Store};

use std::path::Path;

use super::open_store as open;

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
        writeln!(
            out,
            "no builds recorded in {} (runway run --notify records them)",
            store::default_dir().display()
        )?;
    }
    for b in rows {
        let what = b
            .tag
            .as_deref()
            .map(|t| format!("tag {t}"))
            .or(b.branch.clone())
            .unwrap_or_default();
        let took = b
            .finished_at
            .map(|f| format!("{}s", f - b.started_at))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "#{:<5} {:<9} {:<30} {:<20} {} {:>6}",
            b.number,
            b.state,
            b.repo,
            what,
            &b.commit[..b.commit.len().min(7)],
            took
        )?;
    }
    Ok(exit::PASSED)
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
    let mut readable = crate::job::log::Readable::new(out);
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
