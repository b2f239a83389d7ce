//! What a `runway worker` and a serve node say to each other over HTTP, all of it
//! under `Authorization: Bearer $RUNWAY_WORKER_TOKEN`:
//!
//! - `POST /api/worker/claim` ([`Claim`]) waits up to [`Claim::wait_ms`] for a job the
//!   worker's labels can take: `200` with an [`Assignment`], or `204` (ask again);
//! - `GET /api/worker/tasks/ID/pack` the commit and its history, as a git pack;
//! - `POST /api/worker/tasks/ID/log?worker=W&attempt=A&seq=N` one chunk of the job's
//!   log (the body); the same chunk sent twice is kept once; `200` with [`ChunkAck`]:
//!   the highest chunk held with every one before it (the worker sends again what
//!   follows it);
//! - `POST /api/worker/tasks/ID/beat` ([`Held`]) renews the lease: `200` with
//!   [`BeatAnswer`] (`cancel` when the build was canceled);
//! - `POST /api/worker/tasks/ID/end` ([`End`]) the job's [`Report`]; with
//!   [`End::next`], a claim made at once (no wait): `200` with [`Ended`], the next job
//!   if one is queued for the worker, so a busy worker asks once per job, not twice.
//!
//! Every call carries the worker's protocol version ([`PROTOCOL`]); another version is
//! answered `426` with both named. `409 Conflict` on a task's calls: the task is no longer this worker's (its lease
//! ran out): the worker stops the job. `401`: a wrong token. Every call about a task
//! also brings the task's secret ([`Assignment::secret`], header [`TASK_SECRET`]): it
//! is handed to the worker that claimed the task and to no one else (`403` without it).

/// The header that carries a task's secret on every call about that task.
pub const TASK_SECRET: &str = "X-Runway-Task-Secret";

/// The version of what workers and nodes say to each other, bumped with every change
/// to a call or a wire type. A worker sends it on every call (header [`PROTOCOL`]); a
/// node refuses a worker of another version (`426`), naming both. Version 2: the
/// assignment carries the compiled job ([`job::Job`]), not the build to plan again.
/// Version 3: its event carries the pull request whole (head branch, sha, slug, fork).
/// Version 5: a report may claim the next job ([`End::next`], answered by [`Ended`]).
pub const VERSION: u32 = 5;

/// The header that carries the worker's [`VERSION`].
pub const PROTOCOL: &str = "X-Runway-Protocol";

/// The version this worker speaks: [`VERSION`], or `RUNWAY_WORKER_PROTOCOL` when set
/// (to try a node with a worker of another version).
pub fn spoken() -> u32 {
    std::env::var("RUNWAY_WORKER_PROTOCOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(VERSION)
}

/// What is wrong with a worker that sent `given` as its version, if anything.
pub fn mismatch(given: Option<&str>) -> Option<String> {
    let theirs = given.map(str::trim);
    if theirs == Some(VERSION.to_string().as_str()) {
        return None;
    }
    let said = match theirs {
        Some(v) => format!("version {v}"),
        None => "no version (a runway from before version 1)".to_string(),
    };
    Some(format!(
        "the worker speaks worker protocol {said}; this node (runway {}) speaks version {VERSION}: run one runway version on the nodes and their workers",
        env!("CARGO_PKG_VERSION")
    ))
}

pub mod job;

use serde::{Deserialize, Serialize};

use crate::job::{JobOutcome, JobResult};
use crate::settings::Settings;
use crate::store::tasks::Labels;

/// Why `name` cannot name a worker, if it cannot: a name is 1–64 letters, digits,
/// `.`, `_` or `-` (a host name fits), so it reads the same in every list and log.
pub fn name_problem(name: &str) -> Option<String> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(fits) {
        Some(format!(
            "{name:?} cannot name a worker: use 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    } else {
        None
    }
}

/// What a worker may do with a cache archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOp {
    /// Download.
    Get,
    /// Upload (replacing the object whole).
    Put,
}

/// A worker asking for a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claim {
    /// Its `--name`.
    pub name: String,
    /// Its labels (`os`, `arch`, `dist` detected; more from `--label`).
    pub labels: Labels,
    /// How long the server may hold the request open waiting for a job.
    pub wait_ms: u64,
    /// This worker process's own id, made at its start (empty from a worker before it):
    /// what a claim hands it is recorded as handed to this process.
    #[serde(default)]
    pub instance: String,
    /// A call of this process that could have handed it a job (a claim, a report
    /// asking for the next) went unanswered since its last answer: a job handed to
    /// this process then never reached it (it runs one job at a time, and asks for
    /// another only when it has none), so that job is queued again first (its attempt
    /// unchanged: nothing of it ran), not left to its lease and errored.
    #[serde(default)]
    pub unanswered: bool,
}

/// One job for a worker: what it needs to run it and nothing more.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assignment {
    /// The task's id.
    pub task: i64,
    /// Its attempt (1 unless a lost worker's job runs again).
    pub attempt: i64,
    /// The job as the serve node planned it, with its build's trigger (repository,
    /// commit, branch or tag, event) and its limits.
    pub job: job::Job,
    /// The repository's settings: what this job may see.
    pub settings: Settings,
    /// The lease, renewed by each heartbeat.
    pub lease_ms: u64,
    /// How often to beat.
    pub heartbeat_ms: u64,
    /// A runtime that cannot be provided is replaced by the machine's, named.
    pub substitutes: bool,
    /// Caches are in the server's bucket: ask for presigned URLs
    /// (`POST /api/worker/tasks/ID/cache`) instead of using the worker's directory.
    pub remote_cache: bool,
    /// This task's secret, made for this claim: every later call about the task
    /// brings it ([`TASK_SECRET`]); the store keeps only its hash.
    #[serde(default)]
    pub secret: String,
    /// Someone reads the build's live log (or may: a reader on another node is not
    /// known here): the job's first command is sent the moment it starts. Otherwise
    /// it goes as the job's later output does (paced, a tenth of a second at most), or
    /// with the report of a job that ends before: one call for a short job, not two.
    /// A node from before this says nothing: watched.
    #[serde(default = "watched")]
    pub watched: bool,
}

fn watched() -> bool {
    true
}

/// A worker asking for a presigned URL for one of its job's cache archives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheAsk {
    /// The worker.
    pub worker: String,
    /// The attempt it holds.
    pub attempt: i64,
    /// Download or upload.
    pub op: CacheOp,
    /// The branch the archive is stored under.
    pub branch: String,
    /// The cache key.
    pub key: String,
}

/// The URL to use, for minutes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheUrl {
    /// Presigned.
    pub url: String,
}

/// A worker's heartbeat, or a call about a task it holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Held {
    /// The worker.
    pub worker: String,
    /// The attempt it holds.
    pub attempt: i64,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BeatAnswer {
    /// The build was canceled: stop the job.
    pub cancel: bool,
}

/// How a job ended, as the worker saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// passed, failed, errored, canceled.
    pub result: JobResult,
    /// Why (masked by the worker).
    pub reason: String,
    /// A time limit ended it.
    pub timed_out: bool,
    /// Wall time on the worker.
    pub duration_ms: u64,
    /// Runtimes that stood in for what was asked.
    pub substituted: Vec<String>,
}

impl Report {
    /// The report of `o`.
    pub fn of(o: &JobOutcome) -> Report {
        Report {
            result: o.result,
            reason: o.reason.clone(),
            timed_out: o.timed_out,
            duration_ms: o.duration.as_millis() as u64,
            substituted: o.substituted.clone(),
        }
    }

    /// The outcome it reports.
    pub fn outcome(&self) -> JobOutcome {
        JobOutcome {
            result: self.result,
            reason: self.reason.clone(),
            timed_out: self.timed_out,
            duration: std::time::Duration::from_millis(self.duration_ms),
            substituted: self.substituted.clone(),
        }
    }
}

/// The end of a task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct End {
    /// The worker.
    pub worker: String,
    /// The attempt.
    pub attempt: i64,
    /// How the job ended.
    pub report: Report,
    /// The log's last chunk, carried by the report instead of a call of its own
    /// (version 4): every chunk before it is held already. Empty when they carried
    /// the whole log (its number is then how many they were; nothing is stored).
    #[serde(default)]
    pub tail: Option<Tail>,
    /// The worker takes another job (version 5): claimed with the report, waiting for
    /// one as a claim does (`wait_ms`); none came, the answer says so and the worker
    /// claims as usual. Its name is the report's worker's.
    #[serde(default)]
    pub next: Option<Claim>,
}

/// The answer to a report (version 5).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ended {
    /// The job the report's claim ([`End::next`]) got, if one was queued.
    #[serde(default)]
    pub next: Option<Assignment>,
}

/// A log chunk inside a report: its number and its bytes (base64).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tail {
    /// The chunk's number.
    pub seq: i64,
    /// Its bytes, base64.
    pub bytes: String,
}

/// The answer to a log chunk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkAck {
    /// The highest chunk number held with every one before it (-1: none).
    pub held: i64,
    /// The build was canceled: stop the job (as a heartbeat's answer says it; a job
    /// that prints hears it with its next chunk, not its next heartbeat).
    #[serde(default)]
    pub cancel: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_of_another_protocol_is_named_with_both_versions() {
        assert_eq!(mismatch(Some(&VERSION.to_string())), None);
        let other = mismatch(Some(&(VERSION + 1).to_string())).unwrap();
        assert!(
            other.contains(&format!("version {}", VERSION + 1)),
            "{other}"
        );
        assert!(
            other.contains(&format!("speaks version {VERSION}")),
            "{other}"
        );
        assert!(mismatch(None).unwrap().contains("no version"));
    }

    #[test]
    fn a_worker_name_is_a_word_of_a_host_name() {
        assert_eq!(name_problem("ci-7.example_1"), None);
        for bad in ["", "a b", "a\tb", "ünï", &"x".repeat(65), "a/b"] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
