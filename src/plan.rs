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

// ---------------------------------------------------------------- build decision (§3)

/// Does the build run at all: `[skip ci]`, `branches:`, the gh-pages rule, root `if:`.
pub fn decide_build(
    config: &Config,
    event: &BuildEvent,
    global_env: &[EnvVar],
    settings: &Settings,
) -> Decision {
    let no = |reason: String| Decision {
        runs: false,
        reason,
    };
    if matches!(event.event, EventType::Push | EventType::PullRequest)
        && let Some(word) = skip_ci(&event.commit_message)
    {
        return no(format!("the commit message contains {word}"));
    }
    let name = event.travis_branch();
    let what = if event.tag.is_some() { "tag" } else { "branch" };
    let branches = config.branches();
    if let Some(views::Branches { only, except }) = &branches
        && !name.is_empty()
    {
        if !only.is_empty() && !only.iter().any(|p| branch_matches(p, name)) {
            return no(format!(
                "{what} \"{name}\" is not in branches.only ({})",
                only.join(", ")
            ));
        }
        if let Some(p) = except.iter().find(|p| branch_matches(p, name)) {
            return no(format!(
                "{what} \"{name}\" is excluded by branches.except ({p})"
            ));
        }
        if is_gh_pages(name) && !only.iter().any(|p| is_gh_pages(p.trim_matches('/'))) {
            return no(format!(
                "gh-pages branches are not built unless branches.only lists them (\"{name}\")"
            ));
        }
    } else if is_gh_pages(name) {
        return no(format!(
            "gh-pages branches are not built unless branches.only lists them (\"{name}\")"
        ));
    }
    if let Some(cond) = config.condition() {
        let f = facts(config, &config.root, event, global_env, settings);
        return match condition::check(cond, &f) {
            Ok(true) => Decision {
                runs: true,
                reason: format!("the root if: \"{}\" is true", condition::excerpt(cond, 0)),
            },
            Ok(false) => no(format!(
                "the root if: \"{}\" is false",
                condition::excerpt(cond, 0)
            )),
            Err(e) => no(format!(
                "the root if: \"{}\" is invalid ({e}), so it counts as false",
                condition::excerpt(cond, 0)
            )),
        };
    }
    let reason = if branches.is_some() {
        format!("{what} \"{name}\" is allowed by branches")
    } else if name.is_empty() {
        "no branch filter applies".to_string()
    } else {
        format!("{what} \"{name}\" is built (no branch filter)")
    };
    Decision { runs: true, reason }
}

/// `[skip ci]`, `[ci skip]` and the other keywords, case-insensitive.
pub fn skip_ci(message: &str) -> Option<String> {
    let lower = message.to_lowercase();
    for kw in ["ci", "travis", "travis ci", "travis-ci", "travisci"] {
        for form in [format!("[skip {kw}]"), format!("[{kw} skip]")] {
            if lower.contains(&form) {
                return Some(form);
            }
        }
    }
    None
}

/// A `branches:` entry: `/regex/` (unanchored Ruby) or an exact name.
pub fn branch_matches(pattern: &str, name: &str) -> bool {
    match pattern
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix('/'))
        .filter(|p| !p.is_empty())
    {
        Some(re) => condition::ruby_regex(re)
            .map(|r| r.is_match(name).unwrap_or(false))
            .unwrap_or(false),
        None => pattern == name,
    }
}

fn is_gh_pages(name: &str) -> bool {
    let l = name.to_lowercase();
    l.contains("gh-pages") || l.contains("gh_pages")
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

// ---------------------------------------------------------------- matrix (§4)

/// A job while the matrix is built: its own keys, in order.
type Job = Vec<Entry>;

fn job_get<'a>(job: &'a Job, key: &str) -> Option<&'a Node> {
    job.iter().find(|e| e.key == key).map(|e| &e.value)
}

fn job_set(job: &mut Job, key: &str, value: Node) {
    match job.iter_mut().find(|e| e.key == key) {
        Some(e) => e.value = value,
        None => job.push(Entry {
            key: key.to_string(),
            key_pos: value.pos,
            value,
        }),
    }
}

/// The root expansion keys in travis-yml's order, `env` last.
fn expand_keys() -> Vec<&'static str> {
    let mut keys: Vec<&str> = schema::expand_keys()
        .into_iter()
        .filter(|k| *k != "jobs")
        .collect();
    keys.push("env");
    keys
}

/// The matrix's axes: each root expansion key present, with its values.
type Axes<'a> = Vec<(&'a str, Vec<Node>)>;

/// The build's jobs, in Travis's order of steps (docs/semantics.md §4): expand, include,
/// the default job, shared keys, env, exclude, uniq, `if:`.
fn matrix(
    config: &Config,
    event: &BuildEvent,
    settings: &Settings,
    global_env: &[EnvVar],
    notes: &mut Vec<String>,
) -> Result<Vec<Job>, PlanError> {
    let keys = expand_keys();
    let axes = axes_of(config, &keys);
    let too_many = |n: usize, included: usize| too_many(&axes, config, n, included);
    // 1. expand: the cartesian product of every expansion key present.
    let size = axes
        .iter()
        .fold(1usize, |n, (_, v)| n.saturating_mul(v.len()));
    if size > MAX_EXPANSION {
        return Err(too_many(size, 0));
    }
    let mut jobs = expand(&axes);
    // 2. include (the single implicit job is dropped when includes exist).
    let includes = config.includes();
    let single = jobs.len() == 1 && axes.iter().all(|(_, v)| v.len() == 1);
    let expanded = if single && !includes.is_empty() {
        0
    } else {
        jobs.len()
    };
    if expanded + includes.len() > MAX_EXPANSION {
        return Err(too_many(expanded + includes.len(), includes.len()));
    }
    let included = included(includes);
    if single && !included.is_empty() {
        jobs.clear();
    }
    let n_expanded = jobs.len();
    let n_included = included.len();
    jobs.extend(included);
    // 3. default job.
    if jobs.is_empty() {
        jobs.push(Vec::new());
    }
    // 4. shared root keys; 5. first values; 6. the first env.
    merge_root(config, &keys, &axes, &mut jobs, n_expanded);
    let facts_for = |job: &Job| {
        let node = model::map_node(Pos::default(), job.clone());
        let env = job_env(global_env, job);
        facts(config, &node, event, &env, settings)
    };
    // 7. exclude.
    let excludes = config.excludes();
    jobs.retain(|job| {
        !excludes.iter().any(|rule| {
            rule_applies(rule, &facts_for(job), "jobs.exclude", notes)
                && rule_matches(rule, job, global_env)
        })
    });
    // 8. uniq; 9. filter by `if:`.
    let mut unique = uniq(jobs);
    unique.retain(|job| job_if_holds(job, &facts_for(job), notes));
    if unique.len() > MAX_JOBS {
        return Err(too_many(unique.len(), n_included));
    }
    Ok(unique)
}

/// Each root expansion key present, with its values (a scalar is one value).
fn axes_of<'a>(config: &Config, keys: &[&'a str]) -> Axes<'a> {
    keys.iter()
        .filter_map(|k| {
            let v = config.expansion(k)?;
            let items = match &v.value {
                Value::Seq(items) => items.clone(),
                _ => vec![v.clone()],
            };
            (!items.is_empty()).then_some((*k, items))
        })
        .collect()
}

/// The error for a build of `n` jobs: it points at the first key with several values
/// (or at `jobs.include` when that is what multiplied) and says what multiplied.
fn too_many(axes: &Axes<'_>, config: &Config, n: usize, included: usize) -> PlanError {
    let (pos, mut sizes) = axes
        .iter()
        .fold((None, Vec::new()), |(pos, mut sizes), (k, v)| {
            sizes.push(format!("{k} {}", v.len()));
            (pos.or_else(|| (v.len() > 1).then(|| v[0].pos)), sizes)
        });
    if included > 0 {
        sizes.push(format!("jobs.include {included}"));
    }
    let pos = pos
        .or(config.include_pos().filter(|_| included > 0))
        .unwrap_or(Pos { line: 1, col: 1 });
    PlanError {
        line: pos.line,
        col: pos.col,
        message: format!(
            "the build has {n} jobs ({}); Travis limits a build to {MAX_JOBS} jobs",
            sizes
                .join(" × ")
                .replace(" × jobs.include", " + jobs.include")
        ),
    }
}

/// The cartesian product of the axes: one job per combination (`env` values as a
/// one-item list, as a job's env is written).
fn expand(axes: &Axes<'_>) -> Vec<Job> {
    if axes.is_empty() {
        return Vec::new();
    }
    let mut rows: Vec<Job> = vec![Vec::new()];
    for (key, values) in axes {
        rows = rows
            .into_iter()
            .flat_map(|row| {
                values.iter().map(move |v| {
                    let mut r = row.clone();
                    let value = if *key == "env" {
                        Node::new(v.pos, Value::Seq(vec![v.clone()]))
                    } else {
                        v.clone()
                    };
                    job_set(&mut r, key, value);
                    r
                })
            })
            .collect();
    }
    rows
}

/// The `jobs.include` entries as jobs; one without a `stage` takes the one before's.
fn included(includes: &[Node]) -> Vec<Job> {
    let mut out: Vec<Job> = Vec::new();
    let mut stage: Option<Node> = None;
    for inc in includes {
        let Some(entries) = inc.as_map() else {
            continue;
        };
        let mut job: Job = entries.to_vec();
        match job_get(&job, "stage") {
            Some(s) => stage = Some(s.clone()),
            None => {
                if let Some(s) = &stage {
                    job_set(&mut job, "stage", s.clone());
                }
            }
        }
        out.push(job);
    }
    out
}

/// Each job gets the root's shared keys (its own win); an included job (from index
/// `n_expanded`) the first value of each expansion key it lacks; a job without env the
/// first `env.jobs` entry.
fn merge_root(
    config: &Config,
    keys: &[&str],
    axes: &Axes<'_>,
    jobs: &mut [Job],
    n_expanded: usize,
) {
    let root = config.root.as_map().unwrap_or_default();
    let shared: Vec<&Entry> = root
        .iter()
        .filter(|e| !keys.contains(&e.key.as_str()) && !NOT_SHARED.contains(&e.key.as_str()))
        .collect();
    let first_env = config
        .matrix_env()
        .and_then(|j| j.as_seq())
        .and_then(|s| s.first())
        .cloned();
    for (i, job) in jobs.iter_mut().enumerate() {
        let mut merged: Job = shared.iter().map(|e| (*e).clone()).collect();
        for e in job.drain(..) {
            job_set(&mut merged, &e.key, e.value);
        }
        if i >= n_expanded {
            for (key, values) in axes {
                if *key != "env" && job_get(&merged, key).is_none() {
                    job_set(&mut merged, key, values[0].clone());
                }
            }
        }
        if job_get(&merged, "env").is_none()
            && let Some(first) = &first_env
        {
            job_set(
                &mut merged,
                "env",
                Node::new(first.pos, Value::Seq(vec![first.clone()])),
            );
        }
        *job = merged;
    }
}

/// The jobs without repeats (by a canonical text of each, so linear in their number).
fn uniq(jobs: Vec<Job>) -> Vec<Job> {
    let mut seen = std::collections::HashSet::new();
    jobs.into_iter()
        .filter(|job| seen.insert(fingerprint_entries(job)))
        .collect()
}

/// Whether a job's own `if:` holds (a job without one always runs); a false one is
/// noted.
fn job_if_holds(job: &Job, f: &Facts, notes: &mut Vec<String>) -> bool {
    let Some(cond) = str_of(job_get(job, "if")) else {
        return true;
    };
    let keep = condition::check(cond, f).unwrap_or(false);
    if !keep {
        let name = str_of(job_get(job, "name")).unwrap_or("a job");
        notes.push(format!(
            "skipping {name}: its if: \"{}\" is false",
            condition::excerpt(cond, 0)
        ));
    }
    keep
}

/// A text that two jobs share exactly when they are [`Node::same`]: maps with their
/// keys sorted, positions and quoting left out.
fn fingerprint_entries(entries: &[Entry]) -> String {
    let mut out = String::new();
    fingerprint_map(entries, &mut out);
    out
}

fn fingerprint_map(entries: &[Entry], out: &mut String) {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    out.push('{');
    for e in sorted {
        out.push_str(&format!("{}:{}", e.key.len(), e.key));
        fingerprint(&e.value, out);
    }
    out.push('}');
}

fn fingerprint(node: &Node, out: &mut String) {
    match &node.value {
        Value::Null => out.push('~'),
        Value::Scalar(s) => out.push_str(&format!("s{}:{}", s.text.len(), s.text)),
        Value::Seq(items) => {
            out.push('[');
            items.iter().for_each(|i| fingerprint(i, out));
            out.push(']');
        }
        Value::Map(entries) => fingerprint_map(entries, out),
    }
}

/// The job's env vars: globals first, then its own, duplicates dropped.
fn job_env(global: &[EnvVar], job: &Job) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = global.to_vec();
    for v in model::env_list(job_get(job, "env")) {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// A rule's `if:` (exclude, allow_failures): a false one means the rule is ignored.
fn rule_applies(rule: &Node, f: &Facts, what: &str, notes: &mut Vec<String>) -> bool {
    match views::condition_of(rule) {
        None => true,
        Some(cond) => {
            let ok = condition::check(cond, f).unwrap_or(false);
            if !ok {
                notes.push(format!(
                    "ignoring a {what} rule: its if: \"{}\" is false",
                    condition::excerpt(cond, 0)
                ));
            }
            ok
        }
    }
}

/// Exact-match rules of `jobs.exclude` and `jobs.allow_failures` (§4.6, §4.9).
fn rule_matches(rule: &Node, job: &Job, global_env: &[EnvVar]) -> bool {
    let Some(entries) = rule.as_map() else {
        return false;
    };
    let mut any = false;
    for e in entries {
        match e.key.as_str() {
            "if" | "branch" => continue,
            "env" => {
                let mine: Vec<EnvVar> = model::env_list(job_get(job, "env"))
                    .into_iter()
                    .filter(|v| !global_env.contains(v))
                    .collect();
                if mine != model::env_list(Some(&e.value)) {
                    return false;
                }
            }
            "stage" => {
                let want = str_of(Some(&e.value)).unwrap_or_default();
                match str_of(job_get(job, "stage")) {
                    Some(s) if s.eq_ignore_ascii_case(want) => {}
                    None if want.eq_ignore_ascii_case("test") => {}
                    _ => return false,
                }
            }
            key => {
                let Some(mine) = job_get(job, key) else {
                    return false;
                };
                if !wrap_same(mine, &e.value) {
                    return false;
                }
            }
        }
        any = true;
    }
    any
}

/// Compares as travis-yml does: a scalar equals a one-item list of it.
fn wrap_same(a: &Node, b: &Node) -> bool {
    let wrap = |n: &Node| match &n.value {
        Value::Seq(items) => items.clone(),
        _ => vec![n.clone()],
    };
    let (a, b) = (wrap(a), wrap(b));
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.same(y))
}

// ---------------------------------------------------------------- stages (§4.8)

fn order_stages(
    config: &Config,
    event: &BuildEvent,
    settings: &Settings,
    global_env: &[EnvVar],
    jobs: Vec<Job>,
    notes: &mut Vec<String>,
) -> (Vec<String>, Vec<(String, Job)>) {
    // Declared stages first, then names first seen on jobs (case-insensitive).
    let mut stages: Vec<(String, Option<String>)> = Vec::new();
    let add = |name: &str, cond: Option<String>, stages: &mut Vec<(String, Option<String>)>| {
        if !stages.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            stages.push((name.to_string(), cond));
        }
    };
    for s in config.stages() {
        add(&s.name, s.condition, &mut stages);
    }
    let stage_of = |job: &Job| str_of(job_get(job, "stage")).unwrap_or("test").to_string();
    for job in &jobs {
        add(&stage_of(job), None, &mut stages);
    }
    let root_facts = facts(config, &config.root, event, global_env, settings);
    let mut kept: Vec<String> = Vec::new();
    for (name, cond) in &stages {
        if let Some(cond) = cond
            && !condition::check(cond, &root_facts).unwrap_or(false)
        {
            notes.push(format!(
                "skipping stage {name}: its if: \"{}\" is false",
                condition::excerpt(cond, 0)
            ));
            continue;
        }
        if jobs.iter().any(|j| stage_of(j).eq_ignore_ascii_case(name)) {
            kept.push(name.clone());
        }
    }
    let mut ordered = Vec::new();
    for name in &kept {
        for job in &jobs {
            if stage_of(job).eq_ignore_ascii_case(name) {
                ordered.push((name.clone(), job.clone()));
            }
        }
    }
    (kept, ordered)
}

// ---------------------------------------------------------------- one job

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

// ---------------------------------------------------------------- deploys (§6)

/// Whether a deploy fires for this job, with Travis's skip reason when it does not.
pub fn deploy_plan(deploy: &Node, event: &BuildEvent, job: &Job) -> DeployPlan {
    let provider = DeployKeys(deploy).provider().unwrap_or("?").to_string();
    let (fires, reason) = deploy_fires(deploy, event, job);
    DeployPlan {
        provider,
        fires,
        reason,
        config: deploy.clone(),
    }
}

fn deploy_fires(deploy: &Node, event: &BuildEvent, job: &Job) -> (bool, String) {
    if event.event == EventType::PullRequest {
        return (false, "the current build is a pull request".into());
    }
    let on = DeployKeys(deploy).on();
    let tags = on.tags();
    let all_branches = on.all_branches();
    let branch = event.travis_branch();
    match tags {
        Some(true) if event.tag.is_none() => {
            return (false, "this is not a tagged commit".into());
        }
        Some(false) if event.tag.is_some() => {
            return (false, "this is a tagged commit".into());
        }
        _ => {}
    }
    let mut why = Vec::new();
    if !all_branches && tags != Some(true) {
        let mut allowed = on.branches();
        if allowed.is_empty() {
            allowed.push("master".into());
        }
        if !allowed.iter().any(|b| b == branch) {
            return (false, format!("this branch is not permitted: {branch}"));
        }
        why.push(format!("branch {branch} is permitted"));
    } else if tags == Some(true) {
        why.push(format!("tag {branch}"));
    } else {
        why.push("all branches".into());
    }
    if let Some(repo) = on.repo()
        && repo != event.repo
    {
        return (
            false,
            format!(
                "this repo's name does not match one specified in .travis.yml's deploy.on.repo: {repo}"
            ),
        );
    }
    for (key, job_key) in RUNTIME_KEYS {
        let Some(want) = on.runtime(key) else {
            continue;
        };
        let have = job_get(job, job_key).and_then(views::first_value);
        if have != Some(want.as_str()) {
            return (false, "this is not on the required runtime".into());
        }
    }
    let conditions = on.conditions();
    if !conditions.is_empty() {
        why.push(format!(
            "if [[ {} ]] holds when the job runs",
            conditions.join(" ]] && [[ ")
        ));
    }
    (true, format!("after a passing script: {}", why.join("; ")))
}

// ---------------------------------------------------------------- email (§7)

fn email_policy(config: &Config, event: &BuildEvent, root_facts: &Facts) -> EmailPolicy {
    let notifications = config.notifications();
    let fallback = |given: Option<&str>, default: Frequency| {
        given.and_then(Frequency::parse).unwrap_or(default)
    };
    let mut policy = EmailPolicy {
        enabled: true,
        recipients: Vec::new(),
        on_success: fallback(notifications.on_success(), Frequency::Change),
        on_failure: fallback(notifications.on_failure(), Frequency::Always),
        reason: String::new(),
    };
    let mut configured = false;
    for entry in notifications.email() {
        let item = entry.0;
        match &item.value {
            Value::Scalar(_) if item.as_bool() == Some(false) => {
                policy.enabled = false;
                policy.reason = "email: false".into();
            }
            Value::Scalar(_) if item.as_bool() == Some(true) => {}
            Value::Scalar(s) => {
                configured = true;
                policy.recipients.extend(split_addresses(&s.text));
            }
            Value::Map(_) => {
                for text in entry.recipients() {
                    configured = true;
                    policy.recipients.extend(split_addresses(text));
                }
                if let Some(f) = entry.on_success().and_then(Frequency::parse) {
                    policy.on_success = f;
                }
                if let Some(f) = entry.on_failure().and_then(Frequency::parse) {
                    policy.on_failure = f;
                }
                if !entry.enabled() {
                    policy.enabled = false;
                    policy.reason = "email is disabled (enabled: false)".into();
                }
                if let Some(cond) = entry.condition()
                    && !condition::check(cond, root_facts).unwrap_or(false)
                {
                    policy.enabled = false;
                    policy.reason = format!(
                        "notifications.email.if \"{}\" is false",
                        condition::excerpt(cond, 0)
                    );
                }
            }
            _ => {}
        }
    }
    if !configured {
        for p in [&event.author, &event.committer].into_iter().flatten() {
            if !p.email.is_empty() && !policy.recipients.contains(&p.email) {
                policy.recipients.push(p.email.clone());
            }
        }
    }
    policy.recipients.dedup();
    if event.event == EventType::PullRequest && policy.enabled {
        policy.enabled = false;
        policy.reason = "email is never sent for pull requests".into();
    }
    if policy.enabled {
        policy.reason = if configured {
            "to the configured recipients".into()
        } else {
            "to the commit's author and committer (no recipients configured)".into()
        };
    }
    policy
}

/// `"a@x, b@y"` → two addresses.
fn split_addresses(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
