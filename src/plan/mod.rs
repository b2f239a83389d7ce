//! Pure decisions about one build: does it run, which jobs, which deploys fire,
//! who gets mail, and why (docs/semantics.md §3, §4, §6, §7).
//!
//! Input: a normalised [`Config`] and the [`BuildEvent`] that triggered the build.
//! Output: a [`Plan`] whose every "no" carries the reason Travis would have given.
//! The matrix follows travis-yml's `Matrix#jobs` step by step: expand, include,
//! default, shared, global, env, exclude, uniq, filter; then stages and numbering.

use serde::Serialize;

use crate::config::Config;
use crate::config::condition::{self, Facts};
use crate::config::diag::Pos;
use crate::config::model::{self, EnvVar, bool_of, seq, str_of};
use crate::config::schema;
use crate::config::views::{self, DeployKeys};
use crate::config::yaml::{Entry, Node, Value};
use crate::event::{BuildEvent, EventType};

mod decide;
mod deploys;
mod email;
mod matrix;
mod stages;

pub use decide::{branch_matches, decide_build, skip_ci};
pub use deploys::deploy_plan;
use email::*;
use matrix::*;
use stages::*;

/// Travis's documented limit on the jobs of one build (docs/semantics.md §4).
pub use crate::limits::MAX_JOBS;

/// A matrix that would expand (with `jobs.include`) to more jobs than this is refused
/// before it is built: excludes and `if:` could still bring it under [`MAX_JOBS`], but
/// no real config comes near, and a pushed file must not make planning slow.
pub const MAX_EXPANSION: usize = 1_000;

/// Root keys that are not inherited by jobs (travis-yml `Matrix::DROP`).
const NOT_SHARED: &[&str] = &[
    "jobs",
    "import",
    "stages",
    "notifications",
    "version",
    "allow_failure",
    "global_env",
];

/// Deploy `on:` keys that compare a runtime version with `TRAVIS_<RT>_VERSION`.
const RUNTIME_KEYS: &[(&str, &str)] = &[
    ("jdk", "jdk"),
    ("node", "node_js"),
    ("node_js", "node_js"),
    ("ruby", "rvm"),
    ("rvm", "rvm"),
    ("python", "python"),
    ("php", "php"),
    ("go", "go"),
    ("perl", "perl"),
    ("scala", "scala"),
    ("rust", "rust"),
    ("otp_release", "otp_release"),
    ("ghc", "ghc"),
    ("dart", "dart"),
    ("elixir", "elixir"),
    ("crystal", "crystal"),
    ("julia", "julia"),
];

/// Whether the build runs, and why (not).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Decision {
    /// True when the build runs.
    pub runs: bool,
    /// Why.
    pub reason: String,
}

/// What happens with one deploy of one job.
#[derive(Clone, Debug, Serialize)]
pub struct DeployPlan {
    /// The provider name (`s3`, `codedeploy`, …).
    pub provider: String,
    /// True when it would run after a passing script.
    pub fires: bool,
    /// Why it fires or not.
    pub reason: String,
    /// The provider's options, normalised (for the runner).
    #[serde(skip)]
    pub config: Node,
}

/// One job of the build.
#[derive(Clone, Debug, Serialize)]
pub struct JobPlan {
    /// `BUILD.N`, N counting from 1 in stage order.
    pub number: String,
    /// `name:` of the job, if any (`TRAVIS_JOB_NAME`).
    pub name: Option<String>,
    /// The stage (default `test`).
    pub stage: String,
    /// The expansion values that define the job, as written.
    #[serde(serialize_with = "ser_pairs")]
    pub matrix: Vec<(String, String)>,
    /// The job's env vars, global ones first, as written (shell text). `--json` shows
    /// the values the job sees, and the text as written under `env_as_written`.
    #[serde(serialize_with = "ser_env")]
    pub env: Vec<EnvVar>,
    /// True when the job may fail without failing the build.
    pub allow_failure: bool,
    /// The deploys, in order.
    pub deploys: Vec<DeployPlan>,
    /// The job's full config (root keys merged with its own).
    #[serde(skip)]
    pub config: Node,
}

/// How often to mail for one outcome (§7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    /// Every build.
    Always,
    /// Never.
    Never,
    /// When the result differs from the previous finished build of the branch.
    Change,
}

impl Frequency {
    /// The name as written in `.travis.yml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Frequency::Always => "always",
            Frequency::Never => "never",
            Frequency::Change => "change",
        }
    }

    fn parse(s: &str) -> Option<Frequency> {
        match s {
            "always" | "true" => Some(Frequency::Always),
            "never" | "false" => Some(Frequency::Never),
            "change" | "changed" => Some(Frequency::Change),
            _ => None,
        }
    }
}

/// The email policy of §7.
#[derive(Clone, Debug, Serialize)]
pub struct EmailPolicy {
    /// False for `email: false`, `enabled: false`, a false `if:`, or pull requests.
    pub enabled: bool,
    /// Who gets it: configured recipients, else the commit's author and committer.
    pub recipients: Vec<String>,
    /// When a passing build mails.
    pub on_success: Frequency,
    /// When a failing (or errored, canceled) build mails.
    pub on_failure: Frequency,
    /// Why it is enabled or not, and where the recipients come from.
    pub reason: String,
}

/// Notifications the runner acts on.
#[derive(Clone, Debug, Serialize)]
pub struct Notifications {
    /// Email.
    pub email: EmailPolicy,
}

/// The whole plan of one build.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Does the build run?
    pub build: Decision,
    /// The stages in order (after dropping empty ones and false `if:`s).
    pub stages: Vec<String>,
    /// The jobs in stage order; empty when the build does not run.
    pub jobs: Vec<JobPlan>,
    /// `fast_finish`.
    pub fast_finish: bool,
    /// Who gets mail, when.
    pub notifications: Notifications,
    /// Things worth saying (skipped jobs and stages).
    pub notes: Vec<String>,
    /// Why the config cannot be built (too many jobs), with the place to fix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<PlanError>,
}

/// A config that cannot be built, and where.
#[derive(Clone, Debug, Serialize)]
pub struct PlanError {
    /// 1-based line of the key to change.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl PlanError {
    /// `FILE:LINE:COL: error: message`, as lint prints diagnostics.
    pub fn render(&self, file: &str) -> String {
        format!("{file}:{}:{}: error: {}", self.line, self.col, self.message)
    }
}

fn ser_pairs<S: serde::Serializer>(v: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for (k, val) in v {
        m.serialize_entry(k, val)?;
    }
    m.end()
}

fn ser_env<S: serde::Serializer>(v: &[EnvVar], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(v.len()))?;
    for e in v {
        m.serialize_entry(&e.name, &e.shell_value())?;
    }
    m.end()
}

/// Inputs beyond the config and the event.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// The build number (job numbers are `N.i`).
    pub build_number: u64,
    /// Repository settings (for `env()` in conditions).
    pub env: Vec<EnvVar>,
}

/// Plans a build.
pub fn plan(config: &Config, event: &BuildEvent, settings: &Settings) -> Plan {
    let mut notes = Vec::new();
    let global_env = config.global_env();
    let build = decide_build(config, event, &global_env, settings);
    let email = email_policy(
        config,
        event,
        &facts(config, &config.root, event, &global_env, settings),
    );
    let fast_finish = config.fast_finish();
    let mut plan = Plan {
        build,
        stages: Vec::new(),
        jobs: Vec::new(),
        fast_finish,
        notifications: Notifications { email },
        notes: Vec::new(),
        error: None,
    };
    if !plan.build.runs {
        return plan;
    }
    let jobs = match matrix(config, event, settings, &global_env, &mut notes) {
        Ok(jobs) => jobs,
        Err(error) => {
            plan.build = Decision {
                runs: false,
                reason: error.message.clone(),
            };
            plan.error = Some(error);
            plan.notes = notes;
            return plan;
        }
    };
    let (stages, jobs) = order_stages(config, event, settings, &global_env, jobs, &mut notes);
    let build_number = settings.build_number.max(1);
    plan.jobs = jobs
        .into_iter()
        .enumerate()
        .map(|(i, (stage, job))| {
            job_plan(
                config,
                event,
                &global_env,
                format!("{build_number}.{}", i + 1),
                stage,
                job,
            )
        })
        .collect();
    plan.stages = stages;
    plan.notes = notes;
    plan
}

fn job_plan(
    config: &Config,
    event: &BuildEvent,
    global_env: &[EnvVar],
    number: String,
    stage: String,
    job: Job,
) -> JobPlan {
    let env = job_env(global_env, &job);
    let matrix: Vec<(String, String)> = expand_keys()
        .into_iter()
        .filter(|k| *k != "env")
        .filter_map(|k| {
            let v = job_get(&job, k)?;
            let text = match &v.value {
                Value::Seq(items) => items.first()?.as_str()?.to_string(),
                _ => v.as_str()?.to_string(),
            };
            Some((k.to_string(), text))
        })
        .collect();
    let allow_failure = bool_of(job_get(&job, "allow_failure"), false)
        || config.allow_failures().iter().any(|rule| {
            let mut sink = Vec::new();
            let f = facts(
                config,
                &model::map_node(Pos::default(), job.clone()),
                event,
                &env,
                &Settings::default(),
            );
            rule_applies(rule, &f, "jobs.allow_failures", &mut sink)
                && rule_matches(rule, &job, global_env)
        });
    let deploys = seq(job_get(&job, "deploy"))
        .iter()
        .map(|d| deploy_plan(d, event, &job))
        .collect();
    JobPlan {
        number,
        name: str_of(job_get(&job, "name")).map(str::to_string),
        stage,
        matrix,
        env,
        allow_failure,
        deploys,
        config: model::map_node(Pos::default(), job),
    }
}

/// The facts a condition sees for a job (or the root).
fn facts(
    config: &Config,
    job: &Node,
    event: &BuildEvent,
    env: &[EnvVar],
    settings: &Settings,
) -> Facts {
    let mut f = Facts::default();
    let first = |key: &str| {
        let n = job.get(key).or_else(|| config.get(key));
        match n.map(|n| &n.value) {
            Some(Value::Seq(items)) => items.first().and_then(|i| i.as_str()).map(str::to_string),
            _ => str_of(n).map(str::to_string),
        }
    };
    let mut set = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            f.vars.insert(k.to_string(), v);
        }
    };
    set("type", Some(event.event.as_str().into()));
    set("repo", Some(event.repo.clone()));
    set(
        "branch",
        Some(event.travis_branch().to_string()).filter(|b| !b.is_empty()),
    );
    set("tag", event.tag.clone());
    set("commit_message", Some(event.commit_message.clone()));
    set("os", first("os").or(Some("linux".into())));
    set("dist", first("dist"));
    set("group", first("group"));
    set("sudo", first("sudo"));
    set(
        "language",
        Some(
            first("language").map_or_else(|| config.language(), |l| schema::canonical_language(&l)),
        ),
    );
    set("fork", Some("false".into()));
    set("draft", Some("false".into()));
    if event.event == EventType::PullRequest {
        set("head_repo", Some(event.repo.clone()));
    }
    for v in settings.env.iter().chain(env) {
        f.env.insert(v.name.clone(), v.plain_value().to_string());
    }
    f
}
/// The plan as a person reads it (`runway plan`, a build's "View config" page), with
/// `paint(code, text)` for its emphasis (ANSI SGR codes, or none).
pub fn write_human(
    plan: &Plan,
    out: &mut dyn std::io::Write,
    paint: &dyn Fn(&str, &str) -> String,
) -> std::io::Result<()> {
    let verdict = if plan.build.runs {
        paint("1;32", "runs")
    } else {
        paint("1;33", "does not run")
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
        writeln!(out, "{}", paint("1", &head))?;
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
