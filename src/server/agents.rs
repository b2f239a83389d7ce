//! The workers' side of the HTTP API ([`crate::protocol`] says what each call
//! carries): claims held open until a job a worker's labels can take is queued (no
//! polling interval between a push and its first command), the commit as a git pack,
//! log chunks, heartbeats and results. Every call brings the worker token; a wrong one
//! is refused and logged.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;

use super::dispatch::News;
use super::{AppState, DbError, answer, hooks};
use crate::auth::digest;
use crate::protocol::{Assignment, BeatAnswer, CacheAsk, CacheUrl, Claim, End, Ended, Held};
use crate::store::Status;
use crate::store::tasks::{self, TaskRow, WorkerRow};

/// The longest a claim is held open.
const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// Whether the request brings a worker token, and may act as worker `who`: 403 when
/// the server takes no workers, 401 (logged) when the token is missing or wrong, 403
/// (logged with both names) when it is another worker's own token (`[[worker]]`), or
/// the shared token for a name that has one of its own; 403 when `who` was revoked.
fn worker_allowed(state: &AppState, headers: &HeaderMap, who: &str) -> Result<(), Box<Response>> {
    token_ok(state, headers, who)?;
    match state.db(|s| s.is_revoked(who)) {
        Ok(true) => Err(revoked(who)),
        Ok(false) => Ok(()),
        Err(e) => Err(Box::new(unavailable(e))),
    }
}

/// The token part of [`worker_allowed`], with no store read.
fn token_ok(state: &AppState, headers: &HeaderMap, who: &str) -> Result<(), Box<Response>> {
    let spoken = headers
        .get(crate::protocol::PROTOCOL)
        .and_then(|v| v.to_str().ok());
    if let Some(why) = crate::protocol::mismatch(spoken) {
        tracing::warn!(worker = who, "refused: {why}");
        return Err(Box::new(answer(
            StatusCode::UPGRADE_REQUIRED,
            serde_json::json!({ "error": why }),
        )));
    }
    if !state.cfg.uses_workers() {
        return Err(Box::new(answer(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": "this server takes no workers: set worker_token_env (or [[worker]] tables) in runway.toml"}),
        )));
    }
    let given = hooks::bearer(headers);
    check_token(state, given.as_deref(), who)
}

/// The answer to a revoked worker (logged).
fn revoked(who: &str) -> Box<Response> {
    tracing::warn!(worker = who, "a revoked worker was refused");
    Box::new(answer(
        StatusCode::FORBIDDEN,
        serde_json::json!({"error": format!(
            "worker {who} was revoked (runway workers revoke): it may not take or report jobs"
        )}),
    ))
}

/// The token part of [`worker_allowed`].
fn check_token(state: &AppState, given: Option<&str>, who: &str) -> Result<(), Box<Response>> {
    let refuse = |code, why: &str| answer(code, serde_json::json!({"error": why}));
    match given.map(|t| state.cfg.worker_identity(t)) {
        Some(Some(Some(name))) if name == who => Ok(()),
        Some(Some(Some(name))) => {
            tracing::warn!(worker = %name, claimed = who, "a worker acted as another and was refused");
            Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                &format!("this token is worker {name}'s: it may act only as {name}"),
            )))
        }
        Some(Some(None)) if state.cfg.registered_worker(who) => {
            tracing::warn!(
                claimed = who,
                "the shared token acted as a registered worker and was refused"
            );
            Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                &format!(
                    "worker {who} has a token of its own ([[worker]]): the shared token may not act as it"
                ),
            )))
        }
        Some(Some(None)) => Ok(()),
        _ => {
            tracing::warn!(
                worker = who,
                token = if given.is_some() { "wrong" } else { "missing" },
                "a worker was refused"
            );
            Err(Box::new(refuse(
                StatusCode::UNAUTHORIZED,
                "the worker token (RUNWAY_WORKER_TOKEN) does not match worker_token_env or a [[worker]]'s token_env",
            )))
        }
    }
}

/// A claim's secret: 32 random bytes, from the system's generator.
fn new_secret() -> String {
    crate::auth::random(32)
}

/// A call from worker `who` about attempt `attempt` of task `id`: the token, the
/// revocation and the task's secret checked, with one store read. The task when `who`
/// holds that attempt; `None` when it does not (the handler answers 409: stop the job,
/// whatever the call brings: the secret guards the holder's calls). A call about a
/// held task without its claim's secret is 403, logged with the caller's name; a task
/// handed out before secrets existed has none to check.
fn task_call(
    state: &AppState,
    headers: &HeaderMap,
    id: i64,
    who: &str,
    attempt: i64,
) -> Result<Option<TaskRow>, Box<Response>> {
    Ok(task_turn(state, headers, id, who, attempt, |_, _| Ok(()))?.map(|(t, ())| t))
}

/// [`task_call`], and `then` run with the task when `who` holds it, in the same turn
/// at the store as the read that checks the hold (one store call per worker call).
fn task_turn<T>(
    state: &AppState,
    headers: &HeaderMap,
    id: i64,
    who: &str,
    attempt: i64,
    then: impl FnOnce(&crate::store::Store, &TaskRow) -> Result<T, crate::store::StoreError>,
) -> Result<Option<(TaskRow, T)>, Box<Response>> {
    token_ok(state, headers, who)?;
    let given = headers
        .get(crate::protocol::TASK_SECRET)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let turn = state
        .db(|s| {
            let (task, is_revoked) = s.task_call(id, who)?;
            let hold = hold_of(task, is_revoked, who, attempt, given);
            Ok(match hold {
                Hold::Held(t) => {
                    let done = then(s, &t)?;
                    Ok(Some((t, done)))
                }
                Hold::NotHeld => Ok(None),
                Hold::Refused(why) => Err(why),
            })
        })
        .map_err(|e| Box::new(e.answer()))?;
    match turn {
        Ok(held) => Ok(held),
        Err(Refusal::Revoked) => Err(revoked(who)),
        Err(Refusal::NoSecret) => {
            tracing::warn!(
                worker = who,
                task = id,
                "a call about a task without its secret was refused"
            );
            Err(Box::new(answer(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "this task's secret is missing or wrong: only the worker that claimed it may act on it"}),
            )))
        }
    }
}

/// Whether a worker's call holds the task it is about.
#[derive(Debug)]
enum Hold {
    Held(TaskRow),
    /// Not (or no longer) that worker's attempt: 409.
    NotHeld,
    Refused(Refusal),
}

/// Why a worker's call about a task is refused outright.
#[derive(Debug, PartialEq)]
enum Refusal {
    Revoked,
    /// The task is the caller's, but the call lacks its claim's secret.
    NoSecret,
}

/// What `task` (as read, with whether `who` is revoked) says of a call from `who`
/// about attempt `attempt` bringing the task secret `given`.
fn hold_of(task: Option<TaskRow>, is_revoked: bool, who: &str, attempt: i64, given: &str) -> Hold {
    if is_revoked {
        return Hold::Refused(Refusal::Revoked);
    }
    let Some(t) = task.filter(|t| {
        t.state == Status::Running && t.attempt == attempt && t.worker.as_deref() == Some(who)
    }) else {
        return Hold::NotHeld;
    };
    match &t.secret {
        Some(stored) if !hooks::same(digest(given).as_bytes(), stored.as_bytes()) => {
            Hold::Refused(Refusal::NoSecret)
        }
        _ => Hold::Held(t),
    }
}

/// The store (or the cache bucket) failed: try again (another node may answer), after
/// a pause.
fn unavailable(error: impl std::fmt::Display) -> Response {
    let mut r = answer(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({ "error": error.to_string() }),
    );
    r.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(super::RETRY_AFTER_SECS),
    );
    r
}

fn conflict() -> Response {
    answer(
        StatusCode::CONFLICT,
        serde_json::json!({"error": "this job is no longer yours (its lease ran out or it was restarted): stop it"}),
    )
}

/// `POST /api/worker/claim`: a job for this worker, or `204` after the wait.
pub(super) async fn claim(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(c): Json<Claim>,
) -> Response {
    if let Err(refused) = worker_allowed(&state, &headers, &c.name) {
        return *refused;
    }
    if let Some(why) = crate::protocol::name_problem(&c.name) {
        return answer(StatusCode::BAD_REQUEST, serde_json::json!({ "error": why }));
    }
    match claim_waiting(&state, &c, &offer(&state, &c), "claim", || {}, None).await {
        Ok(Some(a)) => Json(a).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => unavailable(e),
    }
}

/// A job for the worker that sent `c` (its token and name checked by the caller), the
/// claim waiting for one to be queued at most `c.wait_ms` (`LONGEST_WAIT`): `None`
/// when none came, or this node stops. `then` runs once: before the first wait, or on
/// the way out when there was none. `first` is a try made already (in a report's turn
/// at the store, [`Tried`]), whose place among the waiting was taken before it. Each
/// try offers `offer` ([`offer`] of `c`).
async fn claim_waiting<'a>(
    state: &'a AppState,
    c: &Claim,
    offer: &Offer,
    how: &str,
    then: impl FnOnce(),
    mut first: Option<Tried<'a>>,
) -> Result<Option<Assignment>, DbError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(c.wait_ms).min(LONGEST_WAIT);
    let mut then = Some(then);
    // The place the last wake came to, used once the claim after it is tried.
    let mut woken: Option<super::waiting::Ticket<'_>> = None;
    let got = loop {
        let (ticket, got) = match first.take() {
            Some(tried) => (
                tried.ticket,
                claim_once(state, c, offer, how, Some(tried.turn)),
            ),
            None => {
                // Registered before the claim, so a job queued in between wakes this one.
                let ticket = state.waiting.enter(&c.labels);
                if state.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break Ok(None);
                }
                (ticket, claim_once(state, c, offer, how, None))
            }
        };
        if let Some(t) = woken.take() {
            t.tried();
        }
        if !matches!(got, Ok(None)) {
            break got;
        }
        if let Some(f) = then.take() {
            f();
        }
        // Read from the clock, not only from the timer: a claim woken at once each time
        // never lets its thread turn the runtime's timers, and would wait on past its end.
        if tokio::time::Instant::now() >= deadline {
            break Ok(None);
        }
        tokio::select! {
            _ = ticket.woken() => {}
            _ = tokio::time::sleep_until(deadline) => break Ok(None),
            _ = state.closing.notified() => break Ok(None),
        }
        woken = Some(ticket);
    };
    if let Some(f) = then.take() {
        f();
    }
    got
}

/// A claim's first try made in another call's turn at the store (a report's): its
/// place among the waiting, taken before that turn, and what the turn claimed.
struct Tried<'a> {
    ticket: super::waiting::Ticket<'a>,
    turn: Turn,
}

/// One try's turn at the store: the secret the claim was made with, and what it did.
type Turn = (String, Result<Claimed, DbError>);

/// What one claim's turn at the store did ([`claim_turn`]).
struct Claimed {
    /// Tasks handed to this worker's process by a call it got no answer to, queued
    /// again.
    given_back: usize,
    /// The task it claimed (with its compiled job), if any.
    task: Option<(TaskRow, String)>,
}

/// What a claim by the worker that sent `c` offers at the store: the labels some job
/// may need (os, arch, and what repositories ask of the workers they trust), and its
/// lease.
struct Offer {
    labels: tasks::Labels,
    lease: i64,
}

/// The [`Offer`] of the worker that sent `c`.
fn offer(state: &AppState, c: &Claim) -> Offer {
    let asked: Vec<String> = state
        .cfg
        .repos
        .iter()
        .flat_map(|r| {
            r.worker_labels
                .keys()
                .chain(r.fork_worker_labels.keys())
                .cloned()
        })
        .collect();
    Offer {
        labels: tasks::relevant(&c.labels, &asked),
        lease: state.cfg.worker_lease_ms as i64,
    }
}

/// The store's part of one claim: the oldest queued task `offer` meets claimed with
/// `secret` (its hash kept), with its compiled job, and the worker seen now with its
/// task. The caller makes it one commit.
fn claim_turn(
    s: &crate::store::Store,
    c: &Claim,
    offer: &Offer,
    secret: &str,
) -> Result<Claimed, crate::store::StoreError> {
    // What this process was handed by a call it got no answer to is queued again first
    // (and may be what it is handed now).
    let given_back = if c.unanswered {
        s.give_back(&c.name, &c.instance)?
    } else {
        0
    };
    if given_back > 0 {
        tracing::info!(worker = %c.name, "a job handed with an answer the worker never got is handed again");
    }
    let claimed = s.claim_task(
        &c.name,
        &c.instance,
        &offer.labels,
        offer.lease,
        &digest(secret),
    )?;
    s.saw_worker(&WorkerRow {
        name: c.name.clone(),
        labels: c.labels.clone(),
        seen_at: tasks::now_ms(),
        task: claimed.as_ref().map(|(t, _)| t.id),
        draining: false,
    })?;
    Ok(Claimed {
        given_back,
        task: claimed,
    })
}

/// One try, without waiting, at a job for the worker that sent `c` (its token and
/// name checked by the caller): the oldest queued task its labels meet, claimed with
/// a secret of its own; the worker's labels and last request recorded either way.
/// `first` is the try's turn at the store when it was made already. `how` (a claim
/// of its own, or one made with a report) goes into the log line.
fn claim_once(
    state: &AppState,
    c: &Claim,
    offer: &Offer,
    how: &str,
    mut first: Option<Turn>,
) -> Result<Option<Assignment>, DbError> {
    state.waiting.claims(&c.name, &c.labels);
    loop {
        let (secret, claimed) = first.take().unwrap_or_else(|| {
            // A secret for this claim only: every later call about the task must
            // bring it; the store keeps its hash, set with the claim.
            let secret = new_secret();
            // Claimed, with its compiled job, and the worker seen now with its task:
            // one commit.
            let claimed = state.db(|s| s.together(true, |s| claim_turn(s, c, offer, &secret)));
            (secret, claimed)
        });
        // What this worker's turn gave back ([`claim_turn`]) is queued again: a claim
        // waiting here may take it when this one takes another, so the few waiting
        // claims are all woken to look. Only when it gave back something: this claim
        // waits among them, and when each of its turns woke it, a claim after an
        // unanswered call with nothing to give back tried again at once, for as long
        // as it might wait (thousands of turns at the store in 300 ms).
        if matches!(&claimed, Ok(Claimed { given_back, .. }) if *given_back > 0) {
            state.waiting.queued_unknown();
        }
        let handed = match claimed.map(|c| c.task) {
            Ok(Some((t, spec))) => match assignment(state, &t, &spec) {
                Ok(a) => Some((t, a)),
                Err(why) => {
                    let _ =
                        state.db(|s| s.end_task(t.id, t.attempt, &c.name, Status::Errored, &why));
                    state.signals.bump(t.build_id);
                    continue;
                }
            },
            Ok(None) => None,
            Err(e) => return Err(e),
        };
        // Its build's follower is told, not woken: the job's first chunk wakes it.
        return Ok(handed.map(|(t, mut a)| {
            state.signals.note(&t, vec![News::Row(t.clone())]);
            a.secret = secret;
            tracing::info!(worker = %c.name, task = t.id, job = %t.number, with = how, "job handed to a worker");
            a
        }));
    }
}

/// What a worker gets with task `t`, its job compiled as `spec` (which names the
/// build's repository): the build, the job and the settings it may see.
fn assignment(state: &AppState, t: &TaskRow, spec: &str) -> Result<Assignment, String> {
    if spec.is_empty() {
        return Err(format!(
            "job {} was queued by a runway from before compiled jobs: restart its build",
            t.number
        ));
    }
    let job: crate::protocol::job::Job = serde_json::from_str(spec)
        .map_err(|e| format!("the job's compiled form cannot be read: {e}"))?;
    let repo = state
        .cfg
        .repo(&job.event.repo)
        .ok_or("the repository is no longer in runway.toml")?;
    Ok(Assignment {
        task: t.id,
        attempt: t.attempt,
        job,
        settings: repo.settings(),
        lease_ms: state.cfg.worker_lease_ms,
        heartbeat_ms: state.cfg.worker_heartbeat_ms,
        substitutes: state.cfg.substitutes,
        remote_cache: state.cfg.cache_url.is_some(),
        secret: String::new(),
        // A reader on another node of a shared store is not known here.
        watched: state.cfg.shared_store() || state.live.is_read(t.build_id),
    })
}

/// Which worker and attempt a task call is about.
#[derive(Deserialize)]
pub(super) struct Holder {
    worker: String,
    attempt: i64,
    #[serde(default)]
    seq: i64,
    /// For a pack: commits the worker has (comma-separated), left out of it.
    #[serde(default)]
    have: String,
}

/// `GET /api/worker/tasks/ID/pack`: the build's commit with its history, as a git pack.
pub(super) async fn pack(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<i64>,
    Query(h): Query<Holder>,
    headers: HeaderMap,
) -> Response {
    let t = match task_call(&state, &headers, id, &h.worker, h.attempt) {
        Ok(Some(t)) => t,
        Ok(None) => return conflict(),
        Err(refused) => return *refused,
    };
    let st = state.clone();
    let have: Vec<String> = h
        .have
        .split(',')
        .filter(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .take(100)
        .map(str::to_string)
        .collect();
    let made = tokio::task::spawn_blocking(move || commit_pack(&st, t.build_id, &have)).await;
    match made {
        Ok(Ok(bytes)) => bytes.into_response(),
        Ok(Err(e)) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": e }),
        ),
        Err(e) => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": e.to_string() }),
        ),
    }
}

/// `git pack-objects` of build `build_id`'s commit, from the repository (or its mirror),
/// without what the worker's commits in `have` (those this repository knows) bring.
fn commit_pack(state: &AppState, build_id: i64, have: &[String]) -> Result<Vec<u8>, String> {
    let build = state
        .db(|s| s.by_id(build_id))?
        .ok_or("its build is gone")?;
    let repo = state
        .cfg
        .repo(&build.repo)
        .ok_or("the repository is no longer in runway.toml")?;
    let mut build = build;
    let record =
        |r: &crate::store::BuildRow| state.db(|s| s.set_merge(r)).map_err(|e| e.to_string());
    let path = super::sources::of_build(&state.state_dir, repo, &mut build, None, &record)?;
    pack_of(&path, &build.commit, have)
}

/// A pack of `commit` and everything it reaches in the repository at `path`, less what
/// the commits in `have` that this repository knows reach (as `git pack-objects --revs`
/// with `^have`), made in process with libgit2.
fn pack_of(path: &std::path::Path, commit: &str, have: &[String]) -> Result<Vec<u8>, String> {
    let e = |e: git2::Error| format!("{}: {}", path.display(), e.message());
    let repo = git2::Repository::open(path).map_err(e)?;
    let mut walk = repo.revwalk().map_err(e)?;
    walk.push(git2::Oid::from_str(commit).map_err(e)?)
        .map_err(e)?;
    for h in have {
        if let Ok(oid) = git2::Oid::from_str(h)
            && repo.find_commit(oid).is_ok()
        {
            walk.hide(oid).map_err(e)?;
        }
    }
    let mut pack = repo.packbuilder().map_err(e)?;
    pack.insert_walk(&mut walk).map_err(e)?;
    let mut out = git2::Buf::new();
    pack.write_buf(&mut out).map_err(e)?;
    Ok(out.to_vec())
}

/// `POST /api/worker/tasks/ID/log?worker=W&attempt=A&seq=N`: one chunk of the log.
pub(super) async fn chunk(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<i64>,
    Query(h): Query<Holder>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Stored, and what is held without a gap (the worker sends again from there), in
    // the turn at the store that checks the call.
    let turn = task_turn(&state, &headers, id, &h.worker, h.attempt, |s, t| {
        s.add_chunk(t, h.attempt, h.seq, &body)?;
        s.chunks_held(id, h.attempt, h.seq)
    });
    match turn {
        Ok(Some((t, held))) => {
            let chunk = News::Chunk(h.attempt, h.seq, body.to_vec());
            state.signals.tell(&t, vec![News::Row(t.clone()), chunk]);
            Json(crate::protocol::ChunkAck {
                held,
                cancel: t.cancel,
            })
            .into_response()
        }
        Ok(None) => conflict(),
        Err(refused) => *refused,
    }
}

/// `POST /api/worker/tasks/ID/beat`: the lease renewed; whether to stop.
pub(super) async fn beat(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    Json(h): Json<Held>,
) -> Response {
    let lease = state.cfg.worker_lease_ms as i64;
    // Checked and renewed in one turn at the store; 503 only when the store is
    // unreachable (the worker's job then carries on: no lease can lapse meanwhile).
    let renewed = task_turn(&state, &headers, id, &h.worker, h.attempt, |s, _| {
        let beat = s.beat(id, h.attempt, &h.worker, lease)?;
        if matches!(beat, tasks::Beat::Held { .. }) {
            let _ = s.worker_beat(&h.worker, id);
        }
        Ok(beat)
    });
    match renewed {
        Ok(Some((_, tasks::Beat::Held { cancel }))) => Json(BeatAnswer { cancel }).into_response(),
        Ok(Some((_, tasks::Beat::Lost)) | None) => conflict(),
        Err(refused) => *refused,
    }
}

/// `POST /api/worker/tasks/ID/end`: the job's report.
pub(super) async fn end(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    Json(e): Json<End>,
) -> Response {
    // The log's last chunk came with the report: stored first, as a chunk would be,
    // in the report's commit (the JSON of the call was read before its token was
    // checked, and so is this).
    let tail = match &e.tail {
        Some(tail) => {
            use base64::Engine;
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&tail.bytes) else {
                return answer(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "error": "the report's log tail is not base64" }),
                );
            };
            Some((tail.seq, bytes))
        }
        None => None,
    };
    let status = match e.report.result {
        crate::job::JobResult::Passed => Status::Passed,
        crate::job::JobResult::Failed => Status::Failed,
        crate::job::JobResult::Errored => Status::Errored,
        crate::job::JobResult::Canceled => Status::Canceled,
    };
    let report = serde_json::to_string(&e.report).unwrap_or_default();
    // The worker takes another job: claimed in the report's turn at the store (one
    // commit for both), then waited for as a claim of its own would be. Its own name
    // only (the token is checked for it); none while this node stops. Its place among
    // the waiting is taken first, so a job queued meanwhile wakes it.
    let stopping = state.stopping.load(std::sync::atomic::Ordering::SeqCst);
    let asks = e.next.as_ref().filter(|c| c.name == e.worker && !stopping);
    let asking = asks.map(|c| (c, offer(&state, c), new_secret()));
    let ticket = asks.map(|c| state.waiting.enter(&c.labels));
    // Checked, stored and ended in one turn at the store, with the next claim's try. A
    // turn that fails takes neither (the worker sends the report again).
    let ended = task_turn(&state, &headers, id, &e.worker, e.attempt, |s, t| {
        s.together(false, |s| {
            if let Some((seq, bytes)) = &tail
                && !bytes.is_empty()
            {
                s.add_chunk(t, e.attempt, *seq, bytes)?;
            }
            if !s.end_task(id, e.attempt, &e.worker, status, &report)? {
                return Ok(None);
            }
            match &asking {
                Some((c, offer, secret)) => Ok(Some(Some(claim_turn(s, c, offer, secret)?))),
                None => Ok(Some(None)),
            }
        })
    });
    match ended {
        Ok(Some((t, Some(claimed)))) => {
            // How many calls brought the log before the report (its tail's number).
            let chunks = e.tail.as_ref().map(|t| t.seq);
            tracing::info!(worker = %e.worker, task = id, result = status.as_str(), chunks, "job reported");
            // The ended job's build is woken after the claim's try: its end (the
            // build's records, its mail) is not on the way to a job queued already, and
            // is before a wait for the next.
            let wake = || {
                let mut news: Vec<News> = tail
                    .iter()
                    .filter(|(_, bytes)| !bytes.is_empty())
                    .map(|(seq, bytes)| News::Chunk(e.attempt, *seq, bytes.clone()))
                    .collect();
                news.push(News::Row(TaskRow {
                    state: status,
                    outcome: Some(report.clone()),
                    ..t.clone()
                }));
                state.signals.tell(&t, news);
            };
            let next = match (asking, ticket, claimed) {
                (Some((c, offer, secret)), Some(ticket), Some(claimed)) => {
                    let tried = Tried {
                        ticket,
                        turn: (secret, Ok(claimed)),
                    };
                    claim_waiting(&state, c, &offer, "report", wake, Some(tried))
                        .await
                        .ok()
                        .flatten()
                }
                _ => {
                    wake();
                    None
                }
            };
            Json(Ended { next }).into_response()
        }
        Ok(Some((_, None))) => conflict(),
        Ok(None) => {
            tracing::warn!(
                worker = %e.worker,
                task = id,
                attempt = e.attempt,
                "a job's result came after its lease was lost (lapsed, or the job was restarted): refused"
            );
            conflict()
        }
        Err(refused) => *refused,
    }
}

/// `GET /api/workers`: the workers, with labels, last request and current job. It
/// names internals (machines, jobs' tasks): the API token is needed, as for changes.
pub(super) async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = super::access::require_admin(&state, &headers) {
        return *refused;
    }
    let now = tasks::now_ms();
    let lease = state.cfg.worker_lease_ms as i64;
    match state.db(|s| s.workers_now(now, lease)) {
        Ok(ws) => Json(serde_json::json!({ "workers": tasks::workers_json(&ws), "now_ms": now }))
            .into_response(),
        Err(e) => e.answer(),
    }
}

/// `POST /api/worker/tasks/ID/cache`: a presigned URL for one of the job's cache
/// archives: reading its branch's (or the default branch's), writing its own branch's.
pub(super) async fn cache(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<i64>,
    headers: HeaderMap,
    Json(ask): Json<CacheAsk>,
) -> Response {
    let t = match task_call(&state, &headers, id, &ask.worker, ask.attempt) {
        Ok(Some(t)) => t,
        Ok(None) => return conflict(),
        Err(refused) => return *refused,
    };
    let forbidden =
        |why: String| answer(StatusCode::FORBIDDEN, serde_json::json!({ "error": why }));
    let Some(url) = state.cfg.cache_url.clone() else {
        return forbidden("this server keeps no caches (no cache_url)".into());
    };
    let Ok(Some(build)) = state.db(|s| s.by_id(t.build_id)) else {
        return conflict();
    };
    let Some(repo) = state.cfg.repo(&build.repo) else {
        return conflict();
    };
    let branch = build
        .tag
        .clone()
        .or(build.branch.clone())
        .unwrap_or_default();
    let default = repo
        .default_branch
        .clone()
        .unwrap_or_else(|| "master".into());
    let allowed = match ask.op {
        super::CacheOp::Get => crate::cache::fetch_branches(&branch, None, &default),
        super::CacheOp::Put => vec![crate::cache::store_branch(&branch, None)],
    };
    if !allowed.contains(&ask.branch) || !super::caches::plausible_key(&ask.key) {
        tracing::warn!(worker = %ask.worker, task = id, branch = %ask.branch, "a cache outside the job was asked for");
        return forbidden(format!(
            "job {} may {} the caches of {} only",
            t.number,
            if ask.op == super::CacheOp::Get {
                "read"
            } else {
                "write"
            },
            allowed.join(", ")
        ));
    }
    let bucket = state
        .caches
        .get_or_init(|| super::caches::CacheBucket::connect(&url))
        .await;
    let signed = match bucket {
        Ok(b) => b.presign(ask.op, &build.repo, &ask.branch, &ask.key).await,
        Err(e) => Err(e.clone()),
    };
    match signed {
        Ok(url) => Json(CacheUrl { url }).into_response(),
        Err(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::{Hold, Refusal, hold_of, pack_of};
    use crate::auth::digest;
    use crate::store::Status;
    use crate::store::tasks::TaskRow;

    fn running(worker: &str, attempt: i64, secret: Option<&str>) -> TaskRow {
        TaskRow {
            id: 7,
            build_id: 3,
            number: "3.1".into(),
            needs: Default::default(),
            state: Status::Running,
            attempt,
            worker: Some(worker.into()),
            lease_until: 0,
            cancel: false,
            outcome: None,
            secret: secret.map(digest),
        }
    }

    /// A call holds its task only as the worker and attempt that claimed it, with the
    /// claim's secret; a revoked worker is refused whatever it holds.
    #[test]
    fn a_call_holds_its_task_only_as_its_claimer_with_the_claims_secret() {
        let held = |t: Option<TaskRow>, revoked, who, attempt, given| match hold_of(
            t, revoked, who, attempt, given,
        ) {
            Hold::Held(_) => "held",
            Hold::NotHeld => "not held",
            Hold::Refused(Refusal::Revoked) => "revoked",
            Hold::Refused(Refusal::NoSecret) => "no secret",
        };
        let t = || Some(running("w1", 2, Some("s3cret")));
        assert_eq!(held(t(), false, "w1", 2, "s3cret"), "held");
        assert_eq!(held(t(), false, "w1", 2, "guess"), "no secret");
        assert_eq!(held(t(), false, "w1", 2, ""), "no secret");
        assert_eq!(held(t(), false, "w1", 1, "s3cret"), "not held");
        assert_eq!(held(t(), false, "w2", 2, "s3cret"), "not held");
        assert_eq!(held(None, false, "w1", 2, "s3cret"), "not held");
        assert_eq!(held(t(), true, "w1", 2, "s3cret"), "revoked");
        assert_eq!(held(None, true, "w1", 2, ""), "revoked");
        let mut ended = running("w1", 2, Some("s3cret"));
        ended.state = Status::Passed;
        assert_eq!(held(Some(ended), false, "w1", 2, "s3cret"), "not held");
        // A task handed out before secrets existed has none to check.
        assert_eq!(
            held(Some(running("w1", 2, None)), false, "w1", 2, ""),
            "held"
        );
    }

    /// A worker that has the first commit gets, for the second, only what it lacks.
    #[test]
    fn a_pack_leaves_out_what_the_workers_commits_bring() {
        let t = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(t.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let commit = |file: &str, bytes: &[u8], parent: Option<git2::Oid>| {
            std::fs::write(t.path().join(file), bytes).unwrap();
            let mut index = repo.index().unwrap();
            index.add_path(std::path::Path::new(file)).unwrap();
            index.write().unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            let parents: Vec<git2::Commit> = parent
                .map(|p| repo.find_commit(p).unwrap())
                .into_iter()
                .collect();
            let refs: Vec<&git2::Commit> = parents.iter().collect();
            repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &refs)
                .unwrap()
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let big: Vec<u8> = (0..400_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let first = commit("big.bin", &big, None);
        let second = commit("small.txt", b"small", Some(first));
        let whole = pack_of(t.path(), &second.to_string(), &[]).unwrap();
        let thin = pack_of(t.path(), &second.to_string(), &[first.to_string()]).unwrap();
        assert!(whole.len() > 300_000, "{}", whole.len());
        assert!(thin.len() < 2_000, "{}", thin.len());
        // It indexes into a copy that has the first commit, which then has the second.
        let other = tempfile::tempdir().unwrap();
        let copy = git2::Repository::init_bare(other.path()).unwrap();
        let odb = copy.odb().unwrap();
        let mut w = odb.packwriter().unwrap();
        std::io::Write::write_all(&mut w, &whole).unwrap();
        w.commit().unwrap();
        assert!(copy.find_commit(second).is_ok());
        // A commit the repository does not know is ignored, not an error.
        let unknown = "0123456789012345678901234567890123456789".to_string();
        assert!(pack_of(t.path(), &second.to_string(), &[unknown]).is_ok());
    }
}
