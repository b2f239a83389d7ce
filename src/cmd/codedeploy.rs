//! `runway codedeploy rehearse BUNDLE...`: the CodeDeploy agent's side of a deployment,
//! rehearsed on a throwaway copy of this machine ([`crate::deploy::rehearse`]), or on
//! the copy a `--keep` rehearsal left running ([`crate::deploy::kept`]). Always in the
//! job sandbox: a rehearsal writes to absolute paths and makes users, which on the bare
//! host would change the machine.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::CmdError;

use crate::deploy::kept::{self, Request};
use crate::deploy::rehearse::{self, RehearseOptions};
use crate::exit;
use crate::sandbox::Namespaces;

/// `runway codedeploy`: its subcommand.
#[derive(clap::Args)]
pub struct CodedeployArgs {
    /// Rehearse.
    #[command(subcommand)]
    pub action: CodedeployAction,
}

/// `rehearse` (or the kept copy's own process).
#[derive(clap::Subcommand)]
pub enum CodedeployAction {
    /// Deploy bundles (directories, zips, tars with appspec.yml at the top), one after
    /// another, on a throwaway copy of this machine, running the in-place lifecycle as
    /// the CodeDeploy agent does. Exit 0: deployed; 3: failed (or invalid appspec).
    Rehearse {
        /// The revisions, in the order they deploy.
        #[arg(required_unless_present = "stop")]
        bundles: Vec<PathBuf>,
        /// APPLICATION_NAME for the hooks.
        #[arg(long, default_value = "application")]
        application: String,
        /// DEPLOYMENT_GROUP_NAME for the hooks.
        #[arg(long, default_value = "deployment-group")]
        deployment_group: String,
        /// After the last event, keep the copy and what the hooks started running
        /// until standard input ends (to look at it, or send it requests).
        #[arg(long, conflicts_with_all = ["keep", "stop"])]
        hold: bool,
        /// Keep the copy running after this rehearsal (in the background, with what
        /// the hooks started): later rehearsals of this application and deployment
        /// group deploy over it, as on a server, until --stop.
        #[arg(long)]
        keep: bool,
        /// End the kept copy of this application and deployment group (after
        /// deploying BUNDLES on it, when given).
        #[arg(long)]
        stop: bool,
    },
    /// The kept copy's own process, started by `rehearse --keep`.
    #[command(hide = true)]
    Machine {
        /// APPLICATION_NAME.
        #[arg(long)]
        application: String,
        /// DEPLOYMENT_GROUP_NAME.
        #[arg(long)]
        deployment_group: String,
        /// Where it answers rehearsals.
        #[arg(long)]
        socket: PathBuf,
    },
}

/// Runs `runway codedeploy …`.
pub fn command(args: CodedeployArgs, out: &mut dyn Write) -> Result<i32, CmdError> {
    match args.action {
        CodedeployAction::Rehearse {
            bundles,
            application,
            deployment_group,
            hold,
            keep,
            stop,
        } => rehearse(
            RehearseArgs {
                bundles,
                application,
                group: deployment_group,
                hold,
                keep,
                stop,
            },
            out,
        ),
        CodedeployAction::Machine {
            application,
            deployment_group,
            socket,
        } => Ok(machine(application, deployment_group, socket)),
    }
}

/// What `runway codedeploy rehearse` was asked.
pub struct RehearseArgs {
    /// The revisions, in order (none with `stop`: only end the kept copy).
    pub bundles: Vec<PathBuf>,
    /// `APPLICATION_NAME`.
    pub application: String,
    /// `DEPLOYMENT_GROUP_NAME`.
    pub group: String,
    /// Hold the throwaway copy until standard input ends.
    pub hold: bool,
    /// Keep the copy running after this rehearsal, for the next ones of this group.
    pub keep: bool,
    /// End the kept copy (after deploying `bundles` on it).
    pub stop: bool,
}

/// Runs the rehearsal and returns its exit code.
pub fn rehearse(args: RehearseArgs, out: &mut dyn Write) -> Result<i32, CmdError> {
    let socket = kept::socket_path(&crate::store::default_dir(), &args.application, &args.group);
    let mut bundles = Vec::new();
    for b in &args.bundles {
        bundles.push(
            std::fs::canonicalize(b)
                .map_err(|e| CmdError::Usage(format!("{}: {e}", b.display())))?,
        );
    }
    let who = format!("{}/{}", args.application, args.group);
    if let Some(stream) = kept::connect(&socket)? {
        if args.hold {
            return Err(CmdError::Usage(format!(
                "--hold: the copy of the machine for {who} is kept already; it runs until --stop"
            )));
        }
        writeln!(out, "On the kept copy of the machine for {who}")?;
        let request = Request {
            bundles,
            stop: args.stop,
        };
        return Ok(kept::ask(stream, &request, out)?);
    }
    if args.stop && bundles.is_empty() {
        writeln!(
            out,
            "No kept copy of the machine for {who}: nothing to stop"
        )?;
        return Ok(exit::PASSED);
    }
    let sandbox = Namespaces::new(crate::service::sandbox::rehearsal_policy());
    if let Err(e) = sandbox.check() {
        writeln!(
            out,
            "runway: a rehearsal needs the job sandbox, which cannot be made here: {e}"
        )?;
        writeln!(out, "runway: {}", e.hint())?;
        return Ok(exit::ERRORED);
    }
    if args.keep && !args.stop {
        writeln!(out, "Starting a kept copy of the machine for {who}")?;
        let stream = kept::spawn(&socket, &args.application, &args.group)?;
        let request = Request {
            bundles,
            stop: false,
        };
        return Ok(kept::ask(stream, &request, out)?);
    }
    let opts = RehearseOptions {
        application: args.application,
        group: args.group,
        sandbox: Arc::new(sandbox),
        hold: args.hold,
    };
    match rehearse::rehearse(&bundles, &opts, out) {
        Ok(code) => Ok(code),
        Err(rehearse::RehearseError::Bundle(why)) => Err(CmdError::Usage(why)),
        Err(rehearse::RehearseError::Io(e)) => Err(e.into()),
    }
}

/// `runway codedeploy machine`: the kept copy's own process (started by
/// `rehearse --keep`, with its listening socket as descriptor 3).
pub fn machine(application: String, group: String, socket: PathBuf) -> i32 {
    let opts = RehearseOptions {
        application,
        group,
        sandbox: Arc::new(Namespaces::new(crate::service::sandbox::rehearsal_policy())),
        hold: false,
    };
    kept::serve(&socket, &opts)
}
