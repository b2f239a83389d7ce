//! What people and programs read: the HTML pages, the live log as server-sent events,
//! and the JSON API (including cancel).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json, Response};
use serde::Deserialize;

use crate::store::Status;

use super::DbError;
use super::access::{self, Viewer, viewer};
use super::changes::{Cursor, Since};
use super::live::{self, Chunk, JobText, LiveLog};
use super::{AppState, answer, hooks, pages};
use crate::auth::{Role, Who};
use crate::job::JobResult;
use crate::store::BuildRow;
use crate::store::access::Action;
use tokio::sync::broadcast::error::RecvError;

/// `?repo=owner/app`, when several repositories have the build number.
#[derive(Deserialize, Default)]
pub(super) struct RepoQuery {
    repo: Option<String>,
}

/// Build `n` (of `?repo=`), if `who` may read it: a build of a private repository is
/// not there for whoever may not.
fn find(state: &AppState, n: u64, q: &RepoQuery, who: &Who) -> Result<Option<BuildRow>, DbError> {
    Ok(state
        .db(|s| s.build(q.repo.as_deref(), n))?
        .filter(|row| access::may_read(state, &row.repo, who)))
}

/// [`find`], or the API's 404 answer (503 when the store cannot be read).
fn find_or_404(
    state: &AppState,
    n: u64,
    q: &RepoQuery,
    who: &Who,
) -> Result<BuildRow, Box<Response>> {
    match find(state, n, q, who) {
        Ok(Some(row)) => Ok(row),
        Ok(None) => Err(Box::new(answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("there is no build #{n}")}),
        ))),
        Err(e) => Err(Box::new(e.answer())),
    }
}

/// A page with the signed-in bar (and its CSRF token) for `v`.
fn dressed(state: &AppState, v: &Viewer, here: &str, html: String) -> Response {
    Html(pages::dress(html, &access::bar(state, v, here))).into_response()
}

/// The 404 page of a build (with the sign-in link: a private build may be there for
/// someone signed in).
fn not_found(state: &AppState, v: &Viewer, n: u64) -> Response {
    let mut r = dressed(state, v, &format!("/builds/{n}"), pages::not_found(n));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// The page for a store that cannot be read: 503 with `Retry-After`.
fn page_unavailable(e: &DbError) -> Response {
    let mut r = (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(pages::store_unavailable(&e.to_string())),
    )
        .into_response();
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(super::RETRY_AFTER_SECS),
    );
    r
}

/// `?repo=owner/app&before=ID`: one repository's builds, older than a build.
#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    repo: Option<String>,
    branch: Option<String>,
    before: Option<i64>,
}

/// `GET /`: the repositories with their latest build, then the builds, newest first,
/// a page at a time (`?before=ID`), kept up to date over `GET /events`.
pub(super) async fn pages_index(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let v = match viewer(&state, &headers) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let visible = access::readable(&state, &v.who);
    // Taken before the builds are read: a change after it may be in the page and is
    // told again (a row replaced by itself), but none is missed.
    let seen = state.changes.cursor().to_string();
    let repo = q.repo.as_deref().filter(|r| !r.is_empty());
    let branch = q.branch.as_deref().filter(|b| !b.is_empty());
    let read = state.db(|s| {
        Ok((
            s.branch_page(repo, branch, q.before, pages::PAGE + 1, visible.as_deref())?,
            s.latest_per_repo()?,
            match repo {
                Some(r) if access::may_read(&state, r, &v.who) => s.branches_of(r)?,
                _ => Vec::new(),
            },
        ))
    });
    let (rows, mut latest, branches) = match read {
        Ok(r) => r,
        Err(e) => return page_unavailable(&e),
    };
    latest.retain(|r| access::may_read(&state, &r.repo, &v.who));
    let repos: Vec<String> = state
        .cfg
        .repos
        .iter()
        .map(|r| r.name.clone())
        .filter(|r| access::may_read(&state, r, &v.who))
        .collect();
    let here = "/";
    dressed(
        &state,
        &v,
        here,
        pages::index(&pages::List {
            rows: &rows,
            latest: &latest,
            repos: &repos,
            only: repo,
            branch,
            branches: &branches,
            before: q.before,
            seen: &seen,
        }),
    )
}

/// `GET /events`: each build that is queued, starts, ends, is canceled or restarted,
/// as a server-sent `build` event (the API's JSON for it) with its place as the event's
/// id; `reload` when this reader fell too far behind to be told each. A reader that
/// gives a place (`?after=` from the page, or `Last-Event-ID` when it reconnects) is
/// first told each change since.
pub(super) async fn list_events(
    State(state): State<Arc<AppState>>,
    Query(q): Query<EventsQuery>,
    peer: Option<axum::Extension<super::streams::Peer>>,
    headers: HeaderMap,
) -> Response {
    let who = match viewer(&state, &headers) {
        Ok(v) => v.who,
        Err(refused) => return *refused,
    };
    let permit = match stream_permit(&state, peer) {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    // A reconnecting reader's place may be another start's (this server restarted):
    // it reads everything again. A page's may be another node's (several behind one
    // address): it starts from now, or it would reload for ever.
    let last_id = headers
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .filter(|s| !s.is_empty());
    let after = match (last_id, q.after.as_deref().and_then(Cursor::parse)) {
        (Some(id), _) => Cursor::parse(id).ok_or(Lost),
        (None, Some(page)) if state.changes.is_ours(page) => Ok(page),
        (None, _) => Ok(state.changes.cursor()),
    };
    let (pending, rx) = match after.map(|c| state.changes.since(c)) {
        Ok((Since::Each(each), rx)) => (each.into_iter().map(Ok).collect(), rx),
        Ok((Since::Lost, rx)) => (VecDeque::from([Err(Lost)]), rx),
        Err(Lost) => (VecDeque::from([Err(Lost)]), state.changes.subscribe()),
    };
    let stream = futures_util::stream::unfold(
        (state, rx, permit, who, pending),
        |(state, mut rx, permit, who, mut pending)| async move {
            loop {
                let got = match pending.pop_front() {
                    Some(told) => told,
                    None => {
                        // Registered before the flag is read, so a stop between the two
                        // is seen.
                        let closing = state.closing.notified();
                        tokio::pin!(closing);
                        closing.as_mut().enable();
                        if state.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                            return None;
                        }
                        tokio::select! {
                            got = rx.recv() => match got {
                                Ok(c) => Ok(c),
                                Err(RecvError::Lagged(_)) => Err(Lost),
                                Err(RecvError::Closed) => return None,
                            },
                            _ = closing => return None,
                        }
                    }
                };
                let ev = match got {
                    // A build that cannot be read now (gone, or the store away) is
                    // skipped: the stream goes on.
                    Ok(c) => match state.db(|s| s.by_id(c.build)) {
                        // Only the builds this reader may see.
                        Ok(Some(row)) if access::may_read(&state, &row.repo, &who) => {
                            let mut v = api_row(&row);
                            v["row_html"] = pages::row_html(&row).into();
                            v["repo_html"] = pages::repo_html(&row).into();
                            Event::default()
                                .event("build")
                                .id(c.at.to_string())
                                .json_data(v)
                                .expect("json")
                        }
                        _ => continue,
                    },
                    Err(Lost) => Event::default().event("reload").data("reload"),
                };
                return Some((
                    Ok::<_, std::convert::Infallible>(ev),
                    (state, rx, permit, who, pending),
                ));
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// `GET /events?after=PLACE`.
#[derive(Deserialize)]
pub(super) struct EventsQuery {
    after: Option<String>,
}

/// Changes a reader was not told: it reads everything again.
struct Lost;

/// `GET /assets/NAME`: the pages' script, style and the ANSI colour library.
pub(super) async fn asset(UrlPath(name): UrlPath<String>) -> Response {
    match pages::asset(&name) {
        Some((kind, body)) => (
            [
                (axum::http::header::CONTENT_TYPE, kind),
                (axum::http::header::CACHE_CONTROL, "max-age=300"),
            ],
            body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /builds/N/config`: "View config": the `.travis.yml` as the build read it (with
/// an API request's config laid on it), what was said of it, and the decisions with
/// their reasons (does it run, its jobs, each deploy, the mail), as `runway plan` says
/// them. Settings are masked.
pub(super) async fn page_config(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
    headers: HeaderMap,
) -> Response {
    let v = match viewer(&state, &headers) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let row = match find(&state, n, &q, &v.who) {
        Ok(Some(row)) => row,
        Ok(None) => return not_found(&state, &v, n),
        Err(e) => return page_unavailable(&e),
    };
    let st = state.clone();
    let r = row.clone();
    let view = tokio::task::spawn_blocking(move || config_view(&st, &r))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    dressed(
        &state,
        &v,
        &format!("/builds/{n}/config"),
        pages::config(&row, &view),
    )
}

/// What "View config" shows of build `row`, or why it cannot be read.
fn config_view(state: &AppState, row: &BuildRow) -> Result<pages::ConfigView, String> {
    let repo = state
        .cfg
        .repo(&row.repo)
        .ok_or("the repository is no longer in runway.toml")?;
    let mut r = row.clone();
    // A pull request queued before its merge was made: read at the merge made now.
    let path = super::sources::of_build(&state.state_dir, repo, &mut r, None, &|_| Ok(()))?;
    let refs = crate::service::RefArgs::queued(&r, repo.default_branch.clone());
    let target = crate::service::target::resolve(&path, &refs).map_err(|e| e.to_string())?;
    let masker = repo.settings().masker();
    let loaded = crate::config::load_bytes(&target.config_bytes);
    let settings = crate::plan::Settings {
        build_number: row.number,
        env: repo.settings_for(&target.event).vars(),
    };
    let mut decisions = Vec::new();
    if loaded.unreadable().is_none() {
        let plan = crate::plan::plan(&loaded.config, &target.event, &settings);
        if let Some(e) = &plan.error {
            decisions.extend_from_slice(format!("{}\n", e.render(&target.config_name)).as_bytes());
        }
        crate::plan::write_human(&plan, &mut decisions, &|_, text| text.to_string())
            .map_err(|e| e.to_string())?;
    }
    Ok(pages::ConfigView {
        name: target.config_name.clone(),
        text: masker.mask_all(&String::from_utf8_lossy(&target.config_bytes)),
        said: loaded
            .diagnostics
            .iter()
            .map(|d| masker.mask_all(&d.render(&target.config_name)))
            .collect(),
        decisions: masker.mask_all(&String::from_utf8_lossy(&decisions)),
        commit: r.commit.clone(),
    })
}

/// `?branch=` of a badge.
#[derive(Deserialize)]
pub(super) struct BadgeQuery {
    branch: Option<String>,
}

/// `GET /badge/OWNER/REPO.svg?branch=B`: the branch's badge (the default branch's
/// without `branch`): the state of its last finished push build; "unknown" for a
/// repository or branch runway has not built, never a 404 page in a README. Sent with
/// `no-cache` and an ETag, so a README's image proxy asks again each time and gets
/// `304` while the state holds.
pub(super) async fn badge(
    State(state): State<Arc<AppState>>,
    UrlPath((owner, file)): UrlPath<(String, String)>,
    Query(q): Query<BadgeQuery>,
    headers: HeaderMap,
) -> Response {
    let repo = format!("{owner}/{}", file.strip_suffix(".svg").unwrap_or(&file));
    // A private repository's badge is not there for whoever may not read it.
    let who = viewer(&state, &headers).map_or(Who::Anonymous, |v| v.who);
    if !access::may_read(&state, &repo, &who) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let configured = state.cfg.repo(&repo);
    let branch = q
        .branch
        .filter(|b| !b.is_empty())
        .or_else(|| configured.and_then(|r| r.default_branch.clone()))
        .unwrap_or_else(|| "master".into());
    let built = match configured {
        Some(r) => state
            .db(|s| s.branch_state(&r.name, &branch))
            .ok()
            .flatten(),
        None => None,
    };
    let (value, colour) = super::badge::look(built);
    let etag = format!("\"{value}\"");
    let fresh = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let cache = [
        (
            axum::http::header::CACHE_CONTROL,
            "no-cache, max-age=0, must-revalidate".to_string(),
        ),
        (axum::http::header::ETAG, etag),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "image/svg+xml; charset=utf-8".to_string(),
        )],
        cache,
        super::badge::svg("build", value, colour),
    )
        .into_response()
}

/// `POST /api/builds/N/jobs/J/restart`: one job of an ended build runs again; what it
/// did this time is kept as an attempt, the other jobs keep their results.
pub(super) async fn api_restart_job(
    State(state): State<Arc<AppState>>,
    UrlPath((n, job)): UrlPath<(u64, String)>,
    Query(q): Query<RepoQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (row, who) = match authorized_build(&state, n, &q, &headers, &body) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    if row.state.is_active() {
        return answer(
            StatusCode::CONFLICT,
            serde_json::json!({"error": format!("build #{n} is {}; a job is restarted once it has ended", row.state)}),
        );
    }
    let number = if job.contains('.') {
        job.clone()
    } else {
        format!("{n}.{job}")
    };
    match state.db(|s| s.restart_job(row.id, &number)) {
        Ok(attempt) => {
            access::record(
                &state,
                &who,
                Action::RestartJob,
                &row.repo,
                Some(row.id),
                &number,
            );
            tracing::info!(repo = %row.repo, number = n, job = %number, attempt, "job restarted");
            state.may_have_queued();
            state.changed(row.id);
            answer(
                StatusCode::ACCEPTED,
                serde_json::json!({"restarted": true, "number": n, "job": number, "kept_attempt": attempt}),
            )
        }
        Err(e) if e.message.contains("has no job") => answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("build #{n} has no job {number}")}),
        ),
        Err(e) => e.answer(),
    }
}

/// `POST /api/builds/N/approve`: a fork's pull request awaiting approval is queued.
pub(super) async fn api_approve(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (row, who) = match authorized_build(&state, n, &q, &headers, &body) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    match state.db(|s| s.approve(row.id, &who.name())) {
        Ok(true) => {
            access::record(&state, &who, Action::Approve, &row.repo, Some(row.id), "");
            tracing::info!(repo = %row.repo, number = row.number, "build approved");
            state.may_have_queued();
            state.changed(row.id);
            answer(
                StatusCode::OK,
                serde_json::json!({"approved": true, "number": n}),
            )
        }
        Ok(false) => answer(
            StatusCode::CONFLICT,
            serde_json::json!({"error": format!("build #{n} is {}, not awaiting approval", row.state)}),
        ),
        Err(e) => e.answer(),
    }
}

/// `POST /api/builds/N/restart`: an ended build is queued again (its jobs forgotten).
pub(super) async fn api_restart(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (row, who) = match authorized_build(&state, n, &q, &headers, &body) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    if row.state.is_active() {
        return answer(
            StatusCode::CONFLICT,
            serde_json::json!({"error": format!("build #{n} is {}; cancel it first", row.state)}),
        );
    }
    if let Err(e) = state.db(|s| s.restart(row.id)) {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": e.to_string()}),
        );
    }
    access::record(&state, &who, Action::Restart, &row.repo, Some(row.id), "");
    state.may_have_queued();
    state.changed(row.id);
    answer(
        StatusCode::ACCEPTED,
        serde_json::json!({"restarted": true, "number": n}),
    )
}

/// `GET /builds/N`: a build with its jobs and its logs (live while it runs).
pub(super) async fn page_build(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
    headers: HeaderMap,
) -> Response {
    let v = match viewer(&state, &headers) {
        Ok(v) => v,
        Err(refused) => return *refused,
    };
    let row = match find(&state, n, &q, &v.who) {
        Ok(Some(row)) => row,
        Ok(None) => return not_found(&state, &v, n),
        Err(e) => return page_unavailable(&e),
    };
    let live = state.live.get(row.id).is_some() || row.state.is_active();
    let (jobs, attempts) = match jobs_with_workers(&state, row.id, !live).await {
        Ok(read) => read,
        Err(e) => return page_unavailable(&e),
    };
    let log = if live {
        Vec::new()
    } else {
        state
            .db(|s| Ok(s.build_log(row.id, &jobs)))
            .unwrap_or_default()
    };
    // Buttons for what this reader may do: with sign-in, a writer's; without, for
    // whoever holds the API token (the page asks for it).
    let can_change = if state.cfg.auth.is_some() {
        state.cfg.role(&row.repo, &v.who) >= Some(Role::Write)
    } else {
        state.cfg.api_token().is_some()
    };
    // A running build's jobs have no rows yet: the workers they are on, in the header.
    let mut on = if row.state.is_active() {
        pages::running_on(&attempts)
    } else {
        String::new()
    };
    on.push_str(&pages::links(&row, state.cfg.repo(&row.repo)));
    on.push_str(&pages::attempts(
        &row,
        &state.db(|s| s.attempts(row.id)).unwrap_or_default(),
    ));
    on.push_str(&pages::statuses(
        &state.db(|s| s.statuses_of(row.id)).unwrap_or_default(),
    ));
    on.push_str(&pages::audit(
        &state
            .db(|s| s.audit_trail(Some(row.id), None, AUDIT_SHOWN))
            .unwrap_or_default(),
    ));
    let here = match &q.repo {
        Some(r) => format!("/builds/{n}?repo={r}"),
        None => format!("/builds/{n}"),
    };
    dressed(
        &state,
        &v,
        &here,
        pages::build(&row, &jobs, &log, live, can_change, &on),
    )
}

/// The most audit entries a build page and the API show.
const AUDIT_SHOWN: usize = 200;

/// Every worker that took each job of a build, attempt by attempt (none without
/// workers).
type Attempts = std::collections::BTreeMap<String, Vec<String>>;

/// A build's recorded jobs (with their `logs` when asked), each with the workers that
/// ran it (when any did), and the workers of every job, recorded or still running.
async fn jobs_with_workers(
    state: &Arc<AppState>,
    build_id: i64,
    logs: bool,
) -> Result<(Vec<crate::store::JobRow>, Attempts), DbError> {
    let mut jobs = if logs {
        jobs_with_logs(state, build_id).await?
    } else {
        state.db(|s| s.jobs_unread(build_id))?.0
    };
    let attempts = if state.cfg.uses_workers() {
        state.db(|s| s.task_attempts(build_id))?
    } else {
        Attempts::new()
    };
    for j in &mut jobs {
        if let Some(ws) = attempts.get(&j.number) {
            j.worker = ws.last().cloned();
            j.workers = ws.clone();
        }
    }
    Ok((jobs, attempts))
}

/// A build's jobs with their logs: archived ones are read outside the store's lock
/// and off the server's threads, so a slow read (S3) holds up no other request.
async fn jobs_with_logs(
    state: &Arc<AppState>,
    build_id: i64,
) -> Result<Vec<crate::store::JobRow>, DbError> {
    let (mut jobs, archived, archive) = state.db(|s| {
        let (jobs, archived) = s.jobs_unread(build_id)?;
        Ok((jobs, archived, s.log_archive()))
    })?;
    if archived.is_empty() {
        return Ok(jobs);
    }
    tokio::task::spawn_blocking(move || {
        crate::store::archive::fill(archive.as_deref(), &mut jobs, &archived);
        jobs
    })
    .await
    .map_err(|e| DbError {
        message: format!("reading the archived logs: {e}"),
        unreachable: false,
    })
}

/// `GET /builds/N/events`: the build's log and each job's as server-sent events,
/// from the start, live until the build ends ([`event_of`]).
pub(super) async fn build_events(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
    peer: Option<axum::Extension<super::streams::Peer>>,
    headers: HeaderMap,
) -> Response {
    let who = match viewer(&state, &headers) {
        Ok(v) => v.who,
        Err(refused) => return *refused,
    };
    let permit = match stream_permit(&state, peer) {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    let row = match find(&state, n, &q, &who) {
        Ok(Some(row)) => row,
        Ok(None) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => return e.answer(),
    };
    // Counted as a reader from here (before its build starts, when queued): a job of
    // it handed to a worker sends its first command at once.
    let reading = state.live.reading(row.id);
    // A build another node follows: its jobs' logs from the workers' chunks.
    if state.cfg.uses_workers() && row.state == Status::Running {
        super::dispatch::mirror(state.clone(), row.id);
    }
    // Wait for a queued build to start, briefly, so the page can follow it.
    let mut live = state.live.get(row.id);
    for _ in 0..100 {
        let started = state.live.started.notified();
        if live.is_some() {
            break;
        }
        // Between being claimed and starting its live log a build is "running" with
        // no log yet: keep waiting until it has one or has ended.
        let now = find(&state, n, &q, &who).ok().flatten();
        let ended = now.as_ref().is_some_and(|r| !r.state.is_active());
        if ended && state.live.get(row.id).is_none() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), started).await;
        live = state.live.get(row.id);
    }
    let live = match live {
        Some(l) => l,
        None => {
            let jobs = jobs_with_logs(&state, row.id).await.unwrap_or_default();
            let text = state
                .db(|s| Ok(s.build_log(row.id, &jobs)))
                .unwrap_or_default();
            let jobs = jobs
                .into_iter()
                .map(|j| JobText {
                    result: JobResult::from_name(&j.result),
                    number: j.number,
                    text: j.log,
                })
                .collect();
            LiveLog::ended(text, jobs)
        }
    };
    // Watch before the first read, so no change between the two is missed.
    let rx = live.watch();
    let stream = futures_util::stream::unfold(
        (
            live,
            live::Cursor::default(),
            rx,
            VecDeque::new(),
            (permit, reading),
        ),
        |(live, mut cursor, mut rx, mut pending, held)| async move {
            loop {
                if let Some(chunk) = pending.pop_front() {
                    let ev = Ok::<_, std::convert::Infallible>(event_of(&chunk));
                    return Some((ev, (live, cursor, rx, pending, held)));
                }
                if cursor.ended() {
                    return None;
                }
                pending.extend(live.read(&mut cursor));
                if pending.is_empty() && rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A live log's chunk as a server-sent event: the build's output as `message` (a JSON
/// string), a job's as `job` (`{"job": "1.2", "text": …}`), a job's end as `jobend`
/// (`{"job": "1.2", "result": "passed"}`), the build's end as `end`.
fn event_of(chunk: &Chunk) -> Event {
    let json = |e: Event, v: serde_json::Value| e.json_data(v).expect("json");
    match chunk {
        Chunk::Bytes(text) => json(Event::default(), text.as_str().into()),
        Chunk::Job(job, text) => json(
            Event::default().event("job"),
            serde_json::json!({"job": job, "text": text}),
        ),
        Chunk::JobEnd(job, result) => json(
            Event::default().event("jobend"),
            serde_json::json!({"job": job, "result": result.as_str()}),
        ),
        Chunk::End => Event::default().event("end").data("end"),
    }
}

fn api_row(r: &BuildRow) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "number": r.number, "repo": r.repo, "branch": r.branch, "tag": r.tag,
        "commit": r.commit, "state": r.state, "event": r.event,
        "message": r.message.lines().next().unwrap_or(""), "author": r.author,
        // A queued build has not started: when it was queued instead.
        "started_at": (r.state != Status::Queued).then_some(r.started_at),
        "queued_at": (r.state == Status::Queued).then_some(r.started_at),
        "finished_at": r.finished_at,
        "url": crate::notify::build_url("", &r.repo, r.number),
    })
}

/// What `GET /api/builds` lists: one repository's builds, one branch's.
#[derive(Deserialize)]
pub(super) struct BuildsQuery {
    repo: Option<String>,
    branch: Option<String>,
}

/// `GET /api/builds[?repo=R][&branch=B]`: builds, newest first, as JSON.
pub(super) async fn api_builds(
    State(state): State<Arc<AppState>>,
    Query(q): Query<BuildsQuery>,
    headers: HeaderMap,
) -> Response {
    let who = match viewer(&state, &headers) {
        Ok(v) => v.who,
        Err(refused) => return *refused,
    };
    let visible = access::readable(&state, &who);
    let repo = q.repo.as_deref().filter(|r| !r.is_empty());
    let branch = q.branch.as_deref().filter(|b| !b.is_empty());
    match state.db(|s| s.branch_page(repo, branch, None, usize::MAX, visible.as_deref())) {
        Ok(rows) => {
            Json(serde_json::Value::Array(rows.iter().map(api_row).collect())).into_response()
        }
        Err(e) => e.answer(),
    }
}

/// `GET /api/builds/N`: one build with its jobs as JSON.
pub(super) async fn api_build(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
    headers: HeaderMap,
) -> Response {
    let who = match viewer(&state, &headers) {
        Ok(v) => v.who,
        Err(refused) => return *refused,
    };
    let row = match find_or_404(&state, n, &q, &who) {
        Ok(row) => row,
        Err(not_found) => return *not_found,
    };
    let (jobs, attempts) = match jobs_with_workers(&state, row.id, false).await {
        Ok(read) => read,
        Err(e) => return e.answer(),
    };
    let mut v = api_row(&row);
    v["reason"] = serde_json::json!(row.reason);
    v["mail"] = serde_json::json!(row.mail);
    v["previous_state"] = serde_json::json!(row.previous_state);
    v["pull_request"] = serde_json::json!(row.pull_request);
    v["statuses"] = serde_json::json!(state.db(|s| s.statuses_of(row.id)).unwrap_or_default());
    v["attempts"] = serde_json::json!(state.db(|s| s.attempts(row.id)).unwrap_or_default());
    v["audit"] = access::audit_json(
        &state
            .db(|s| s.audit_trail(Some(row.id), None, AUDIT_SHOWN))
            .unwrap_or_default(),
    );
    v["jobs"] = jobs
        .iter()
        .map(|j| serde_json::json!({"number": j.number, "name": j.name, "env": j.env, "result": j.result, "reason": j.reason, "duration_ms": j.duration_ms, "stage": j.stage, "deploys": j.deploys, "worker": j.worker, "workers": j.workers}))
        .collect();
    // A running build has recorded no job yet: the jobs that have started, live
    // ("running" until each ends).
    if jobs.is_empty()
        && let Some(live) = state.live.get(row.id)
    {
        v["jobs"] = live
            .job_states()
            .into_iter()
            .map(|(number, result)| {
                serde_json::json!({
                    "worker": attempts.get(&number).and_then(|ws| ws.last()),
                    "number": number,
                    "result": result.map_or("running", |r| r.as_str()),
                })
            })
            .collect();
    }
    Json(v).into_response()
}

/// `?job=2` (or `?job=1.2`): one job's log instead of all of them.
#[derive(Deserialize, Default)]
pub(super) struct LogQuery {
    repo: Option<String>,
    job: Option<String>,
    /// An earlier attempt of the job (`job` too).
    attempt: Option<u32>,
    /// Any value: sent as a file to save (`Content-Disposition: attachment`).
    download: Option<String>,
}

/// A finished job's stored log as plain text (fold markers kept, secrets masked).
pub(super) async fn api_log(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    let who = match viewer(&state, &headers) {
        Ok(v) => v.who,
        Err(refused) => return *refused,
    };
    let row = match find_or_404(&state, n, &RepoQuery { repo: q.repo }, &who) {
        Ok(row) => row,
        Err(not_found) => return *not_found,
    };
    if let (Some(job), Some(attempt)) = (q.job.as_deref(), q.attempt) {
        let number = if job.contains('.') {
            job.to_string()
        } else {
            format!("{n}.{job}")
        };
        return match state.db(|s| s.attempt_log(row.id, &number, attempt)) {
            Ok(Some(log)) => (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; charset=utf-8",
                )],
                log,
            )
                .into_response(),
            Ok(None) => answer(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": format!("job {number} of build #{n} has no attempt {attempt}")}),
            ),
            Err(e) => e.answer(),
        };
    }
    let jobs = match jobs_with_logs(&state, row.id).await {
        Ok(jobs) => jobs,
        Err(e) => return e.answer(),
    };
    let wanted: Vec<_> = jobs
        .iter()
        .filter(|j| q.job.as_deref().is_none_or(|w| j.is(n, w)))
        .collect();
    if wanted.is_empty() && q.job.is_some() {
        return answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("build #{n} has no job {}", q.job.unwrap_or_default())}),
        );
    }
    let file = format!(
        "{}-build-{n}{}.log",
        row.repo.replace('/', "-"),
        q.job
            .as_deref()
            .map(|j| format!("-job-{j}"))
            .unwrap_or_default()
    )
    .chars()
    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    .collect::<String>();
    let text: Vec<u8> = match q.job {
        Some(_) => wanted.iter().flat_map(|j| j.log.iter().copied()).collect(),
        None => state
            .db(|s| Ok(s.build_log(row.id, &jobs)))
            .unwrap_or_default(),
    };
    let mut r = (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response();
    if q.download.is_some()
        && let Ok(v) =
            axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
    {
        r.headers_mut()
            .insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `POST /api/builds/N/cancel`: a queued build is canceled, a running one has its
/// jobs' process groups killed.
pub(super) async fn api_cancel(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (row, who) = match authorized_build(&state, n, &q, &headers, &body) {
        Ok(found) => found,
        Err(refused) => return *refused,
    };
    if row.state.is_active() {
        access::record(&state, &who, Action::Cancel, &row.repo, Some(row.id), "");
    }
    match row.state {
        Status::Queued | Status::Awaiting => {
            let _ =
                state.db(|s| s.set_state(row.id, Status::Canceled, Some("canceled while queued")));
            state
                .said_queued
                .lock()
                .expect("said_queued")
                .remove(&row.id);
            state.changed(row.id);
            answer(
                StatusCode::OK,
                serde_json::json!({"canceled": true, "number": n}),
            )
        }
        Status::Running => {
            match state.cancels.lock().expect("cancels").get(&row.id) {
                Some(c) => {
                    c.cancel();
                }
                // Another node follows it: told through the database.
                None => {
                    let _ = state.db(|s| s.announce_cancel(row.id));
                }
            }
            answer(
                StatusCode::ACCEPTED,
                serde_json::json!({"canceled": true, "number": n, "message": "the running jobs are being killed"}),
            )
        }
        other => answer(
            StatusCode::CONFLICT,
            serde_json::json!({"error": format!("build #{n} already {other}")}),
        ),
    }
}

/// The build a request that changes something names, with who asks, once they may
/// (the API token without `[auth]`, [`authorized`]; with it, the write role on its
/// repository); else the refusal (401, 403) or 404.
fn authorized_build(
    state: &AppState,
    n: u64,
    q: &RepoQuery,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(BuildRow, Who), Box<Response>> {
    if state.cfg.auth.is_none() {
        authorized(state, headers)?;
        return Ok((find_or_404(state, n, q, &Who::ApiToken)?, Who::ApiToken));
    }
    let missing = format!("there is no build #{n}");
    let row = match find(state, n, q, &Who::ApiToken) {
        Ok(Some(row)) => row,
        Ok(None) => {
            return Err(Box::new(answer(
                StatusCode::NOT_FOUND,
                serde_json::json!({ "error": missing }),
            )));
        }
        Err(e) => return Err(Box::new(e.answer())),
    };
    let who = access::require_with(state, headers, body, &row.repo, Role::Write, &missing)?;
    Ok((row, who))
}

/// Whether a request that changes something brings the API token: 403 when the server
/// has none configured, 401 when the request's is missing or wrong (compared in
/// constant time).
pub(super) fn authorized(state: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let refuse = |code, why: &str| Err(Box::new(answer(code, serde_json::json!({"error": why}))));
    let Some(token) = state.cfg.api_token() else {
        return refuse(
            StatusCode::FORBIDDEN,
            "this needs the API token, and the server has none: set api_token_env in runway.toml (and that variable), then send Authorization: Bearer <token>",
        );
    };
    match hooks::bearer(headers).as_deref() {
        None => refuse(StatusCode::UNAUTHORIZED, "no Authorization: Bearer token"),
        Some(t) if hooks::same(t.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => refuse(
            StatusCode::UNAUTHORIZED,
            "the token does not match api_token_env",
        ),
    }
}

/// A place for one more live stream from the request's client ([`super::streams`]), or
/// the 503 that says to come back later (and closes the connection).
fn stream_permit(
    state: &Arc<AppState>,
    peer: Option<axum::Extension<super::streams::Peer>>,
) -> Result<super::streams::Permit, Box<Response>> {
    let ip = peer
        .map(|axum::Extension(p)| p.0)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    state.streams.admit(ip).map_err(|full| {
        tracing::info!(client = %ip, "a live stream was refused: {full}");
        let mut r = answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": format!("{full}: try again later")}),
        );
        let h = r.headers_mut();
        h.insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        );
        h.insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        Box::new(r)
    })
}

/// `GET /api/repos/OWNER/REPO/audit`: who did what to the repository's builds and
/// tokens, oldest first (the newest 200), for whoever may read it.
pub(super) async fn api_audit(
    State(state): State<Arc<AppState>>,
    UrlPath((owner, name)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let repo = format!("{owner}/{name}");
    let who = match viewer(&state, &headers) {
        Ok(v) => v.who,
        Err(refused) => return *refused,
    };
    if !access::may_read(&state, &repo, &who) {
        return answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("there is no repository {repo}")}),
        );
    }
    match state.db(|s| s.audit_trail(None, Some(&repo), AUDIT_SHOWN)) {
        Ok(all) => answer(
            StatusCode::OK,
            serde_json::json!({"repo": repo, "audit": access::audit_json(&all)}),
        ),
        Err(e) => e.answer(),
    }
}
