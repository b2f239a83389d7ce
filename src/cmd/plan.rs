//! `runway plan`: does the build run, which jobs, which deploys fire, who gets mail.
//! Human output by default; `--json` in the shape design.md promises.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CmdError, RefArgs, Style, resolve_target};
use crate::config::{self, diag::Level};
use crate::exit;
use crate::plan::{self, Plan, Settings};

/// The flags of `runway plan`.
#[derive(clap::Args)]
pub struct PlanArgs {
    /// A git work tree, a bare repository, or a plain directory.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Branch, tag, event, commit message.
    #[command(flatten)]
    pub refs: crate::cmd::run::RefFlags,
    /// Print JSON for programs.
    #[arg(long)]
    pub json: bool,
}

/// Plans the build of PATH and writes it. Diagnostics go to `err`.
pub fn run(
    path: &Path,
    refs: &RefArgs,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
    style: Style,
) -> Result<i32, CmdError> {
    let target = resolve_target(path, refs)?;
    let loaded = config::load_bytes(&target.config_bytes);
    for d in &loaded.diagnostics {
        if d.level >= Level::Warning {
            writeln!(err, "{}", d.render(&target.config_name))?;
        }
    }
    // A file that is not text, too large, not YAML or past a limit has no plan.
    if loaded.unreadable().is_some() {
        return Ok(exit::USAGE);
    }
    let settings = Settings {
        build_number: 1,
        ..Settings::default()
    };
    let plan = plan::plan(&loaded.config, &target.event, &settings);
    if let Some(e) = &plan.error {
        writeln!(err, "{}", e.render(&target.config_name))?;
    }
    if json {
        let mut value = serde_json::to_value(&plan).map_err(std::io::Error::other)?;
        // Beside each job's env (the values the job sees), the text as written.
        for (job, v) in plan.jobs.iter().zip(
            value["jobs"]
                .as_array_mut()
                .map(|a| a.iter_mut())
                .into_iter()
                .flatten(),
        ) {
            let written: serde_json::Map<String, serde_json::Value> = job
                .env
                .iter()
                .map(|e| (e.name.clone(), e.value.clone().into()))
                .collect();
            v["env_as_written"] = written.into();
        }
        value["diagnostics"] = loaded.diagnostics.iter().map(|d| d.to_json()).collect();
        serde_json::to_writer_pretty(&mut *out, &value).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        write_human(&plan, out, style)?;
    }
    Ok(if plan.error.is_some() {
        exit::USAGE
    } else {
        exit::PASSED
    })
}

/// The plan as a person reads it.
pub fn write_human(plan: &Plan, out: &mut dyn Write, style: Style) -> std::io::Result<()> {
    let verdict = if plan.build.runs {
        style.paint("1;32", "runs")
    } else {
        style.paint("1;33", "does not run")
    };
    writeln!(out, "Build {verdict}: {}", plan.build.reason)?;
    for note in &plan.notes {
        writeln!(out, "  note: {note}")?;
    }
    if plan.build.runs {
        writeln!(
            out,
            "{} job(s) in stage(s): {}{}",
            plan.jobs.len(),
            plan.stages.join(", "),
            if plan.fast_finish {
                " (fast_finish)"
            } else {
                ""
            }
        )?;
    }
    for job in &plan.jobs {
        let mut head = format!("Job {}  [{}]", job.number, job.stage);
        if let Some(n) = &job.name {
            head.push_str(&format!("  \"{n}\""));
        }
        for (k, v) in &job.matrix {
            head.push_str(&format!("  {k}: {v}"));
        }
        if job.allow_failure {
            head.push_str("  (allowed to fail)");
        }
        writeln!(out, "{}", style.paint("1", &head))?;
        if !job.env.is_empty() {
            let env: Vec<String> = job
                .env
                .iter()
                .map(|v| format!("{}={}", v.name, v.value))
                .collect();
            writeln!(out, "    env: {}", env.join(" "))?;
        }
        for d in &job.deploys {
            let what = if d.fires { "fires" } else { "skipped" };
            writeln!(out, "    deploy {}: {what}: {}", d.provider, d.reason)?;
        }
    }
    let email = &plan.notifications.email;
    if email.enabled {
        let to = if email.recipients.is_empty() {
            "(nobody: no recipients and no commit author)".to_string()
        } else {
            email.recipients.join(", ")
        };
        writeln!(
            out,
            "Email: {to}; on_success: {}, on_failure: {} ({})",
            email.on_success.as_str(),
            email.on_failure.as_str(),
            email.reason
        )?;
    } else {
        writeln!(out, "Email: none ({})", email.reason)?;
    }
    Ok(())
}
