//! The one options value of a build: what was asked of it (its jobs, their limits,
//! deploys, the sandbox), made once by the command or the server and read by every
//! layer below from the same value.

use std::path::PathBuf;
use std::time::Duration;

/// How the jobs' live output is rendered (their stored logs are always raw).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Travis's markers, as stored (the server's live log, `--raw`).
    #[default]
    Raw,
    /// For a person through a pipe or in a file: sections, no colour or marker.
    Plain,
    /// For a person at a terminal: sections and colours.
    Terminal,
}

/// How a build runs: which jobs, their limits, what they may do. Made once from the
/// command line or runway.toml and shared by reference (an `Arc`) down the layers:
/// the service, the build, each job.
#[derive(Clone, Debug)]
pub struct Options {
    /// `--job N`: only this job.
    pub job: Option<String>,
    /// `--os OS`: only the jobs for this os.
    pub os: Option<String>,
    /// Up to this many jobs of a stage at once.
    pub parallel: usize,
    /// The cache directory (default: `RUNWAY_CACHE_DIR` and friends).
    pub cache_dir: Option<PathBuf>,
    /// Keep each job's workspace and say where.
    pub keep_workspace: bool,
    /// A job's time limit.
    pub timeout: Duration,
    /// A job's limit without output.
    pub no_output_timeout: Duration,
    /// Run the deploy providers for real (else a dry run).
    pub deploy: bool,
    /// A runtime the machine cannot provide is replaced by what it has, named.
    pub substitutes: bool,
    /// The codedeploy bundle rehearsed as the agent would run it.
    pub rehearse_deploy: bool,
    /// Where jobs run.
    pub sandbox: SandboxOptions,
    /// How the jobs' live output is rendered.
    pub output: Output,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            job: None,
            os: None,
            parallel: 1,
            cache_dir: None,
            keep_workspace: false,
            timeout: crate::limits::JOB_TIMEOUT,
            no_output_timeout: crate::limits::NO_OUTPUT_TIMEOUT,
            deploy: false,
            substitutes: false,
            rehearse_deploy: false,
            sandbox: SandboxOptions::default(),
            output: Output::Raw,
        }
    }
}

/// How jobs are isolated ([`crate::sandbox`]).
#[derive(Clone, Debug, Default)]
pub struct SandboxOptions {
    /// `--sandbox namespaces|none`.
    pub mode: crate::sandbox::Mode,
    /// `network = false`: the job gets loopback only.
    pub no_network: bool,
    /// More paths jobs must not see (runway.toml's `hide`, the config file itself).
    pub hide: Vec<PathBuf>,
    /// The server made a sandbox at start (and warned about `none`): skip it per build.
    pub checked: bool,
    /// Memory and processes per job (`--memory`, `--max-processes`; runway.toml's
    /// `job_memory`, `job_processes`).
    pub limits: crate::sandbox::cgroup::Limits,
    /// Disk per job (`--disk`; runway.toml's `job_disk`).
    pub disk: crate::sandbox::disk::Budget,
}
