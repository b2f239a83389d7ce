//! `runway lint [FILE] [--json]` (a `.travis.yml`, or an `appspec.yml` as the
//! CodeDeploy agent reads it): every diagnostic as
//! `FILE:LINE:COL: level: key.path: message` (or one JSON document for programs).
//! Exit 0 with warnings only, 1 with errors, 2 when the file cannot be read (or is not
//! text, or is past one of runway's limits: size, nesting, alias expansion).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CmdError, Style};
use crate::config::{self, diag::Level};
use crate::exit;

/// The flags of `runway lint`.
#[derive(clap::Args)]
pub struct LintArgs {
    /// The file to check.
    #[arg(default_value = ".travis.yml")]
    pub file: PathBuf,
    /// Print JSON for programs: {"file","valid","diagnostics":[..]}.
    #[arg(long)]
    pub json: bool,
}

/// Lints one file and writes its diagnostics to `out`. Returns the exit code.
pub fn run(file: &Path, json: bool, out: &mut dyn Write, style: Style) -> Result<i32, CmdError> {
    let bytes = config::read_file(file)
        .map_err(|e| CmdError::Usage(format!("cannot read {}: {e}", file.display())))?;
    // An appspec.yml is read as the CodeDeploy agent reads it.
    let is_appspec = file
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "appspec.yml" || n == "appspec.yaml");
    let loaded = if is_appspec {
        let text = String::from_utf8_lossy(&bytes);
        config::Loaded {
            config: config::Config {
                root: config::model::map_node(config::diag::Pos { line: 1, col: 1 }, Vec::new()),
            },
            diagnostics: crate::appspec::load(&text).1,
        }
    } else {
        config::load_bytes(&bytes)
    };
    let text = String::from_utf8_lossy(&bytes);
    let name = file.display().to_string();
    let not_text = loaded
        .unreadable()
        .is_some_and(|d| matches!(d.code, "encoding" | "too_large" | "limit"));
    let code = if not_text {
        exit::USAGE
    } else if loaded.has_errors() {
        exit::FAILED
    } else {
        exit::PASSED
    };
    if json {
        let doc = serde_json::json!({
            "file": name,
            "valid": !loaded.has_errors(),
            "diagnostics": loaded.diagnostics.iter().map(|d| d.to_json()).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut *out, &doc).map_err(std::io::Error::other)?;
        writeln!(out)?;
        return Ok(code);
    }
    let lines: Vec<&str> = text.lines().collect();
    let (mut errors, mut warnings) = (0, 0);
    for d in &loaded.diagnostics {
        match d.level {
            Level::Error => errors += 1,
            Level::Warning => warnings += 1,
            Level::Info => {}
        }
        let line = d.render(&name);
        let colour = match d.level {
            Level::Error => "1;31",
            Level::Warning => "1;33",
            Level::Info => "36",
        };
        let level = d.level.to_string();
        let line = line.replacen(
            &format!(": {level}: "),
            &format!(": {}: ", style.paint(colour, &level)),
            1,
        );
        writeln!(out, "{line}")?;
        // On a terminal, show the offending line with a caret, as compilers do.
        if style.is_terminal()
            && let Some(src) = lines.get(d.pos.line.wrapping_sub(1))
        {
            writeln!(out, "  {src}")?;
            writeln!(out, "  {}^", " ".repeat(d.pos.col.saturating_sub(1)))?;
        }
    }
    let verdict = if errors > 0 { "invalid" } else { "valid" };
    writeln!(
        out,
        "{name}: {verdict}: {errors} error(s), {warnings} warning(s)"
    )?;
    Ok(code)
}
