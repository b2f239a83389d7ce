//! `runway plan`: does the build run, which jobs, which deploys fire, who gets mail.
//! Human output by default; `--json` in the shape design.md promises.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CmdError, RefArgs, Style, resolve_target};
use crate::config::{self, diag::Level};
use crate::exit;
use crate::plan::{self, Settings};

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
        plan::write_human(&plan, out, &|code, text| style.paint(code, text))?;
    }
    Ok(if plan.error.is_some() {
        exit::USAGE
    } else {
        exit::PASSED
    })
}
