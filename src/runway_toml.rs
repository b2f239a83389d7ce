//! `runway.toml`: the server's listen address, concurrency, public URL, SMTP and the
//! repositories it builds (every key, commented: `examples/runway.toml`), read by
//! `runway serve` and by the post-receive hook (`--config`). Secrets are never in
//! the file itself: webhook secrets and tokens are named by `*_env` variables; repository
//! settings under `[repo.env]` are secret unless listed in `public`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `listen = "127.0.0.1:8080"` (`--listen` overrides).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Jobs run at once, across builds.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Links in mails and API answers.
    pub public_url: Option<String>,
    /// Queued builds superseded by a newer push to the same branch are canceled.
    #[serde(default = "yes")]
    pub auto_cancel: bool,
    /// Webhook bodies larger than this are refused with 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Seconds a delivery for a remote repository waits for its mirror to fetch (to
    /// read `.travis.yml` at the commit) before it is queued anyway: webhook senders
    /// give up after about 10 s.
    #[serde(default = "default_intake_fetch")]
    pub intake_fetch_secs: u64,
    /// Seconds a webhook delivery id is remembered: the same delivery sent again within
    /// it (a replay, or a sender's redelivery) builds nothing. A week by default.
    #[serde(default = "default_delivery_window")]
    pub delivery_window_secs: u64,
    /// Seconds a client has to send a request's headers (slow clients are cut off).
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a webhook's body once its headers are in.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// Connections served at once. At the cap, the oldest connection that has not sent
    /// a whole request yet is closed for the new one (so slow clients cannot hold the
    /// server); the cap is also kept under the process's open-file limit.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Live streams (`/events`, a build's live log) open at once: a quarter of the
    /// connections unless set (at most half), so deliveries always find a connection.
    pub max_streams: Option<usize>,
    /// Live streams one client address may hold open (8 unless set).
    pub max_streams_per_client: Option<usize>,
    /// Seconds running builds get to finish on SIGTERM before they are canceled.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// The env var holding the token `POST /api/builds/N/cancel` must bring
    /// (`Authorization: Bearer …`). Without it, canceling over HTTP is refused.
    pub api_token_env: Option<String>,
    /// The env var holding a `postgres://` URL: the build store is that PostgreSQL
    /// database instead of the embedded SQLite (several `runway serve` nodes share it).
    pub database_url_env: Option<String>,
    /// Connections to PostgreSQL a node holds at most, shared by everything it does (a
    /// burst of builds waits for one rather than failing).
    #[serde(default = "default_database_pool")]
    pub database_pool: usize,
    /// The env var holding the token `runway worker` agents bring
    /// (`RUNWAY_WORKER_TOKEN` on their side). Set, and the server's jobs run on workers
    /// (matched by os and arch), not in the serve nodes themselves.
    pub worker_token_env: Option<String>,
    /// Workers with tokens of their own (`[[worker]]`): each may act only as itself.
    #[serde(default, rename = "worker")]
    pub workers: Vec<WorkerConfig>,
    /// Milliseconds a worker's hold on a job lasts without a heartbeat: a worker that
    /// stops answering loses its job within this plus one heartbeat.
    #[serde(default = "default_lease_ms")]
    pub worker_lease_ms: u64,
    /// Milliseconds between a worker's heartbeats (it is told this when handed a job).
    #[serde(default = "default_heartbeat_ms")]
    pub worker_heartbeat_ms: u64,
    /// What becomes of a job whose worker stopped answering: `"error"` (the default: the
    /// job is errored, "worker W stopped answering") or `"retry"` (it runs again on a
    /// worker, its log saying so).
    #[serde(default)]
    pub lost_job: LostJob,
    /// Where workers keep caches: `s3://bucket/prefix` (the serve nodes' AWS chain and
    /// `AWS_ENDPOINT_URL` reach it; workers get short-lived presigned URLs for their
    /// job's cache only). Unset: each worker keeps caches in its own directory.
    pub cache_url: Option<String>,
    /// Where finished logs go with a PostgreSQL store: `s3://bucket/prefix` (zstd
    /// objects). Unset: they stay in the database. (The embedded store keeps them in
    /// zstd files beside it.)
    pub log_url: Option<String>,
    /// Which ended builds (with their logs) are kept: `[retention]`.
    #[serde(default)]
    pub retention: crate::store::retention::Policy,
    /// Milliseconds a serve node's hold on the builds it follows lasts: a node that is
    /// gone (killed) leaves them to another node after this.
    #[serde(default = "default_node_lease_ms")]
    pub node_lease_ms: u64,
    /// Mail.
    pub smtp: Option<SmtpSection>,
    /// Where jobs run: `"namespaces"` (default: a throwaway copy of the machine per
    /// job) or `"none"` (the bare host, with a warning at start).
    #[serde(default)]
    pub sandbox: crate::sandbox::Mode,
    /// More paths jobs must not see (runway's state, caches and this file are hidden
    /// anyway): credentials of the server's user, say.
    #[serde(default)]
    pub hide: Vec<PathBuf>,
    /// Memory per job (`"2G"`), where cgroups are delegated to runway (else a warning
    /// at start says the limit is not enforced).
    pub job_memory: Option<String>,
    /// Processes (and threads) per job at once, likewise.
    pub job_processes: Option<u64>,
    /// Disk per job (`"10G"`, the default; `"none"`: the host's disk): the job's
    /// workspace is a filesystem of this size.
    pub job_disk: Option<String>,
    /// A language version (or JDK) the machine cannot provide is replaced by what it
    /// has, named in the log, summary, page and mail, instead of erroring the job.
    #[serde(default)]
    pub substitutes: bool,
    /// Sign-in through an OpenID Connect issuer (`[auth]`). Without it every page is
    /// public and only the API token writes.
    pub auth: Option<AuthConfig>,
    /// The repositories.
    #[serde(default, rename = "repo")]
    pub repos: Vec<RepoConfig>,
    /// Where this file was read from (hidden from jobs).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// What becomes of a job whose worker stopped answering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LostJob {
    /// Errored.
    #[default]
    Error,
    /// Queued again for a worker.
    Retry,
}

/// `[smtp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    /// `smtp://user:pass@host:port` (see `RUNWAY_SMTP_URL`).
    pub url: String,
    /// `runway <ci@example.com>`
    pub from: Option<String>,
}

impl SmtpSection {
    /// As the mailer takes it (the sender defaults to `runway <runway@localhost>`).
    pub fn config(&self) -> Option<crate::notify::SmtpConfig> {
        let from = self
            .from
            .clone()
            .unwrap_or_else(|| "runway <runway@localhost>".into());
        Some(crate::notify::SmtpConfig {
            url: self.url.clone(),
            from: from.parse().ok()?,
        })
    }
}

/// `[[repo]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// `owner/app`: matched against the webhook's repository full name.
    pub name: String,
    /// A path, `file://…`, or a remote URL (`https://…`, `git://…`, `ssh://…`) the
    /// server mirrors with git (see [`super::mirror`]).
    pub url: String,
    /// The env var holding the webhook secret.
    pub webhook_secret_env: Option<String>,
    /// The env var holding an https token (sent as HTTP basic authentication).
    pub token_env: Option<String>,
    /// The default branch (cache fallback); `master` if unset.
    pub default_branch: Option<String>,
    /// Repository settings (Travis's web settings): secret unless listed in `public`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Settings that are not secret.
    #[serde(default)]
    pub public: Vec<String>,
    /// This repository's own mail server (`[repo.smtp]`), instead of `[smtp]`.
    pub smtp: Option<SmtpSection>,
    /// Pushes through `runway hook` queue their builds for `runway serve` and return
    /// at once, as `hook install --detach` does.
    #[serde(default)]
    pub detach: bool,
    /// `false`: this repository's jobs get loopback only.
    #[serde(default = "yes")]
    pub network: bool,
    /// Labels a worker must have to take this repository's jobs (besides their `os`
    /// and `arch`): its settings go only to workers it trusts (`{ trust = "internal" }`).
    #[serde(default)]
    pub worker_labels: BTreeMap<String, String>,
    /// Labels a worker must have to take the jobs of a pull request from a fork, instead
    /// of `worker_labels` (a pool kept for strangers' code).
    #[serde(default)]
    pub fork_worker_labels: BTreeMap<String, String>,
    /// A newer push to a branch cancels its older queued builds (default: the server's
    /// `auto_cancel`).
    pub auto_cancel_pushes: Option<bool>,
    /// A newer push to a pull request cancels its older queued builds (default: the
    /// server's `auto_cancel`).
    pub auto_cancel_pull_requests: Option<bool>,
    /// Pushes build (Travis's "Build pushed branches").
    #[serde(default = "yes")]
    pub build_pushes: bool,
    /// Pull requests build (Travis's "Build pushed pull requests").
    #[serde(default = "yes")]
    pub build_pull_requests: bool,
    /// What a pull request from a fork does: wait for approval, run, or nothing.
    #[serde(default)]
    pub fork_prs: ForkPrs,
    /// The forge's API base, where commit statuses go (none: no statuses).
    pub api_url: Option<String>,
    /// The env var holding the token statuses are posted with.
    pub status_token_env: Option<String>,
    /// Which forge's status call `api_url` takes.
    #[serde(default)]
    pub forge: crate::forge::Forge,
    /// The repository's web pages on its forge (`https://github.com/owner/app`): build
    /// pages link its commits, compares and pull requests.
    pub web_url: Option<String>,
    /// The statuses' context before `/push` or `/pr`.
    #[serde(default = "default_status_context")]
    pub status_context: String,
    /// Scheduled builds (`[[repo.cron]]`).
    #[serde(default)]
    pub cron: Vec<CronConfig>,
    /// Who may read it without a grant (with `[auth]`; default `"private"` then).
    pub visibility: Option<crate::auth::Visibility>,
    /// Roles for people and groups (`[[repo.grant]]`, with `[auth]`).
    #[serde(default, rename = "grant")]
    pub grants: Vec<crate::auth::Grant>,
}

/// `[auth]`: sign-in through an OpenID Connect issuer (Gitea, GitLab, Keycloak, any
/// compliant one), as a confidential client (`client_secret_basic`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The issuer URL, exactly as its ID tokens' `iss` says it.
    pub issuer: String,
    /// The client id registered with the issuer.
    pub client_id: String,
    /// The env var holding the client secret.
    pub client_secret_env: String,
    /// The callback registered with the issuer: `https://ci.example.com/auth/callback`.
    pub redirect_url: String,
    /// The scopes asked for (default: openid, profile, email, groups).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Hours a session lasts (default 12).
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups"]
        .map(String::from)
        .to_vec()
}

fn default_session_hours() -> u64 {
    12
}

impl AuthConfig {
    /// The client's settings, with the secret read from the environment.
    pub fn settings(&self) -> Result<crate::auth::oidc::Settings, String> {
        let secret = from_env(&Some(self.client_secret_env.clone())).ok_or_else(|| {
            format!(
                "[auth] client_secret_env names {}, which is not set (or is empty): sign-in needs the client secret",
                self.client_secret_env
            )
        })?;
        Ok(crate::auth::oidc::Settings {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: secret,
            redirect_url: self.redirect_url.clone(),
            scopes: self.scopes.clone(),
        })
    }

    /// Whether sessions are served over https (their cookies are then `Secure`).
    pub fn secure(&self) -> bool {
        self.redirect_url.starts_with("https://")
    }

    fn problem(&self) -> Option<String> {
        let url = |u: &str| u.starts_with("https://") || u.starts_with("http://");
        if !url(&self.issuer) {
            return Some(format!(
                "[auth] issuer {:?} is not an http(s) URL",
                self.issuer
            ));
        }
        if !url(&self.redirect_url) || !self.redirect_url.ends_with("/auth/callback") {
            return Some(format!(
                "[auth] redirect_url {:?} must be this server's https://HOST/auth/callback",
                self.redirect_url
            ));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Some("[auth] scopes must include \"openid\"".into());
        }
        if self.session_hours == 0 {
            return Some("[auth] session_hours must be at least 1".into());
        }
        None
    }
}

/// `[[repo.cron]]`: a branch built on a schedule, as event `cron`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronConfig {
    /// The branch whose tip is built.
    pub branch: String,
    /// How often.
    pub interval: CronInterval,
    /// Skipped when the branch had a build in the last 24 hours.
    #[serde(default)]
    pub dont_run_if_recent_build_exists: bool,
}

/// How often a cron runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CronInterval {
    /// Every 24 hours.
    Daily,
    /// Every 7 days.
    Weekly,
    /// Every 30 days.
    Monthly,
}

impl CronInterval {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            CronInterval::Daily => "daily",
            CronInterval::Weekly => "weekly",
            CronInterval::Monthly => "monthly",
        }
    }

    /// Its period in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            CronInterval::Daily => 86_400,
            CronInterval::Weekly => 7 * 86_400,
            CronInterval::Monthly => 30 * 86_400,
        }
    }
}

fn default_status_context() -> String {
    "runway".into()
}

/// `fork_prs`: what becomes of a pull request whose head is in another repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForkPrs {
    /// Its build waits until someone with write access approves it.
    #[default]
    Approve,
    /// It builds at once (without secret settings, never deploying).
    Run,
    /// It does not build.
    Off,
}

/// `[[worker]]`: a worker with a token of its own. A call with that token may act only
/// as that worker (its name is no longer just what the call says).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The worker's `--name`.
    pub name: String,
    /// The env var holding its token (its own `RUNWAY_WORKER_TOKEN`).
    pub token_env: String,
}

fn default_database_pool() -> usize {
    4
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_concurrency() -> usize {
    2
}
fn default_max_body() -> usize {
    5 * 1024 * 1024
}
fn default_intake_fetch() -> u64 {
    5
}
fn default_delivery_window() -> u64 {
    7 * 24 * 3600
}
fn default_header_timeout() -> u64 {
    10
}
fn default_body_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    512
}
fn default_grace() -> u64 {
    30
}
/// `worker_lease_ms` when runway.toml does not say.
pub const DEFAULT_WORKER_LEASE_MS: u64 = 10_000;

fn default_lease_ms() -> u64 {
    DEFAULT_WORKER_LEASE_MS
}
fn default_heartbeat_ms() -> u64 {
    2_000
}
fn default_node_lease_ms() -> u64 {
    15_000
}
fn yes() -> bool {
    true
}

impl ServerConfig {
    /// The API token, from the environment.
    pub fn api_token(&self) -> Option<String> {
        from_env(&self.api_token_env)
    }

    /// The workers' token, from the environment (None: jobs run in the serve node).
    pub fn worker_token(&self) -> Option<String> {
        from_env(&self.worker_token_env)
    }

    /// True when jobs run on `runway worker` agents.
    pub fn uses_workers(&self) -> bool {
        self.worker_token_env.is_some() || !self.workers.is_empty()
    }

    /// Who a worker token is: `Some(Some(name))` for a `[[worker]]`'s own token,
    /// `Some(None)` for the shared `worker_token_env`, `None` for neither (compared in
    /// constant time).
    pub fn worker_identity(&self, token: &str) -> Option<Option<String>> {
        let same = |a: &str, b: &str| crate::mask::same(a.as_bytes(), b.as_bytes());
        for w in &self.workers {
            if let Some(t) = from_env(&Some(w.token_env.clone()))
                && same(token, &t)
            {
                return Some(Some(w.name.clone()));
            }
        }
        self.worker_token().filter(|t| same(token, t)).map(|_| None)
    }

    /// True when `name` is a `[[worker]]` (it may then act only with its own token).
    pub fn registered_worker(&self, name: &str) -> bool {
        self.workers.iter().any(|w| w.name == name)
    }

    /// The PostgreSQL URL the store is at, from `database_url_env` (None: SQLite, when
    /// the file names no variable). A variable named but unset is an error: a node
    /// would otherwise start alone on SQLite, an island the others never see.
    pub fn database_url(&self) -> Result<Option<String>, String> {
        match &self.database_url_env {
            None => Ok(None),
            Some(var) => from_env(&self.database_url_env).map(Some).ok_or_else(|| {
                format!(
                    "database_url_env names {var}, which is not set (or is empty): set it to the PostgreSQL URL (postgres://…), or remove database_url_env to use this machine's own store"
                )
            }),
        }
    }

    /// What is wrong with `[auth]` and the repositories' visibility and grants.
    fn access_problem(&self) -> Option<String> {
        if let Some(why) = self.auth.as_ref().and_then(AuthConfig::problem) {
            return Some(why);
        }
        for r in &self.repos {
            if let Some(why) = r.grants.iter().find_map(crate::auth::Grant::problem) {
                return Some(format!("[[repo]] {}: {why}", r.name));
            }
            if self.auth.is_none()
                && (r.visibility == Some(crate::auth::Visibility::Private) || !r.grants.is_empty())
            {
                return Some(format!(
                    "[[repo]] {}: visibility and grants need [auth] (sign-in); without it every page is public",
                    r.name
                ));
            }
        }
        None
    }

    /// Who may read `repo` without a grant: public without `[auth]`; with it, the
    /// repository's `visibility`, private when unset (and for a repository runway.toml
    /// does not name).
    pub fn visibility(&self, repo: &str) -> crate::auth::Visibility {
        if self.auth.is_none() {
            return crate::auth::Visibility::Public;
        }
        self.repo(repo)
            .and_then(|r| r.visibility)
            .unwrap_or(crate::auth::Visibility::Private)
    }

    /// The role `who` has on `repo`, if any.
    pub fn role(&self, repo: &str, who: &crate::auth::Who) -> Option<crate::auth::Role> {
        let grants = self.repo(repo).map(|r| r.grants.as_slice()).unwrap_or(&[]);
        crate::auth::roles::role(
            crate::auth::roles::Access {
                visibility: self.visibility(repo),
                grants,
            },
            repo,
            who,
            self.auth.is_some(),
        )
    }

    /// True when the store is PostgreSQL, shared by several nodes (`database_url_env`).
    pub fn shared_store(&self) -> bool {
        self.database_url_env.is_some()
    }

    /// What an operator should know at start: variables the file names that are not
    /// set, and what is refused until they are.
    pub fn warnings(&self) -> Vec<String> {
        fn unset(name: &Option<String>) -> Option<&String> {
            name.as_ref().filter(|_| from_env(name).is_none())
        }
        let mut out = Vec::new();
        for w in &self.workers {
            if let Some(var) = unset(&Some(w.token_env.clone())) {
                out.push(format!(
                    "${var} (token_env of [[worker]] {}) is not set: that worker is refused",
                    w.name
                ));
            }
        }
        if let Some(var) = unset(&self.worker_token_env) {
            out.push(format!(
                "${var} (worker_token_env) is not set: every worker is refused, and jobs wait"
            ));
        }
        if let Some(var) = unset(&self.api_token_env) {
            out.push(format!(
                "${var} (api_token_env) is not set: canceling over HTTP is refused"
            ));
        }
        for r in &self.repos {
            match &r.webhook_secret_env {
                None => out.push(format!(
                    "{}: no webhook_secret_env: its webhook deliveries are refused",
                    r.name
                )),
                Some(var) if r.secret().is_none() => out.push(format!(
                    "{}: ${var} (webhook_secret_env) is not set: its webhook deliveries are refused",
                    r.name
                )),
                Some(_) => {}
            }
            if let Some(var) = unset(&r.token_env) {
                out.push(format!(
                    "{}: ${var} (token_env) is not set: fetching {} without a token",
                    r.name, r.url
                ));
            }
            if let Some(path) = r.local_path().filter(|p| !p.exists()) {
                out.push(format!(
                    "{}: its url {} does not exist here: its pushes cannot be fetched, and its builds error until it does",
                    r.name,
                    path.display()
                ));
            }
        }
        out
    }

    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<ServerConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut cfg: ServerConfig = toml::from_str(&text).map_err(|e| {
            let placed = misplaced_repo_key(&text).unwrap_or_default();
            let guess = unknown_key_guess(&e.to_string()).unwrap_or_default();
            format!("{}: {e}{guess}{placed}", path.display())
        })?;
        for r in &cfg.repos {
            let parts: Vec<&str> = r.name.split('/').collect();
            if parts.len() != 2
                || parts
                    .iter()
                    .any(|p| p.is_empty() || *p == "." || *p == "..")
            {
                return Err(format!(
                    "{}: repo name \"{}\" is not owner/repo",
                    path.display(),
                    r.name
                ));
            }
        }
        if let Some(why) = cfg.access_problem() {
            return Err(format!("{}: {why}", path.display()));
        }
        if let Some(m) = &cfg.job_memory {
            crate::sandbox::cgroup::parse_size(m)
                .map_err(|e| format!("{}: job_memory: {e}", path.display()))?;
        }
        if let Some(d) = &cfg.job_disk {
            crate::sandbox::disk::parse_budget(d)
                .map_err(|e| format!("{}: job_disk: {e}", path.display()))?;
        }
        cfg.path = path.canonicalize().ok();
        Ok(cfg)
    }

    /// How `repo`'s jobs are isolated: the file's `sandbox` and `hide` (with the file
    /// itself hidden) and the repository's `network`.
    pub fn sandbox_args(&self, repo: Option<&RepoConfig>) -> crate::service::SandboxOptions {
        crate::service::SandboxOptions {
            mode: self.sandbox,
            no_network: repo.is_some_and(|r| !r.network),
            hide: self.hide.iter().cloned().chain(self.path.clone()).collect(),
            checked: false,
            limits: crate::sandbox::cgroup::Limits {
                memory: self
                    .job_memory
                    .as_deref()
                    .and_then(|m| crate::sandbox::cgroup::parse_size(m).ok()),
                processes: self.job_processes,
            },
            disk: self
                .job_disk
                .as_deref()
                .and_then(|d| crate::sandbox::disk::parse_budget(d).ok())
                .unwrap_or_default(),
        }
    }

    /// The mail server for `repo`'s builds: its own `[repo.smtp]`, else `[smtp]`.
    pub fn smtp_for(&self, repo: &str) -> Option<crate::notify::SmtpConfig> {
        self.repo(repo)
            .and_then(|r| r.smtp.as_ref())
            .or(self.smtp.as_ref())?
            .config()
    }

    /// The repository that lives in `git_dir` (its `url` is that path), if any.
    pub fn repo_at(&self, git_dir: &Path) -> Option<&RepoConfig> {
        let want = git_dir.canonicalize().ok()?;
        self.repos.iter().find(|r| {
            r.local_path()
                .and_then(|p| p.canonicalize().ok())
                .is_some_and(|p| p == want)
        })
    }

    /// The repository with this full name.
    pub fn repo(&self, name: &str) -> Option<&RepoConfig> {
        self.repos
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
    }
}

/// `[[repo]]` keys written after `[repo.env]` (or `[repo.smtp]`) belong to that table
/// in TOML: `public = [..]` there is read as a setting. Says where the key belongs.
fn misplaced_repo_key(text: &str) -> Option<String> {
    const REPO_KEYS: &[&str] = &[
        "public",
        "detach",
        "default_branch",
        "webhook_secret_env",
        "token_env",
        "url",
        "name",
    ];
    let doc: toml::Table = toml::from_str(text).ok()?;
    let repos = doc.get("repo")?.as_array()?;
    for r in repos {
        for table in ["env", "smtp"] {
            if let Some(t) = r.get(table).and_then(|v| v.as_table())
                && let Some(key) = REPO_KEYS.iter().find(|k| t.contains_key(**k))
            {
                return Some(format!(
                    "\n  `{key}` is written under [repo.{table}], so TOML reads it as part of that table; it belongs to the [[repo]]: move it above the [repo.{table}] line"
                ));
            }
        }
    }
    None
}

/// The value of the environment variable `name` names, when set and not empty.
fn from_env(name: &Option<String>) -> Option<String> {
    name.as_ref()
        .and_then(|v| std::env::var(v).ok())
        .filter(|s| !s.is_empty())
}

impl RepoConfig {
    /// The webhook secret, from the environment.
    pub fn secret(&self) -> Option<String> {
        from_env(&self.webhook_secret_env)
    }

    /// The local path of the repository (for paths and `file://` URLs); `None` for a
    /// remote URL (`https://…`, `ssh://…`, or git's scp-like `git@host:owner/repo.git`).
    pub fn local_path(&self) -> Option<PathBuf> {
        let p = self.url.strip_prefix("file://").unwrap_or(&self.url);
        let scp_like = !p.starts_with(['/', '.'])
            && p.split('/').next().is_some_and(|first| first.contains(':'));
        (!p.contains("://") && !scp_like).then(|| PathBuf::from(p))
    }

    /// The repository's settings, secret unless listed in `public`.
    pub fn settings(&self) -> crate::settings::Settings {
        crate::settings::Settings::secret(self.env.iter().map(|(name, value)| {
            crate::config::model::EnvVar {
                name: name.clone(),
                value: value.clone(),
            }
        }))
        .with_public(&self.public)
    }

    /// The settings a build of `event` gets: a fork's pull request only the public ones
    /// (Travis gave forks no secure variables).
    pub fn settings_for(&self, event: &crate::event::BuildEvent) -> crate::settings::Settings {
        let all = self.settings();
        if event.pull_request.as_ref().is_some_and(|p| p.fork) {
            all.public_only()
        } else {
            all
        }
    }
}

/// "did you mean" for an unknown key in a TOML error (``unknown field `concurrncy`,
/// expected one of `listen`, `concurrency`, …``), as `lint` says it for `.travis.yml`.
fn unknown_key_guess(error: &str) -> Option<String> {
    let rest = error.split("unknown field `").nth(1)?;
    let (key, rest) = rest.split_once('`')?;
    let known: Vec<&str> = rest
        .split("expected one of")
        .nth(1)
        .or_else(|| rest.split("expected").nth(1))?
        .split('`')
        .skip(1)
        .step_by(2)
        .collect();
    crate::config::schema::did_you_mean(key, known.iter().copied())
        .map(|g| format!("did you mean `{g}`?\n"))
}

#[cfg(test)]
mod tests {
    /// The commented example in the repository is a complete, valid runway.toml.
    #[test]
    fn the_example_runway_toml_is_complete_and_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/runway.toml"));
        let cfg = ServerConfig::load(path).unwrap();
        assert_eq!(cfg.repos.len(), 2);
        assert_eq!(cfg.repos[0].public, ["DEPLOY_BUCKET"]);
        assert_eq!(cfg.repos[0].env.len(), 3);
        assert!(cfg.repos[1].smtp.is_some() && cfg.smtp.is_some());
        assert_eq!(cfg.delivery_window_secs, 604_800);
        // Issue 28 (12): copied as it is, it runs jobs here on SQLite (it waited for
        // workers that did not exist, and stopped on an unset database variable).
        assert!(!cfg.uses_workers());
        assert_eq!(cfg.database_url(), Ok(None));
        assert!(cfg.cache_url.is_none() && cfg.log_url.is_none());
        // Every key of the file's model is in the example.
        let text = std::fs::read_to_string(path).unwrap();
        for key in [
            "listen",
            "concurrency",
            "public_url",
            "auto_cancel",
            "api_token_env",
            "database_url_env",
            "database_pool",
            "shutdown_grace_secs",
            "max_body_bytes",
            "header_timeout_secs",
            "body_timeout_secs",
            "max_connections",
            "max_streams",
            "max_streams_per_client",
            "delivery_window_secs",
            "intake_fetch_secs",
            "[smtp]",
            "name",
            "url",
            "webhook_secret_env",
            "default_branch",
            "detach",
            "public",
            "[repo.env]",
            "token_env",
            "[repo.smtp]",
            "from",
            "worker_labels",
            "[[worker]]",
            "build_pushes",
            "build_pull_requests",
            "auto_cancel_pushes",
            "auto_cancel_pull_requests",
            "fork_prs",
            "fork_worker_labels",
            "web_url",
            "api_url",
            "status_token_env",
            "forge",
            "status_context",
            "[[repo.cron]]",
            "interval",
            "dont_run_if_recent_build_exists",
            "[auth]",
            "issuer",
            "client_id",
            "client_secret_env",
            "redirect_url",
            "scopes",
            "session_hours",
            "visibility",
            "[[repo.grant]]",
        ] {
            assert!(text.contains(key), "{key}");
        }
    }

    /// issue 14: `public = [..]` written under `[repo.env]` was "invalid type: sequence,
    /// expected a string"; the error now says where the key belongs.
    #[test]
    fn a_repo_key_under_repo_env_says_where_it_belongs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runway.toml");
        std::fs::write(
            &path,
            "[[repo]]\nname = \"o/a\"\nurl = \"/tmp/x\"\n[repo.env]\nTOKEN = \"x\"\npublic = [\"TOKEN\"]\n",
        )
        .unwrap();
        let e = ServerConfig::load(&path).unwrap_err();
        assert!(
            e.contains("`public` is written under [repo.env]") && e.contains("move it above"),
            "{e}"
        );
    }

    use super::*;

    fn repo(url: &str) -> RepoConfig {
        toml::from_str(&format!("name = \"o/app\"\nurl = \"{url}\"\n")).unwrap()
    }

    /// Issue 27: `[auth]` and grants are checked when the file is read; a private
    /// repository or a grant without sign-in would be exposed silently, so it is an
    /// error saying so.
    #[test]
    fn sign_in_settings_are_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runway.toml");
        let auth = "[auth]\nissuer = \"https://idp.example\"\nclient_id = \"runway\"\nclient_secret_env = \"S\"\nredirect_url = \"https://ci.example/auth/callback\"\n";
        let repo = "[[repo]]\nname = \"o/a\"\nurl = \"/tmp/x\"\n";
        for (text, said) in [
            (
                format!("{repo}visibility = \"private\"\n"),
                Some("need [auth]"),
            ),
            (
                format!("{repo}[[repo.grant]]\ngroup = \"dev\"\nrole = \"read\"\n"),
                Some("need [auth]"),
            ),
            (
                format!("{auth}{repo}[[repo.grant]]\nrole = \"read\"\n"),
                Some("user = \"…\" or group"),
            ),
            (
                format!("{auth}{repo}[[repo.grant]]\nuser = \"a\"\nrole = \"owner\"\n"),
                Some("unknown variant `owner`"),
            ),
            (
                auth.replace("/auth/callback", "/cb") + repo,
                Some("redirect_url"),
            ),
            (
                format!(
                    "{auth}{repo}visibility = \"public\"\n[[repo.grant]]\nuser = \"carol@example.com\"\nrole = \"write\"\n"
                ),
                None,
            ),
        ] {
            std::fs::write(&path, &text).unwrap();
            match (ServerConfig::load(&path), said) {
                (Ok(cfg), None) => {
                    assert_eq!(cfg.visibility("o/a"), crate::auth::Visibility::Public);
                    assert_eq!(
                        cfg.visibility("o/unnamed"),
                        crate::auth::Visibility::Private
                    );
                }
                (Err(e), Some(s)) => assert!(e.contains(s), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}"),
            }
        }
    }

    #[test]
    fn repo_names_are_owner_slash_repo_and_never_climb() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runway.toml");
        for (name, ok) in [
            ("o/app", true),
            ("app", false),
            ("../x", false),
            ("o/..", false),
            ("a/b/c", false),
        ] {
            std::fs::write(
                &file,
                format!("[[repo]]\nname = \"{name}\"\nurl = \"/srv/a.git\"\n"),
            )
            .unwrap();
            let loaded = ServerConfig::load(&file);
            assert_eq!(loaded.is_ok(), ok, "{name}: {:?}", loaded.err());
        }
    }

    #[test]
    fn local_paths_and_remote_urls() {
        let local = |u: &str| repo(u).local_path();
        assert_eq!(
            local("/srv/git/app.git"),
            Some(PathBuf::from("/srv/git/app.git"))
        );
        assert_eq!(
            local("file:///srv/app.git"),
            Some(PathBuf::from("/srv/app.git"))
        );
        assert_eq!(local("./app.git"), Some(PathBuf::from("./app.git")));
        assert_eq!(local("https://github.com/o/app.git"), None);
        assert_eq!(local("ssh://git@host/o/app.git"), None);
        assert_eq!(local("git@github.com:o/app.git"), None);
    }

    /// Issue 28 (12): an unknown key in runway.toml is answered with the key it was
    /// probably meant to be, as `lint` does for `.travis.yml`.
    #[test]
    fn an_unknown_key_gets_a_did_you_mean() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runway.toml");
        std::fs::write(&path, "concurrncy = 2\n").unwrap();
        let e = ServerConfig::load(&path).unwrap_err();
        assert!(e.contains("unknown field `concurrncy`"), "{e}");
        assert!(e.ends_with("did you mean `concurrency`?\n"), "{e}");
        std::fs::write(
            &path,
            "[[repo]]\nname = \"o/a\"\nurl = \"/x\"\nwebhok_secret_env = \"S\"\n",
        )
        .unwrap();
        let e = ServerConfig::load(&path).unwrap_err();
        assert!(e.contains("did you mean `webhook_secret_env`?"), "{e}");
        std::fs::write(&path, "zzzzzzzzzz = 1\n").unwrap();
        assert!(
            !ServerConfig::load(&path)
                .unwrap_err()
                .contains("did you mean")
        );
    }

    #[test]
    fn the_start_names_unset_variables_and_what_they_refuse() {
        let cfg: ServerConfig = toml::from_str(
            "api_token_env = \"RUNWAY_NEVER_SET_TOKEN\"\n\
             [[repo]]\nname = \"o/a\"\nurl = \"/srv/a.git\"\nwebhook_secret_env = \"PATH\"\n\
             [[repo]]\nname = \"o/b\"\nurl = \"/srv/b.git\"\nwebhook_secret_env = \"RUNWAY_NEVER_SET_B\"\n\
             [[repo]]\nname = \"o/c\"\nurl = \"https://git.example/c.git\"\ntoken_env = \"RUNWAY_NEVER_SET_C\"\n",
        )
        .unwrap();
        assert_eq!(
            cfg.warnings(),
            [
                "$RUNWAY_NEVER_SET_TOKEN (api_token_env) is not set: canceling over HTTP is refused",
                "o/a: its url /srv/a.git does not exist here: its pushes cannot be fetched, and its builds error until it does",
                "o/b: $RUNWAY_NEVER_SET_B (webhook_secret_env) is not set: its webhook deliveries are refused",
                "o/b: its url /srv/b.git does not exist here: its pushes cannot be fetched, and its builds error until it does",
                "o/c: no webhook_secret_env: its webhook deliveries are refused",
                "o/c: $RUNWAY_NEVER_SET_C (token_env) is not set: fetching https://git.example/c.git without a token",
            ]
        );
    }
}
