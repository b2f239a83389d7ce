//! `runway codedeploy rehearse BUNDLE...`: the CodeDeploy agent's side of a deployment,
//! rehearsed on a throwaway copy of this machine ([`crate::deploy::rehearse`]). Always in
//! the job sandbox: a rehearsal writes to absolute paths and makes users, which on the
//! bare host would change the machine.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::CmdError;
use crate::deploy::rehearse::{self, RehearseOptions};
use crate::exit;
use crate::sandbox::{Namespaces, Policy};

/// Runs the rehearsal and returns its exit code.
pub fn rehearse(
    bundles: &[PathBuf],
    application: String,
    group: String,
    hold: bool,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let sandbox = Namespaces::new(Policy::default());
    if let Err(e) = sandbox.check() {
        writeln!(
            out,
            "runway: a rehearsal needs the job sandbox, which cannot be made here: {e}"
        )?;
        writeln!(out, "runway: {}", e.hint())?;
        return Ok(exit::ERRORED);
    }
    let opts = RehearseOptions {
        application,
        group,
        sandbox: Arc::new(sandbox),
        hold,
    };
    match rehearse::rehearse(bundles, &opts, out) {
        Ok(code) => Ok(code),
        Err(rehearse::RehearseError::Bundle(why)) => Err(CmdError::Usage(why)),
        Err(rehearse::RehearseError::Io(e)) => Err(e.into()),
    }
}
