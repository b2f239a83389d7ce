//! `runway serve`: webhooks in, a durable queue in the build store, workers, and web
//! pages with live logs.
//!
//! - `hooks`: checking and reading webhook deliveries (pure);
//! - `listen`: connections accepted under header deadlines and a cap;
//! - `streams`: room for long-lived streams apart from deliveries;
//! - `intake`: deliveries in, answered and queued;
//! - `sources`: where a build's commit is read from; `mirror`: local mirrors of
//!   remote (https, git://) repositories;
//! - `builder`: queued builds claimed and run, unsent mails retried;
//! - `dispatch`: jobs on workers, followed from this node; `agents`: the workers'
//!   side of the API; `waiting`: their claims waiting for a task, and which one a
//!   task wakes; `caches`: caches in S3 for workers;
//! - `crons`: scheduled builds; `statuses`: the status outbox to the forge;
//! - `access`: who a request comes from and what they may do;
//! - `changes`: the builds that changed, in order, for the lists kept up to date;
//! - `live`: live logs of running builds, for server-sent events;
//! - `web`: the pages, the live log's events and the JSON API; `pages`: the HTML;
//!   `badge`: build badges;
//! - `recover`: what a start does about a crash (errored builds, orphaned jobs, mails).
//!
//! [`run`] takes a bound listener and a shutdown future (mini-redis style), so tests
//! start it on port 0 and stop it with any signal. Builds are queued in the build store (SQLite,
//! or PostgreSQL shared by several nodes) before a delivery is answered, claimed by one statement, and on start any build a crash left
//! "running" is marked errored with the reason (never run twice); `runway restart N`
//! queues it again.

mod access;
mod agents;
mod badge;
mod builder;
mod caches;
mod changes;
mod crons;
mod dispatch;
pub mod hooks;
mod intake;
mod listen;
pub(crate) mod live;
pub(crate) mod mirror;
pub(crate) mod pages;
pub(crate) mod recover;
mod sources;
mod statuses;
pub(crate) mod streams;
mod waiting;
mod web;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;

use crate::runway_toml::ServerConfig;
use crate::store::{self, Store};
use hooks::Source;
use live::LiveLogs;

pub use caches::CacheOp;
pub use recover::Interrupted;

/// Everything the handlers and workers share.
pub struct AppState {
    /// The configuration.
    pub cfg: ServerConfig,
    /// The build store: SQLite's one connection, or the handle PostgreSQL calls are
    /// shared from ([`AppState::db`]).
    store: Mutex<Store>,
    state_dir: PathBuf,
    live: LiveLogs,
    cancels: Mutex<HashMap<i64, crate::cancel::Cancel>>,
    wake: Notify,
    /// Notified each time a running build ends (what a shutdown waits on).
    ended: Notify,
    running: AtomicUsize,
    /// Moved each time a build may have been queued here (a delivery, a restart, an
    /// approval, a cron, another node's change): the claim loop, having found nothing
    /// to claim, claims again only once it moves (or a tick later).
    queued: std::sync::atomic::AtomicU64,
    stopping: AtomicBool,
    /// The store is the embedded one (SQLite): its calls may run in place on a
    /// runtime thread, one at a time ([`AppState::store_call`]).
    embedded: bool,
    /// A store call is running in place on a runtime thread.
    in_place: AtomicBool,
    /// The builds this node's log said were queued (by its intake) and that it has not
    /// started yet: a build it starts that is not here was queued elsewhere (the hook,
    /// another node), and its log says so first.
    said_queued: Mutex<std::collections::HashSet<i64>>,
    /// This node's hold on the builds it follows (each ended once, by their holder).
    holder: Arc<crate::service::Holder>,
    /// The store the last build used, kept open for the next ([`crate::service::KeptStore`]).
    kept_store: Arc<crate::service::KeptStore>,
    slots: Arc<crate::build::JobSlots>,
    /// Log files of ended builds, removed when due (`builder::PARTIAL_LOG_LINGER`):
    /// (when, build row id).
    expiring_logs: Mutex<std::collections::VecDeque<(std::time::Instant, i64)>>,
    /// The builds that were queued, started, ended, canceled or restarted, in order, for
    /// the pages that list builds (`GET /events`) and the status outbox.
    changes: changes::Changes,
    /// Notified when the server stops taking requests: open `/events` streams end.
    closing: Notify,
    /// The workers' claims waiting for a task to be queued.
    waiting: waiting::Waiting,
    /// Wakes the threads following a build's jobs on workers.
    signals: dispatch::Signals,
    /// This node's name in the store (its hold on the builds it follows).
    node: String,
    /// The workers' cache bucket (`cache_url`), reached once asked for.
    caches: tokio::sync::OnceCell<Result<caches::CacheBucket, String>>,
    /// Live streams open, capped apart from connections ([`streams`]).
    streams: Arc<streams::Streams>,
    /// The OpenID Connect issuer people sign in with (`[auth]`).
    oidc: Option<Arc<crate::auth::oidc::Client>>,
    /// The key session cookies are signed with, once read from the store.
    session_key: std::sync::OnceLock<Vec<u8>>,
}

impl AppState {
    /// State over the build store in `state_dir`; builds a crash left running are
    /// marked errored, their jobs' process groups killed and their mails queued
    /// ([`recover::recover`]; returned for the log).
    pub fn new(
        cfg: ServerConfig,
        state_dir: PathBuf,
    ) -> Result<(Arc<AppState>, Interrupted), String> {
        let url = cfg.database_url()?;
        store::postgres::set_pool_size(cfg.database_pool);
        let mut st = Store::connect(&state_dir, url.as_deref()).map_err(|e| e.to_string())?;
        if url.is_some() {
            st.keep_logs_at(cfg.log_url.as_deref())
                .map_err(|e| e.to_string())?;
        }
        let interrupted = recover::recover(&cfg, &state_dir, &mut st).map_err(|e| e.to_string())?;
        let slots = crate::build::JobSlots::new(cfg.concurrency);
        let connections = listen::Limits {
            max_connections: cfg.max_connections,
            header_timeout: Duration::from_secs(1),
        }
        .cap();
        let gate = match (cfg.max_streams, cfg.max_streams_per_client) {
            (None, None) => streams::Streams::for_connections(connections),
            (total, client) => {
                let total = total.unwrap_or(connections / 4).min(connections / 2);
                streams::Streams::new(total, client.unwrap_or(8).min(total))
            }
        };
        // Sign-in's issuer may be https (rustls with this provider).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let oidc = match &cfg.auth {
            Some(a) => Some(Arc::new(crate::auth::oidc::Client::new(
                a.settings()?,
                Box::new(crate::auth::oidc::Ureq::default()),
            ))),
            None => None,
        };
        let node = node_name();
        let state = Arc::new(AppState {
            cfg,
            store: Mutex::new(st),
            state_dir,
            live: LiveLogs::default(),
            cancels: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            ended: Notify::new(),
            running: AtomicUsize::new(0),
            queued: Default::default(),
            stopping: AtomicBool::new(false),
            embedded: url.is_none(),
            in_place: AtomicBool::new(false),
            slots,
            expiring_logs: Mutex::default(),
            changes: changes::Changes::new(crate::clock::now_ms() as u64, 256),
            closing: Notify::new(),
            waiting: waiting::Waiting::default(),
            said_queued: Mutex::default(),
            signals: dispatch::Signals::default(),
            holder: Arc::new(crate::service::Holder::new(&node)),
            kept_store: Arc::default(),
            node,
            caches: tokio::sync::OnceCell::new(),
            streams: gate,
            oidc,
            session_key: std::sync::OnceLock::new(),
        });
        // Several nodes on one PostgreSQL: what any of them changes wakes this one's
        // workers and updates its lists, through the database (LISTEN/NOTIFY).
        if let Some(url) = url {
            let weak = Arc::downgrade(&state);
            store::postgres::listen(&url, move |change| {
                let Some(state) = weak.upgrade() else {
                    return false;
                };
                if change == store::postgres::Change::Resync {
                    state.resync();
                } else {
                    state.heard(change);
                }
                true
            })
            .map_err(|e| e.to_string())?;
        }
        Ok((state, interrupted))
    }

    /// What another node (or this one) announced through the database.
    fn heard(&self, change: store::postgres::Change) {
        use store::postgres::Change;
        match change {
            Change::Build(id) => {
                self.changed(id);
                self.signals.bump(id);
                self.may_have_queued();
            }
            Change::Task(id) => self.signals.bump(id),
            Change::Queued(id) => {
                self.signals.bump(id);
                self.waiting.queued_unknown();
            }
            Change::Cancel(id) => {
                if let Some(c) = self.cancels.lock().expect("cancels").get(&id) {
                    c.cancel();
                }
            }
            Change::Resync => {
                self.signals.bump_all();
                self.waiting.queued_unknown();
                self.may_have_queued();
            }
        }
    }

    /// The connection listening for the other nodes' changes is back: whatever was
    /// announced while no one listened is read again. Every follower reads its tasks
    /// again, claims look again, the queue is read again, and the open lists are told
    /// the newest builds as they are now, once the store answers (on a thread: its
    /// connections may come back a little after this one).
    fn resync(self: &Arc<Self>) {
        self.heard(store::postgres::Change::Resync);
        let st = self.clone();
        std::thread::spawn(move || {
            // No lock held while the store answers (its connections may be coming back):
            // the node's other calls, its lease renewals among them, go on meanwhile.
            let rows = store::patiently(None, || {
                let shared = st.store.lock().expect("store").share();
                match shared {
                    Some(s) => s.builds_page(None, None, RESYNC_BUILDS),
                    None => st
                        .store
                        .lock()
                        .expect("store")
                        .builds_page(None, None, RESYNC_BUILDS),
                }
            });
            if let Ok(rows) = rows {
                for r in rows.iter().rev() {
                    st.changed(r.id);
                }
            }
            st.heard(store::postgres::Change::Resync);
        });
    }

    /// Wakes the claim loop: a build may have been queued.
    fn may_have_queued(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Tells the open builds lists that build `id` changed.
    fn changed(&self, id: i64) {
        self.changes.send(id);
    }

    /// Cancels every running build now (their jobs' process groups are killed): a
    /// second SIGTERM or Ctrl-C, for an operator who will not wait out the grace period.
    pub fn cancel_all(&self) {
        for c in self.cancels.lock().expect("cancels").values() {
            c.cancel();
        }
    }

    /// Runs `f` on the build store, never holding up the async runtime's threads (see
    /// [`AppState::store_call`]). PostgreSQL: on a handle of its own, beside the node's
    /// other calls, each on one of the pool's connections (the lock is held only to
    /// make the handle); SQLite: in turn on its one connection.
    fn db<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, store::StoreError>,
    ) -> Result<T, DbError> {
        self.store_call(|| {
            let shared = self.store.lock().expect("store").share();
            match shared {
                Some(mut st) => f(&mut st),
                // The disk waited for once the connection is let go (each sync held
                // it: a worker round's deliveries and reports queued behind them).
                None => store::synced_after(|| f(&mut self.store.lock().expect("store"))),
            }
        })
        .map_err(|e| DbError {
            unreachable: matches!(e, store::StoreError::Unavailable(_)),
            message: e.to_string(),
        })
    }

    /// Runs `f`, a store call, as [`off_the_runtime`] does, except for one call at a
    /// time of the embedded store (SQLite: local, a read or a commit) made on a thread
    /// of the runtime's own, which runs where it was made when the runtime has another
    /// thread to go on with. A hand-off costs thread switches, and the worker path
    /// makes three such calls a build from its handlers (half a millisecond of the
    /// node's CPU a build: BENCHMARKS.md). PostgreSQL's calls cross a network and
    /// always hand off. While a call runs in place, the one task the runtime queued
    /// last on that thread (tokio's LIFO slot, which other threads do not steal) waits
    /// for it: a commit's time, or SQLite's lock wait at worst.
    fn store_call<T>(&self, f: impl FnOnce() -> T) -> T {
        let in_place = self.embedded
            && RUNTIME_THREAD.get()
            && tokio::runtime::Handle::try_current().is_ok_and(|h| {
                h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                    && h.metrics().num_workers() > 1
            })
            && self
                .in_place
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok();
        if !in_place {
            return off_the_runtime(f);
        }
        let _after = InPlace(&self.in_place);
        f()
    }
}

/// Runs `f`, which blocks (a store call waiting for its connection's answer), without
/// holding up the async runtime: on one of the runtime's worker threads, the runtime
/// first hands that thread's other tasks to another (`block_in_place`), so two slow
/// calls never leave the node unable to accept a connection or serve a page; on any
/// other thread (a build's, a job's dispatch) it just runs.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

thread_local! {
    /// This thread is one of the async runtime's own (set each time one wakes from
    /// idle: [`runtime_thread_woke`]). A thread not known to be one hands off as one.
    static RUNTIME_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The runtime's hook for a thread of its own waking (`on_thread_unpark`, set by
/// `runway serve`): store calls made on it may run in place ([`AppState::db`]).
pub fn runtime_thread_woke() {
    RUNTIME_THREAD.set(true);
}

/// The one store call running in place on a runtime thread; the next may when it ends
/// (or unwinds).
struct InPlace<'a>(&'a AtomicBool);

impl Drop for InPlace<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A failed call to the build store, as the handlers see it.
#[derive(Debug)]
pub(crate) struct DbError {
    /// What failed.
    message: String,
    /// The database cannot be reached now (PostgreSQL restarting, the network): the
    /// caller should try again later (webhooks: 503 with `Retry-After`).
    unreachable: bool,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<DbError> for String {
    fn from(e: DbError) -> String {
        e.message
    }
}

/// How many of the newest builds the open lists are told of again once the
/// connection listening for the other nodes' changes is back.
const RESYNC_BUILDS: usize = 50;

/// Seconds a client is asked to wait before trying again while the store is
/// unreachable.
const RETRY_AFTER_SECS: u64 = 5;

impl DbError {
    /// The answer to a request that needed the store: 503 with `Retry-After` when the
    /// database is unreachable, else 500; JSON `{"error": …}` either way.
    fn answer(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let code = if self.unreachable {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        let mut r = answer(code, serde_json::json!({ "error": self.message }));
        if self.unreachable {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        r.into_response()
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
    let workers = tokio::spawn(builder::work(state.clone()));
    let scheduling = tokio::spawn(crons::run(state.clone()));
    let posting = tokio::spawn(statuses::run(
        state.clone(),
        Arc::new(statuses::HttpPoster::new()),
    ));
    let st = state.clone();
    let limits = listen::Limits {
        max_connections: state.cfg.max_connections,
        header_timeout: Duration::from_secs(state.cfg.header_timeout_secs.max(1)),
    };
    listen::serve(listener, app, limits, async move {
        shutdown.await;
        st.stopping.store(true, Ordering::SeqCst);
        st.wake.notify_waiters();
        st.closing.notify_waiters();
    })
    .await;
    state.stopping.store(true, Ordering::SeqCst);
    state.wake.notify_waiters();
    // Several nodes and jobs on workers: the builds this node follows go on without it
    // (their jobs run on the workers). It lets go of them at once, so another node
    // takes each over and ends it once: nothing is canceled, nothing ends twice.
    if state.cfg.uses_workers() && state.cfg.shared_store() {
        let node = state.node.clone();
        // No build of this node's starts its end from now on, and those under way
        // (recorded, mailing) finish first: then another node takes the rest over.
        let grace = Duration::from_secs(state.cfg.shutdown_grace_secs);
        if !state.holder.release(grace).await {
            tracing::warn!(
                "stopping: a build's end (its record and mail) did not finish within the grace"
            );
        }
        match state.db(|s| s.release_builds(&node)) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                builds = n,
                "stopping: the builds this node followed are handed to the other nodes"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "stopping: the builds could not be handed over; another node takes them over when this node's hold lapses")
            }
        }
        workers.abort();
        posting.abort();
        scheduling.abort();
        return;
    }
    // Otherwise the running builds get the grace period (this node's holds renewed
    // meanwhile), then what is left is canceled and ended once, here.
    let grace = Duration::from_secs(state.cfg.shutdown_grace_secs);
    let deadline = tokio::time::Instant::now() + grace;
    if !state.all_ended(Some(deadline)).await {
        state.cancel_all();
        state.all_ended(None).await;
    }
    workers.abort();
    posting.abort();
    scheduling.abort();
}

impl AppState {
    /// How many builds this node follows now.
    pub fn running_builds(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Waits until no build runs (each end is notified; nothing polls), or until
    /// `deadline`. True when none runs.
    async fn all_ended(&self, deadline: Option<tokio::time::Instant>) -> bool {
        loop {
            // Registered before the count is read, so an end between the two is seen.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.running.load(Ordering::SeqCst) == 0 {
                return true;
            }
            match deadline {
                Some(d) => {
                    tokio::select! {
                        _ = ended => {}
                        _ = tokio::time::sleep_until(d) => return false,
                    }
                }
                None => ended.await,
            }
        }
    }
}

/// A name for this node that no other node (or earlier start) has.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{}-{nanos:x}", host.trim(), std::process::id())
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/worker/claim", post(agents::claim))
        .route("/api/worker/tasks/{id}/pack", get(agents::pack))
        .route("/api/worker/tasks/{id}/log", post(agents::chunk))
        .route("/api/worker/tasks/{id}/beat", post(agents::beat))
        .route("/api/worker/tasks/{id}/end", post(agents::end))
        .route("/api/worker/tasks/{id}/cache", post(agents::cache))
        .route("/api/workers", get(agents::list))
        .route("/", get(web::pages_index))
        .route("/auth/login", get(access::login))
        .route("/auth/callback", get(access::callback))
        .route("/auth/logout", post(access::logout))
        .route(
            "/tokens",
            get(access::tokens_page).post(access::tokens_form),
        )
        .route(
            "/api/tokens",
            get(access::api_tokens).post(access::api_create_token),
        )
        .route("/api/tokens/{id}/revoke", post(access::api_revoke_token))
        .route("/api/repos/{owner}/{repo}/audit", get(web::api_audit))
        .route("/events", get(web::list_events))
        .route("/assets/{name}", get(web::asset))
        .route("/api/builds/{n}/restart", post(web::api_restart))
        .route("/builds/{n}", get(web::page_build))
        .route("/builds/{n}/config", get(web::page_config))
        .route("/builds/{n}/events", get(web::build_events))
        .route("/api/builds", get(web::api_builds))
        .route("/api/builds/{n}", get(web::api_build))
        .route("/api/builds/{n}/cancel", post(web::api_cancel))
        .route("/api/builds/{n}/approve", post(web::api_approve))
        .route(
            "/api/builds/{n}/jobs/{job}/restart",
            post(web::api_restart_job),
        )
        .route("/badge/{owner}/{repo}", get(web::badge))
        .route(
            "/api/repos/{owner}/{repo}/requests",
            post(intake::api_request),
        )
        .route("/api/builds/{n}/log", get(web::api_log))
        .route(
            "/hooks/github",
            post(|s, r| intake::intake(s, r, Source::GitHub)),
        )
        .route(
            "/hooks/gitea",
            post(|s, r| intake::intake(s, r, Source::Gitea)),
        )
        .route(
            "/hooks/gitlab",
            post(|s, r| intake::intake(s, r, Source::GitLab)),
        )
        .route(
            "/hooks/generic",
            post(|s, r| intake::intake(s, r, Source::Generic)),
        )
        .with_state(state)
}

/// A JSON answer with its status.
pub(super) fn answer(code: StatusCode, body: serde_json::Value) -> Response {
    (code, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::AppState;
    use crate::store::{NewBuild, sqlite};

    #[test]
    fn a_store_call_waits_for_the_disk_once_the_connection_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = AppState::new(toml::from_str("").unwrap(), dir.path().into()).unwrap();
        let syncs = || sqlite::syncs(dir.path());
        let before = syncs();
        let (during, held) = state
            .db(|s| {
                s.enqueue(&NewBuild {
                    repo: "o/a".into(),
                    branch: Some("main".into()),
                    commit: "abc".into(),
                    event: "push".into(),
                    ..NewBuild::default()
                })?;
                Ok((syncs(), state.store.try_lock().is_err()))
            })
            .unwrap();
        assert!(held, "the call runs holding the node's one connection");
        assert_eq!(during, before, "no sync while the connection is held");
        assert_eq!(
            syncs(),
            before + 1,
            "the delivery's build is on the disk when the call returns"
        );
        assert!(state.store.try_lock().is_ok(), "and the connection let go");
    }
}
