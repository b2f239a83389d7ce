//! `runway serve`: webhooks in, a durable queue in the build store, workers, and web
//! pages with live logs.
//!
//! - `config`: `runway.toml`;
//! - `hooks`: checking and reading webhook deliveries (pure);
//! - `live`: live logs of running builds, for server-sent events;
//! - `mirror`: local mirrors of remote (https, git://) repositories;
//! - `pages`: the HTML pages;
//! - `recover`: what a start does about a crash (errored builds, orphaned jobs, mails).
//!
//! [`run`] takes a bound listener and a shutdown future (mini-redis style), so tests
//! start it on port 0 and stop it with any signal. Builds are queued in SQLite before a
//! delivery is answered, claimed by one statement, and on start any build a crash left
//! "running" is marked errored with the reason (never run twice); `runway restart N`
//! queues it again.

pub mod config;
pub mod hooks;
pub mod live;
pub mod mirror;
pub mod pages;
pub mod recover;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::cmd::RefArgs;
use crate::cmd::run::{self, RunArgs};
use crate::event::EventType;
use crate::job::JobResult;
use crate::store::{self, BuildRow, NewBuild, Store};
use config::ServerConfig;
use hooks::{Delivery, Refusal, Source};
use live::{Chunk, Cursor, JobText, LiveLog, LiveLogs, LiveWriter};

pub use recover::Interrupted;

/// Everything the handlers and workers share.
pub struct AppState {
    /// The configuration.
    pub cfg: ServerConfig,
    store: Mutex<Store>,
    state_dir: PathBuf,
    live: LiveLogs,
    cancels: Mutex<HashMap<i64, Arc<AtomicBool>>>,
    wake: Notify,
    running: AtomicUsize,
    stopping: AtomicBool,
    slots: Arc<crate::build::JobSlots>,
}

impl AppState {
    /// State over the build store in `state_dir`; builds a crash left running are
    /// marked errored, their jobs' process groups killed and their mails queued
    /// ([`recover::recover`]; returned for the log).
    pub fn new(
        cfg: ServerConfig,
        state_dir: PathBuf,
    ) -> Result<(Arc<AppState>, Interrupted), String> {
        let mut st = Store::open(&state_dir).map_err(|e| e.to_string())?;
        let interrupted = recover::recover(&cfg, &state_dir, &mut st).map_err(|e| e.to_string())?;
        let slots = crate::build::JobSlots::new(cfg.concurrency);
        Ok((
            Arc::new(AppState {
                cfg,
                store: Mutex::new(st),
                state_dir,
                live: LiveLogs::default(),
                cancels: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                running: AtomicUsize::new(0),
                stopping: AtomicBool::new(false),
                slots,
            }),
            interrupted,
        ))
    }

    /// Runs `f` on the build store (one connection, behind a lock).
    fn db<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, store::StoreError>,
    ) -> Result<T, String> {
        let mut st = self.store.lock().expect("store");
        f(&mut st).map_err(|e| e.to_string())
    }
}

/// Serves on `listener` until `shutdown` resolves; then stops taking builds, gives
/// running builds the grace period, cancels what is left, and returns. The queue stays.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(state.clone());
    let workers = tokio::spawn(work(state.clone()));
    let st = state.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        st.stopping.store(true, Ordering::SeqCst);
        st.wake.notify_waiters();
    });
    let _ = server.await;
    state.stopping.store(true, Ordering::SeqCst);
    state.wake.notify_waiters();
    let grace = Duration::from_secs(state.cfg.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    while state.running.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in state.cancels.lock().expect("cancels").values() {
        c.store(true, Ordering::SeqCst);
    }
    while state.running.load(Ordering::SeqCst) > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.abort();
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(pages_index))
        .route("/builds/{n}", get(page_build))
        .route("/builds/{n}/events", get(build_events))
        .route("/api/builds", get(api_builds))
        .route("/api/builds/{n}", get(api_build))
        .route("/api/builds/{n}/cancel", post(api_cancel))
        .route("/api/builds/{n}/log", get(api_log))
        .route("/hooks/github", post(|s, r| intake(s, r, Source::GitHub)))
        .route("/hooks/gitea", post(|s, r| intake(s, r, Source::Gitea)))
        .route("/hooks/gitlab", post(|s, r| intake(s, r, Source::GitLab)))
        .route("/hooks/generic", post(|s, r| intake(s, r, Source::Generic)))
        .with_state(state)
}

fn answer(code: StatusCode, body: serde_json::Value) -> Response {
    (code, Json(body)).into_response()
}

async fn intake(State(state): State<Arc<AppState>>, req: Request, source: Source) -> Response {
    let headers: HeaderMap = req.headers().clone();
    let limit = state.cfg.max_body_bytes;
    let body = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(b) => b,
        Err(_) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"error": format!("the delivery is larger than {limit} bytes (max_body_bytes)")}),
            );
        }
    };
    let delivery = match hooks::read(source, &headers, &body, &state.cfg) {
        Ok(d) => d,
        Err(r) => {
            let code = match r {
                Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
                Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
                Refusal::UnknownRepo(_) => StatusCode::NOT_FOUND,
                Refusal::Nothing(_) => StatusCode::OK,
            };
            let key = if code == StatusCode::OK {
                "message"
            } else {
                "error"
            };
            return answer(
                code,
                serde_json::json!({ key: r.to_string(), "queued": false }),
            );
        }
    };
    let st = state.clone();
    match tokio::task::spawn_blocking(move || queue(&st, &delivery)).await {
        Ok(Ok(Queued::Build(row, canceled))) => {
            state.wake.notify_one();
            let url = state
                .cfg
                .public_url
                .as_ref()
                .map(|u| format!("{}/builds/{}", u.trim_end_matches('/'), row.number));
            answer(
                StatusCode::ACCEPTED,
                serde_json::json!({"queued": true, "number": row.number, "repo": row.repo, "url": url, "canceled": canceled}),
            )
        }
        Ok(Ok(Queued::NotBuilt(reason))) => answer(
            StatusCode::OK,
            serde_json::json!({"queued": false, "message": reason}),
        ),
        Ok(Err(e)) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": e}),
        ),
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({"error": e.to_string()}),
        ),
    }
}

enum Queued {
    Build(Box<BuildRow>, Vec<u64>),
    NotBuilt(String),
}

/// Decides whether the push builds (its `.travis.yml` at the commit, when the
/// repository is local) and queues it durably.
fn queue(state: &AppState, d: &Delivery) -> Result<Queued, String> {
    let repo_cfg = state.cfg.repo(&d.repo).ok_or("unknown repository")?;
    let mut message = d.message.clone();
    // A remote repository is fetched now, as Travis read .travis.yml at the pushed
    // commit before queuing. When that fails, or takes longer than intake_fetch_secs
    // (the fetch goes on; the build waits for it), the build is queued and decides.
    let source = repo_cfg.local_path().or_else(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let (dir, repo, after) = (state.state_dir.clone(), repo_cfg.clone(), d.after.clone());
        std::thread::spawn(move || {
            let _ = tx.send(mirror::sync(&dir, &repo, Some(&after), None));
        });
        rx.recv_timeout(Duration::from_secs(state.cfg.intake_fetch_secs))
            .ok()?
            .ok()
    });
    if let Some(path) = source
        && let Some(repo) = crate::source::Repo::open(&path)
        && let Ok(text) = repo.read_file(&d.after, ".travis.yml")
    {
        if message.is_empty() {
            message = repo.commit(&d.after).map(|c| c.message).unwrap_or_default();
        }
        let loaded = crate::config::load(&text);
        let event = crate::event::BuildEvent {
            repo: d.repo.clone(),
            branch: d.branch.clone(),
            tag: d.tag.clone(),
            event: EventType::Push,
            commit: d.after.clone(),
            commit_message: message.clone(),
            ..Default::default()
        };
        let plan = crate::plan::plan(&loaded.config, &event, &crate::plan::Settings::default());
        // A config that cannot be built is queued, so its build shows the error.
        if !plan.build.runs && plan.error.is_none() {
            return Ok(Queued::NotBuilt(format!(
                "not built: {}",
                plan.build.reason
            )));
        }
    }
    let range = if d.before.is_empty() || d.before.chars().all(|c| c == '0') {
        String::new()
    } else {
        format!("{}...{}", d.before, d.after)
    };
    state.db(|s| {
        let row = s.enqueue(&NewBuild {
            repo: d.repo.clone(),
            branch: d.branch.clone(),
            tag: d.tag.clone(),
            commit: d.after.clone(),
            event: "push".into(),
            message,
            commit_range: range,
        })?;
        let canceled = if state.cfg.auto_cancel && row.branch.is_some() {
            s.cancel_superseded(&row)?
        } else {
            Vec::new()
        };
        Ok(Queued::Build(Box::new(row), canceled))
    })
}

/// The workers: claim queued builds, up to `concurrency` at once, until stopping.
/// Jobs are what `concurrency` limits: every build runs its stages' jobs up to
/// `concurrency` at once, and every job holds one of the server's `concurrency` slots.
async fn work(state: Arc<AppState>) {
    loop {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        while state.running.load(Ordering::SeqCst) < state.cfg.concurrency.max(1) {
            let claimed = state.db(|s| s.claim());
            let Ok(Some(row)) = claimed else { break };
            let file = state.db(|s| s.create_partial_log(row.id)).ok();
            state.live.start(row.id, file);
            state.running.fetch_add(1, Ordering::SeqCst);
            let st = state.clone();
            tokio::task::spawn_blocking(move || {
                build(&st, row);
                st.running.fetch_sub(1, Ordering::SeqCst);
                st.wake.notify_one();
            });
        }
        let st = state.clone();
        let _ = tokio::task::spawn_blocking(move || retry_mails(&st)).await;
        tokio::select! {
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Mails that could not be sent when their build ended are tried again, with a
/// doubling delay, up to 10 tries.
fn retry_mails(state: &AppState) {
    let due = state
        .db(|s| s.due_mails(crate::notify::now_ms()))
        .unwrap_or_default();
    for m in due {
        let repo = state.db(|s| s.by_id(m.build_id)).ok().flatten();
        let Some(smtp) = repo.and_then(|b| state.cfg.smtp_for(&b.repo)) else {
            continue;
        };
        let result = crate::notify::send_raw(&smtp, &m.sender, &m.recipients, &m.message);
        let err = result.as_ref().err().map(ToString::to_string);
        let _ = state.db(|s| {
            s.mail_tried(
                m.id,
                err.as_deref().map_or(Ok(()), Err),
                crate::notify::retry_at(m.attempts + 1),
                10,
            )
        });
    }
}

/// Runs one claimed build with its live log.
fn build(state: &AppState, row: BuildRow) {
    let Some(repo) = state.cfg.repo(&row.repo).cloned() else {
        let _ = state.db(|s| {
            s.set_state(
                row.id,
                "errored",
                Some("the repository is no longer in runway.toml"),
            )
        });
        return;
    };
    let cancel = Arc::new(AtomicBool::new(false));
    state
        .cancels
        .lock()
        .expect("cancels")
        .insert(row.id, cancel.clone());
    let live = state
        .live
        .get(row.id)
        .unwrap_or_else(|| state.live.start(row.id, None));
    let out: crate::build::SharedOut = Arc::new(Mutex::new(Box::new(LiveWriter(live.clone()))));
    let mut err = LiveWriter(live.clone());
    let source = match repo.local_path() {
        Some(path) => Ok(path),
        None => mirror::sync(&state.state_dir, &repo, Some(&row.commit), Some(&cancel))
            .map_err(|e| e.to_string()),
    };
    let result = source.and_then(|path| {
        let args = RunArgs {
            path,
            refs: RefArgs {
                branch: row.branch.clone(),
                tag: row.tag.clone(),
                event: EventType::Push,
                commit_message: None,
                commit: Some(row.commit.clone()),
                commit_range: Some(row.commit_range.clone()),
                repo_slug: Some(row.repo.clone()),
                default_branch: repo.default_branch.clone(),
            },
            parallel: state.cfg.concurrency,
            slots: Some(state.slots.clone()),
            env: repo.settings(),
            public_settings: repo.public.clone(),
            timeout: Duration::from_secs(50 * 60),
            no_output_timeout: Duration::from_secs(600),
            deploy: true,
            notify: true,
            smtp: state.cfg.smtp_for(&row.repo),
            public_url: state.cfg.public_url.clone(),
            recorded: Some(row.clone()),
            cancel: Some(cancel),
            out: Some(out),
            tap: Some(live.clone()),
            state_dir: Some(state.state_dir.clone()),
            ..RunArgs::default()
        };
        run::run(&args, &mut err).map_err(|e| e.to_string())
    });
    if let Err(e) = &result {
        let _ = std::io::Write::write_all(&mut err, format!("runway: {e}\n").as_bytes());
    }
    // A build that ended without recording its end (an early error) is errored.
    if let Ok(Some(now)) = state.db(|s| s.by_id(row.id))
        && now.state == "running"
    {
        let why = result
            .err()
            .unwrap_or_else(|| "the build ended early".into());
        let _ = state.db(|s| s.set_state(row.id, "errored", Some(&why)));
    }
    live.finish();
    state.live.remove(row.id);
    // The jobs' logs are in the store now; a build that ran no job keeps its log file.
    let _ = state.db(|s| {
        if !s.jobs(row.id)?.is_empty() {
            s.remove_partial_log(row.id);
        }
        Ok(())
    });
    state.cancels.lock().expect("cancels").remove(&row.id);
}

/// `?repo=owner/app`, when several repositories have the build number.
#[derive(Deserialize, Default)]
struct RepoQuery {
    repo: Option<String>,
}

fn find(state: &AppState, n: u64, q: &RepoQuery) -> Option<BuildRow> {
    state.db(|s| s.build(q.repo.as_deref(), n)).ok().flatten()
}

/// [`find`], or the API's 404 answer.
fn find_or_404(state: &AppState, n: u64, q: &RepoQuery) -> Result<BuildRow, Box<Response>> {
    find(state, n, q).ok_or_else(|| {
        Box::new(answer(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("there is no build #{n}")}),
        ))
    })
}

async fn pages_index(State(state): State<Arc<AppState>>) -> Html<String> {
    let rows = state.db(|s| s.builds(None, None)).unwrap_or_default();
    Html(pages::index(&rows))
}

async fn page_build(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
) -> Response {
    let Some(row) = find(&state, n, &q) else {
        return (StatusCode::NOT_FOUND, Html(pages::not_found(n))).into_response();
    };
    let jobs = state.db(|s| s.jobs(row.id)).unwrap_or_default();
    let live =
        state.live.get(row.id).is_some() || matches!(row.state.as_str(), "queued" | "running");
    let log = if live {
        Vec::new()
    } else {
        state
            .db(|s| Ok(s.build_log(row.id, &jobs)))
            .unwrap_or_default()
    };
    Html(pages::build(&row, &jobs, &log, live)).into_response()
}

async fn build_events(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
) -> Response {
    let Some(row) = find(&state, n, &q) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Wait for a queued build to start, briefly, so the page can follow it.
    let mut live = state.live.get(row.id);
    for _ in 0..100 {
        let started = state.live.started.notified();
        if live.is_some() {
            break;
        }
        // Between being claimed and starting its live log a build is "running" with
        // no log yet: keep waiting until it has one or has ended.
        let now = find(&state, n, &q);
        let ended = now
            .as_ref()
            .is_some_and(|r| !matches!(r.state.as_str(), "queued" | "running"));
        if ended && state.live.get(row.id).is_none() {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), started).await;
        live = state.live.get(row.id);
    }
    let live = match live {
        Some(l) => l,
        None => {
            let (text, jobs) = state
                .db(|s| {
                    let jobs = s.jobs(row.id)?;
                    Ok((s.build_log(row.id, &jobs), jobs))
                })
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
        (live, Cursor::default(), rx, VecDeque::new()),
        |(live, mut cursor, mut rx, mut pending)| async move {
            loop {
                if let Some(chunk) = pending.pop_front() {
                    let ev = Ok::<_, std::convert::Infallible>(event_of(&chunk));
                    return Some((ev, (live, cursor, rx, pending)));
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
        "number": r.number, "repo": r.repo, "branch": r.branch, "tag": r.tag,
        "commit": r.commit, "state": r.state,
    })
}

async fn api_builds(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let rows = state.db(|s| s.builds(None, None)).unwrap_or_default();
    Json(serde_json::Value::Array(rows.iter().map(api_row).collect()))
}

async fn api_build(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
) -> Response {
    let row = match find_or_404(&state, n, &q) {
        Ok(row) => row,
        Err(not_found) => return *not_found,
    };
    let jobs = state.db(|s| s.jobs(row.id)).unwrap_or_default();
    let mut v = api_row(&row);
    v["reason"] = serde_json::json!(row.reason);
    v["previous_state"] = serde_json::json!(row.previous_state);
    v["jobs"] = jobs
        .iter()
        .map(|j| serde_json::json!({"number": j.number, "name": j.name, "env": j.env, "result": j.result, "duration_ms": j.duration_ms}))
        .collect();
    Json(v).into_response()
}

/// `?job=2` (or `?job=1.2`): one job's log instead of all of them.
#[derive(Deserialize, Default)]
struct LogQuery {
    repo: Option<String>,
    job: Option<String>,
}

/// A finished job's stored log as plain text (fold markers kept, secrets masked).
async fn api_log(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<LogQuery>,
) -> Response {
    let row = match find_or_404(&state, n, &RepoQuery { repo: q.repo }) {
        Ok(row) => row,
        Err(not_found) => return *not_found,
    };
    let jobs = state.db(|s| s.jobs(row.id)).unwrap_or_default();
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
    let text: Vec<u8> = match q.job {
        Some(_) => wanted.iter().flat_map(|j| j.log.iter().copied()).collect(),
        None => state
            .db(|s| Ok(s.build_log(row.id, &jobs)))
            .unwrap_or_default(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn api_cancel(
    State(state): State<Arc<AppState>>,
    UrlPath(n): UrlPath<u64>,
    Query(q): Query<RepoQuery>,
) -> Response {
    let row = match find_or_404(&state, n, &q) {
        Ok(row) => row,
        Err(not_found) => return *not_found,
    };
    match row.state.as_str() {
        "queued" => {
            let _ = state.db(|s| s.set_state(row.id, "canceled", Some("canceled while queued")));
            answer(
                StatusCode::OK,
                serde_json::json!({"canceled": true, "number": n}),
            )
        }
        "running" => {
            if let Some(c) = state.cancels.lock().expect("cancels").get(&row.id) {
                c.store(true, Ordering::SeqCst);
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
