//! Travis's limits, in one place: what a job may take (time, silence, log) and how
//! large a build may be. runway's own bounds on what a pushed file may cost (config
//! size, nesting, alias expansion) live beside the code they guard (`config`), and
//! are listed with these in the README ("Limits and masking").

use std::time::Duration;

/// A job's time limit (Travis's default on its public service: 50 minutes).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(50 * 60);

/// [`JOB_TIMEOUT`] as `--timeout` writes it (its default).
pub const JOB_TIMEOUT_ARG: &str = "50m";

/// A job that prints nothing for this long is ended (Travis: 10 minutes).
pub const NO_OUTPUT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// [`NO_OUTPUT_TIMEOUT`] as `--no-output-timeout` writes it (its default).
pub const NO_OUTPUT_TIMEOUT_ARG: &str = "10m";

/// A job whose log passes this is terminated and errored (Travis: 4 MB).
pub const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;

/// The jobs one build may have (Travis's documented limit).
pub const MAX_JOBS: usize = 200;
