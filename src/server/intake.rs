//! Webhook deliveries in: checked (hooks.rs), answered with a reason, and queued in the
//! build store before the answer, with auto-cancellation of superseded builds.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::hooks::{self, Delivery, Intake, PullDelivery, Refusal, Source};
use super::{AppState, answer, mirror};
use crate::store::{BuildRow, NewBuild};

/// `POST /hooks/{github,gitea,gitlab,generic}`: a delivery checked, answered with its
/// reason, and queued before the answer.
pub(super) async fn intake(
    State(state): State<Arc<AppState>>,
    req: Request,
    source: Source,
) -> Response {
    let headers: HeaderMap = req.headers().clone();
    let body = match body_of(req, &headers, &state).await {
        Ok(b) => b,
        Err(answered) => return answered,
    };
    let delivery = match hooks::read(source, &headers, &body, &state.cfg) {
        Ok(d) => d,
        Err(r) => return refused(source, r),
    };
    let st = state.clone();
    let queued = tokio::task::spawn_blocking(move || {
        let queued = match &delivery {
            Intake::Push(d) => queue(&st, d),
            Intake::Pull(p) => queue_pull(&st, p),
            Intake::Closed { repo, number } => close_pull(&st, repo, *number),
        };
        if let Ok(Queued::Build(row, _)) = &queued {
            super::statuses::enqueue_row(&st, row);
        }
        queued
    })
    .await;
    answer_queued(&state, queued)
}

/// The delivery's body, within `max_body_bytes` and `body_timeout_secs`, or the answer
/// that refuses it (413, 408).
async fn body_of(
    req: Request,
    headers: &HeaderMap,
    state: &AppState,
) -> Result<axum::body::Bytes, Response> {
    let limit = state.cfg.max_body_bytes;
    let too_large = || {
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            serde_json::json!({"error": format!("the delivery is larger than {limit} bytes (max_body_bytes)")}),
        )
    };
    // A declared length past the limit is refused before a byte of it is awaited.
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let deadline = Duration::from_secs(state.cfg.body_timeout_secs.max(1));
    match tokio::time::timeout(deadline, axum::body::to_bytes(req.into_body(), limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(answer(
            StatusCode::REQUEST_TIMEOUT,
            serde_json::json!({"error": format!(
                "the delivery's body did not arrive within {} s (body_timeout_secs)",
                deadline.as_secs()
            )}),
        )),
    }
}

/// The answer to a delivery refused or not built (401, 400, 404, or 200 with why).
fn refused(source: Source, r: Refusal) -> Response {
    let code = match r {
        Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
        Refusal::UnknownRepo(_) => StatusCode::NOT_FOUND,
        Refusal::Nothing(_) => StatusCode::OK,
    };
    if code == StatusCode::OK {
        tracing::info!(source = source.name(), reason = %r, "delivery not built");
    } else {
        tracing::warn!(source = source.name(), status = code.as_u16(), reason = %r, "delivery refused");
    }
    let key = if code == StatusCode::OK {
        "message"
    } else {
        "error"
    };
    answer(
        code,
        serde_json::json!({ key: r.to_string(), "queued": false }),
    )
}

/// The answer to a delivery checked and queued (202), a duplicate or not built (200),
/// or a store that failed (500).
fn answer_queued(
    state: &AppState,
    queued: Result<Result<Queued, NotQueued>, tokio::task::JoinError>,
) -> Response {
    let url_of = |row: &BuildRow| {
        state
            .cfg
            .public_url
            .as_ref()
            .map(|u| crate::notify::build_url(u, &row.repo, row.number))
    };
    match queued {
        Ok(Ok(Queued::Build(row, superseded))) => {
            state.may_have_queued();
            state.changed(row.id);
            let canceled = cancel_superseded(state, &row.repo, &superseded);
            tracing::info!(
                repo = %row.repo,
                number = row.number,
                r#ref = row.tag.as_deref().or(row.branch.as_deref()).unwrap_or(""),
                commit = %&row.commit[..row.commit.len().min(7)],
                canceled = ?canceled,
                "build queued"
            );
            state
                .said_queued
                .lock()
                .expect("said_queued")
                .insert(row.id);
            let url = url_of(&row);
            answer(
                StatusCode::ACCEPTED,
                serde_json::json!({"queued": true, "number": row.number, "repo": row.repo, "url": url, "canceled": canceled}),
            )
        }
        Ok(Ok(Queued::Duplicate(row))) => {
            tracing::info!(repo = %row.repo, number = row.number, "delivery duplicate: not built again");
            let url = url_of(&row);
            answer(
                StatusCode::OK,
                serde_json::json!({
                    "queued": false, "duplicate": true, "number": row.number, "repo": row.repo, "url": url,
                    "message": format!(
                        "duplicate delivery: it made build #{} already; not built again (deliveries are remembered for {} s, delivery_window_secs)",
                        row.number, state.cfg.delivery_window_secs
                    ),
                }),
            )
        }
        Ok(Ok(Queued::Stale(tip))) => {
            tracing::info!(tip = %tip, "stale push: its ref has moved on; not built");
            answer(
                StatusCode::OK,
                serde_json::json!({
                    "queued": false, "stale": true, "tip": tip,
                    "message": format!("stale push: its ref is at {} now; nothing built or canceled", &tip[..tip.len().min(12)]),
                }),
            )
        }
        Ok(Ok(Queued::Closed(repo, number, canceled))) => {
            let numbers = cancel_superseded(state, &repo, &canceled);
            tracing::info!(number, canceled = ?numbers, "pull request closed");
            answer(
                StatusCode::OK,
                serde_json::json!({"queued": false, "canceled": numbers,
                    "message": format!("pull request #{number} closed: {} build(s) canceled", numbers.len())}),
            )
        }
        Ok(Ok(Queued::NotBuilt(reason))) => {
            tracing::info!(reason = %reason, "push not built");
            answer(
                StatusCode::OK,
                serde_json::json!({"queued": false, "message": reason}),
            )
        }
        // The store cannot be reached: 503 with Retry-After, so the forge delivers
        // again (nothing is lost); the log says so once (the store's).
        Ok(Err(NotQueued::Store(e))) => e.answer(),
        Ok(Err(NotQueued::Other(e))) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": e}),
        ),
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": e.to_string()}),
        ),
    }
}

/// Tells the nodes following the builds `superseded` took from the queue to cancel
/// them, and the pages that they changed; the numbers of every build canceled.
fn cancel_superseded(
    state: &AppState,
    repo: &str,
    superseded: &crate::store::Superseded,
) -> Vec<u64> {
    for n in &superseded.queued {
        if let Ok(Some(old)) = state.db(|s| s.build(Some(repo), *n)) {
            // Canceled before it started: no "started" will take it off the list of
            // builds whose "queued" line was said.
            state
                .said_queued
                .lock()
                .expect("said_queued")
                .remove(&old.id);
            state.changed(old.id);
        }
    }
    // Taken from the queue: canceled by the node following it (this one, or another
    // told through the database).
    for (id, _) in &superseded.waiting {
        let here = state.cancels.lock().expect("cancels").get(id).cloned();
        match here {
            Some(c) => {
                c.cancel();
            }
            None => {
                let _ = state.db(|s| s.announce_cancel(*id));
            }
        }
        state.changed(*id);
    }
    superseded
        .queued
        .iter()
        .copied()
        .chain(superseded.waiting.iter().map(|(_, n)| *n))
        .collect()
}

enum Queued {
    Build(Box<BuildRow>, crate::store::Superseded),
    /// A pull request closed: its builds that had not ended, canceled.
    Closed(String, u64, crate::store::Superseded),
    NotBuilt(String),
    /// The ref has moved on from the pushed commit: this is its tip now.
    Stale(String),
    /// The same delivery (by its id) made this build within the window.
    Duplicate(Box<BuildRow>),
}

/// Why a delivery was not queued.
enum NotQueued {
    /// The build store failed (or cannot be reached).
    Store(super::DbError),
    /// Anything else.
    Other(String),
}

impl From<super::DbError> for NotQueued {
    fn from(e: super::DbError) -> NotQueued {
        NotQueued::Store(e)
    }
}

/// The repository of `repo_cfg` with commit `want` in it: a path as it is; a remote
/// one's mirror, fetched now if it lacks `want`, or None when that fails or takes
/// longer than `intake_fetch_secs` (the fetch goes on; the build waits for it).
fn source_within(
    state: &AppState,
    repo_cfg: &crate::runway_toml::RepoConfig,
    want: &str,
) -> Option<std::path::PathBuf> {
    repo_cfg.local_path().or_else(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let (dir, repo, want) = (state.state_dir.clone(), repo_cfg.clone(), want.to_string());
        std::thread::spawn(move || {
            let _ = tx.send(mirror::sync(&dir, &repo, Some(&want), None));
        });
        rx.recv_timeout(Duration::from_secs(state.cfg.intake_fetch_secs))
            .ok()?
            .ok()
    })
}

/// Decides whether the push builds (its `.travis.yml` at the commit, when the
/// repository is local) and queues it durably.
fn queue(state: &AppState, d: &Delivery) -> Result<Queued, NotQueued> {
    let repo_cfg = state
        .cfg
        .repo(&d.repo)
        .ok_or_else(|| NotQueued::Other("unknown repository".into()))?;
    if !repo_cfg.build_pushes {
        return Ok(Queued::NotBuilt(format!(
            "not built: build_pushes = false for {} in runway.toml",
            repo_cfg.name
        )));
    }
    let mut message = d.message.clone();
    // A remote repository is fetched now, as Travis read .travis.yml at the pushed
    // commit before queuing. When that fails, or takes longer than intake_fetch_secs
    // (the fetch goes on; the build waits for it), the build is queued and decides.
    let source = source_within(state, repo_cfg, &d.after);
    let repo = source.as_deref().and_then(crate::source::Repo::open);
    // A forge's push is built only while it is its ref's state: a delivery of a commit
    // the ref has since moved on from (an old delivery replayed) builds nothing and
    // cancels nothing: replaying one must never roll a deploying branch back. (The
    // generic endpoint, which names no `before`, asks for a commit by name.)
    let tip = repo.as_ref().and_then(|r| r.ref_tip(&d.ref_name()));
    let behind = tip
        .as_ref()
        .is_some_and(|t| !t.eq_ignore_ascii_case(&d.after));
    if d.push_key().is_some()
        && behind
        && let Some(tip) = tip
    {
        return Ok(Queued::Stale(tip));
    }
    if let Some(repo) = &repo
        && let Ok(bytes) = repo.read_file(&d.after, ".travis.yml", crate::config::MAX_CONFIG_BYTES)
    {
        if message.is_empty() {
            message = repo.commit(&d.after).map(|c| c.message).unwrap_or_default();
        }
        let loaded = crate::config::load_bytes(&bytes);
        // Only whether it builds (skip ci, branches, the root if:, with the repository's
        // settings as the build sees them); the worker plans the build once.
        let event = d.event(message.clone());
        let settings = crate::plan::Settings {
            build_number: 0,
            env: repo_cfg.settings().vars(),
        };
        let decision = crate::plan::decide_build(
            &loaded.config,
            &event,
            &loaded.config.global_env(),
            &settings,
        );
        // A config that cannot be read (or is past a limit) is queued, so its build
        // shows the error and is mailed.
        if !decision.runs && loaded.unreadable().is_none() {
            return Ok(Queued::NotBuilt(format!("not built: {}", decision.reason)));
        }
    }
    let window = state.cfg.delivery_window_secs as i64;
    state
        .db(|s| {
            let since = crate::store::Store::now() - window;
            // By its id, and by what it pushes (the same push under a new id).
            let keys: Vec<String> = d.id.iter().cloned().chain(d.push_key()).collect();
            for key in &keys {
                if let Some(made) = s.delivery(key, since)? {
                    return Ok(Queued::Duplicate(Box::new(made)));
                }
            }
            let row = s.enqueue(&NewBuild {
                delivered_as: keys,
                ..NewBuild::of(&d.event(message))
            })?;
            s.forget_deliveries(since)?;
            // Auto-cancel only for the ref's newest state: a commit the ref has moved on
            // from (asked for by name on the generic endpoint) cancels nothing.
            let auto = repo_cfg.auto_cancel_pushes.unwrap_or(state.cfg.auto_cancel);
            let canceled = if auto && row.branch.is_some() && !behind {
                s.cancel_superseded(&row)?
            } else {
                crate::store::Superseded::default()
            };
            Ok(Queued::Build(Box::new(row), canceled))
        })
        .map_err(NotQueued::Store)
}

/// A pull request closed: cancels its builds that have not ended.
fn close_pull(state: &AppState, repo: &str, number: u64) -> Result<Queued, NotQueued> {
    let reason = format!("canceled: pull request #{number} was closed");
    let canceled = state.db(|s| s.cancel_pull(repo, number, &reason))?;
    Ok(Queued::Closed(repo.to_string(), number, canceled))
}

/// Decides whether a pull request builds, makes the commit it builds (the forge's merge
/// of its head into its base when it offers one, else runway's), and queues it durably.
/// A head that cannot be merged is recorded errored, saying so.
fn queue_pull(state: &AppState, p: &PullDelivery) -> Result<Queued, NotQueued> {
    let repo_cfg = state
        .cfg
        .repo(&p.repo)
        .ok_or_else(|| NotQueued::Other("unknown repository".into()))?;
    if !repo_cfg.build_pull_requests {
        return Ok(Queued::NotBuilt(format!(
            "not built: build_pull_requests = false for {} in runway.toml",
            repo_cfg.name
        )));
    }
    if p.fork() && repo_cfg.fork_prs == crate::runway_toml::ForkPrs::Off {
        return Ok(Queued::NotBuilt(format!(
            "not built: pull request #{} comes from a fork ({}) and fork_prs = \"off\" for {}",
            p.number,
            if p.head_slug.is_empty() {
                "a deleted repository"
            } else {
                &p.head_slug
            },
            repo_cfg.name
        )));
    }
    // A remote repository is fetched now, within intake_fetch_secs; a git host slower
    // than that gets the build queued with its merge to be made when it runs.
    let Some(source) = source_within(state, repo_cfg, &p.head_sha) else {
        return queue_pull_later(state, repo_cfg, p);
    };
    let repo = crate::source::Repo::open(&source)
        .ok_or_else(|| NotQueued::Other(format!("{} is not a git repository", source.display())))?;
    if !repo.has_commit(&p.head_sha) {
        return Ok(Queued::NotBuilt(format!(
            "not built: the head of pull request #{} ({}) is not in {} (the forge keeps it under {})",
            p.number, p.head_sha, repo_cfg.name, p.head_ref
        )));
    }
    let base_sha = repo
        .ref_tip(&format!("refs/heads/{}", p.base_branch))
        .or_else(|| p.base_sha.clone().filter(|b| repo.has_commit(b)))
        .ok_or_else(|| {
            NotQueued::Other(format!(
                "the base branch {} of pull request #{} is not in {}",
                p.base_branch, p.number, repo_cfg.name
            ))
        })?;
    let message = repo
        .commit(&p.head_sha)
        .map(|c| c.message)
        .unwrap_or_else(|_| p.title.clone());
    let mut pr = crate::event::PullRequest {
        number: p.number,
        head_branch: p.head_branch.clone(),
        head_sha: p.head_sha.clone(),
        head_slug: p.head_slug.clone(),
        base_sha: base_sha.clone(),
        fork: p.fork(),
        merged_by_runway: false,
    };
    // The forge's merge commit, while it is the merge of this head into this base.
    let forges = p
        .merge_ref
        .as_ref()
        .and_then(|r| repo.ref_tip(r))
        .filter(|m| {
            repo.parents(m)
                .is_some_and(|ps| ps.len() == 2 && ps[0] == base_sha && ps[1] == p.head_sha)
        });
    let (merged, unmergeable) = match forges {
        Some(m) => (Some((source.clone(), m)), None),
        None => {
            pr.merged_by_runway = true;
            match super::sources::remerge(
                &state.state_dir,
                &repo_cfg.name,
                &source,
                &pr,
                &p.base_branch,
            ) {
                Ok(made) => (Some(made), None),
                Err(why) => (None, Some(why)),
            }
        }
    };
    let commit = merged
        .as_ref()
        .map(|(_, c)| c.clone())
        .unwrap_or_else(|| p.head_sha.clone());
    let event = crate::event::BuildEvent {
        repo: repo_cfg.name.clone(),
        branch: Some(p.base_branch.clone()),
        event: crate::event::EventType::PullRequest,
        commit: commit.clone(),
        commit_message: message,
        commit_range: format!("{base_sha}...{}", p.head_sha),
        pull_request: Some(pr),
        ..Default::default()
    };
    if let Some((dir, sha)) = &merged
        && let Some(built) = crate::source::Repo::open(dir)
        && let Ok(bytes) = built.read_file(sha, ".travis.yml", crate::config::MAX_CONFIG_BYTES)
    {
        let loaded = crate::config::load_bytes(&bytes);
        let settings = crate::plan::Settings {
            build_number: 0,
            env: repo_cfg.settings_for(&event).vars(),
        };
        let decision = crate::plan::decide_build(
            &loaded.config,
            &event,
            &loaded.config.global_env(),
            &settings,
        );
        if !decision.runs && loaded.unreadable().is_none() {
            return Ok(Queued::NotBuilt(format!("not built: {}", decision.reason)));
        }
    }
    record_pull(state, repo_cfg, p, &event, unmergeable)
}

/// Records a pull request's build: once per delivery and head (a duplicate is said),
/// waiting for an approval when it comes from a fork and `fork_prs = "approve"`, errored
/// when `unmergeable` says why; superseding the pull request's older builds.
fn record_pull(
    state: &AppState,
    repo_cfg: &crate::runway_toml::RepoConfig,
    p: &PullDelivery,
    event: &crate::event::BuildEvent,
    unmergeable: Option<String>,
) -> Result<Queued, NotQueued> {
    let window = state.cfg.delivery_window_secs as i64;
    state
        .db(|s| {
            let since = crate::store::Store::now() - window;
            let keys: Vec<String> = p.id.iter().cloned().chain([p.key()]).collect();
            for key in &keys {
                if let Some(made) = s.delivery(key, since)? {
                    return Ok(Queued::Duplicate(Box::new(made)));
                }
            }
            let waits = p.fork() && repo_cfg.fork_prs == crate::runway_toml::ForkPrs::Approve;
            let new = NewBuild {
                delivered_as: keys,
                ..NewBuild::of(event)
            };
            let row = if let Some(why) = &unmergeable {
                s.record_errored(&new, why)?
            } else if waits {
                s.enqueue_awaiting(&new, |n| {
                    format!(
                        "awaiting approval: pull request #{} comes from a fork ({}); someone with write access approves it on the build's page or with POST /api/builds/{n}/approve?repo={}",
                        p.number,
                        if p.head_slug.is_empty() { "a deleted repository" } else { &p.head_slug },
                        repo_cfg.name
                    )
                })?
            } else {
                s.enqueue(&new)?
            };
            s.forget_deliveries(since)?;
            let auto = repo_cfg
                .auto_cancel_pull_requests
                .unwrap_or(state.cfg.auto_cancel);
            let canceled = if auto {
                s.cancel_superseded(&row)?
            } else {
                crate::store::Superseded::default()
            };
            Ok(Queued::Build(Box::new(row), canceled))
        })
        .map_err(NotQueued::Store)
}

/// A pull request whose repository could not be fetched within intake_fetch_secs:
/// queued on its head, its merge into the base made when the build runs
/// ([`super::sources::of_build`]), which then also decides whether it builds.
fn queue_pull_later(
    state: &AppState,
    repo_cfg: &crate::runway_toml::RepoConfig,
    p: &PullDelivery,
) -> Result<Queued, NotQueued> {
    let event = crate::event::BuildEvent {
        repo: repo_cfg.name.clone(),
        branch: Some(p.base_branch.clone()),
        event: crate::event::EventType::PullRequest,
        commit: p.head_sha.clone(),
        commit_message: p.title.clone(),
        pull_request: Some(crate::event::PullRequest {
            number: p.number,
            head_branch: p.head_branch.clone(),
            head_sha: p.head_sha.clone(),
            head_slug: p.head_slug.clone(),
            base_sha: String::new(),
            fork: p.fork(),
            merged_by_runway: true,
        }),
        ..Default::default()
    };
    record_pull(state, repo_cfg, p, &event, None)
}

/// `POST /api/repos/OWNER/REPO/requests` (API token): Travis API v3's "trigger a build":
/// `{"request": {"branch": B, "message": M, "config": {…}, "merge_mode": …}}`, a build
/// of the branch's tip as event `api`, its config laid on the `.travis.yml` by the
/// merge mode (`deep_merge` when none is named). Answered `202 {"number": N}`.
pub(super) async fn api_request(
    State(state): State<Arc<AppState>>,
    axum::extract::Path((owner, name)): axum::extract::Path<(String, String)>,
    req: Request,
) -> Response {
    let headers: HeaderMap = req.headers().clone();
    let repo = format!("{owner}/{name}");
    let who = match super::access::require(
        &state,
        &headers,
        &repo,
        crate::auth::Role::Write,
        &format!("runway does not build {repo}"),
    ) {
        Ok(who) => who,
        Err(refused) => return *refused,
    };
    let body = match body_of(req, &headers, &state).await {
        Ok(b) => b,
        Err(answered) => return answered,
    };
    let bad = |why: String| answer(StatusCode::BAD_REQUEST, serde_json::json!({ "error": why }));
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad(format!("the body is not JSON: {e}")),
    };
    let r = v.get("request").unwrap_or(&v);
    let mode = match r.get("merge_mode") {
        None | Some(serde_json::Value::Null) => crate::config::merge::MergeMode::default(),
        Some(m) => match serde_json::from_value(m.clone()) {
            Ok(m) => m,
            Err(_) => {
                return bad(format!(
                    "merge_mode {m} is not one of \"replace\", \"merge\", \"deep_merge\""
                ));
            }
        },
    };
    let config = match r.get("config") {
        None | Some(serde_json::Value::Null) => None,
        Some(c) if c.is_object() => Some(c.clone()),
        Some(_) => return bad("config is not a mapping".into()),
    };
    if config
        .as_ref()
        .is_some_and(|c| c.to_string().len() > crate::config::merge::MAX_REQUEST_CONFIG)
    {
        return bad(format!(
            "config is larger than {} bytes",
            crate::config::merge::MAX_REQUEST_CONFIG
        ));
    }
    let Some(repo_cfg) = state.cfg.repo(&repo).cloned() else {
        return answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("runway does not build {repo}")}),
        );
    };
    let branch = r
        .get("branch")
        .and_then(|b| b.as_str())
        .map(str::to_string)
        .or_else(|| repo_cfg.default_branch.clone())
        .unwrap_or_else(|| "master".into());
    let message = r
        .get("message")
        .and_then(|m| m.as_str())
        .map(str::to_string);
    // Travis validated the config before queuing: one that cannot be read is refused.
    if let Some(c) = &config
        && let Err(e) =
            crate::config::merge::merged(None, c, crate::config::merge::MergeMode::Replace)
    {
        return bad(format!("config: {e}"));
    }
    let st = state.clone();
    let queued = tokio::task::spawn_blocking(move || {
        let source = super::sources::repository(&st.state_dir, &repo_cfg, None, None)
            .map_err(NotQueued::Other)?;
        let found = crate::source::Repo::open(&source).and_then(|r| {
            let tip = r.ref_tip(&format!("refs/heads/{branch}"))?;
            let info = r.commit(&tip).ok()?;
            Some((tip, info.message))
        });
        let Some((commit, commit_message)) = found else {
            return Ok(Queued::NotBuilt(format!(
                "{} has no branch {branch}",
                repo_cfg.name
            )));
        };
        let mut nb = NewBuild::of(&crate::event::BuildEvent {
            repo: repo_cfg.name.clone(),
            branch: Some(branch),
            event: crate::event::EventType::Api,
            commit,
            commit_message: message.unwrap_or(commit_message),
            ..Default::default()
        });
        nb.request = config.map(|config| crate::store::ApiConfig {
            config,
            merge_mode: mode,
        });
        let row = st.db(|s| s.enqueue(&nb))?;
        super::access::record(
            &st,
            &who,
            crate::store::access::Action::Trigger,
            &row.repo,
            Some(row.id),
            row.branch.as_deref().unwrap_or_default(),
        );
        super::statuses::enqueue_row(&st, &row);
        Ok(Queued::Build(
            Box::new(row),
            crate::store::Superseded::default(),
        ))
    })
    .await;
    match queued {
        Ok(Ok(Queued::NotBuilt(why))) => {
            answer(StatusCode::NOT_FOUND, serde_json::json!({ "error": why }))
        }
        other => answer_queued(&state, other),
    }
}
