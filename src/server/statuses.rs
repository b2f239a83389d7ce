//! The status outbox: every change of a build (this node's, or another's heard through
//! the database) puts the status of the build's phase in the store, once per phase
//! whichever node saw it ([`crate::store::Store::queue_status`]); one node claims each
//! and posts it to the forge ([`crate::forge`]), trying again with backoff while the
//! forge is down, slow or limiting, never holding up or changing the build. What became
//! of each is on the build's page and in its API document; failures are logged. The
//! token is read from `status_token_env` when posting and is never stored or said.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use crate::forge::{self, Forge, Phase};
use crate::store::StatusRow;

/// How long a node holds a status it is posting before another may.
const CLAIM_MS: i64 = 60_000;

/// Tries before a status is given up.
const GIVE_UP: u32 = 8;

/// How long one post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a post failed: the message, and the forge's HTTP status when it answered.
#[derive(Debug)]
pub struct PostError {
    /// What went wrong (no token in it).
    pub message: String,
    /// The forge's answer's status.
    pub status: Option<u16>,
}

/// Posts one status (the side effect, apart from the outbox's decisions).
pub trait Poster: Send + Sync {
    /// POSTs `body` to `url` with the token's header.
    fn post(&self, url: &str, body: &str, auth: (&str, &str)) -> Result<(), PostError>;
}

/// The HTTP poster.
pub struct HttpPoster(ureq::Agent);

impl HttpPoster {
    /// A poster with runway's timeouts.
    pub fn new() -> HttpPoster {
        HttpPoster(crate::http::agent(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_global(Some(POST_TIMEOUT))
                .build(),
        ))
    }
}

impl Poster for HttpPoster {
    fn post(&self, url: &str, body: &str, auth: (&str, &str)) -> Result<(), PostError> {
        let answer = self
            .0
            .post(url)
            .header(auth.0, auth.1)
            .header("Accept", "application/json")
            .header("User-Agent", "runway")
            .header("Content-Type", "application/json")
            .send(body.as_bytes())
            .map_err(|e| PostError {
                message: e.to_string(),
                status: None,
            })?;
        let code = answer.status().as_u16();
        if (200..300).contains(&code) {
            return Ok(());
        }
        let said = answer
            .into_body()
            .with_config()
            .limit(4096)
            .read_to_string()
            .unwrap_or_default();
        Err(PostError {
            message: format!(
                "the forge answered {code}: {}",
                said.chars().take(300).collect::<String>().trim()
            ),
            status: Some(code),
        })
    }
}

/// Puts the status of build `id`'s phase in the outbox, when its repository posts
/// statuses. True when one was added. (Intake calls it as it queues a build, so the
/// `pending` of a build that ends at once is still posted first.)
pub(super) fn enqueue(state: &AppState, id: i64) -> bool {
    match state.db(|s| s.by_id(id)) {
        Ok(Some(row)) => enqueue_row(state, &row),
        _ => false,
    }
}

/// Puts the status of `row`'s phase, as the row has it, in the outbox: a caller that
/// just queued a build posts its `pending` even when a node has claimed it since.
pub(super) fn enqueue_row(state: &AppState, row: &crate::store::BuildRow) -> bool {
    let Some(repo) = state.cfg.repo(&row.repo) else {
        return false;
    };
    let Some(api_url) = repo.api_url.as_deref() else {
        return false;
    };
    let phase = Phase::of(row);
    let to = forge::Target {
        forge: repo.forge,
        api_url,
        context: &repo.status_context,
        public_url: state.cfg.public_url.as_deref(),
    };
    let req = forge::request(&to, row, phase);
    state
        .db(|s| s.queue_status(row.id, phase.key(), &row.repo, &req))
        .unwrap_or(false)
}

/// When a status that failed `attempts` times is tried again (ms): 2, 4, 8… s, at most
/// five minutes later.
fn retry_at(now_ms: i64, attempts: u32) -> i64 {
    now_ms + 1000 * (1i64 << attempts.clamp(1, 8)).min(300)
}

/// Posts `s` and records what became of it.
fn post_one(state: &AppState, poster: &dyn Poster, s: &StatusRow) {
    let repo = state.cfg.repo(&s.repo);
    let forge = repo.map_or(Forge::GitHub, |r| r.forge);
    let token = repo
        .and_then(|r| r.status_token_env.as_ref())
        .map(|var| std::env::var(var).map_err(|_| var.clone()));
    let result = match token {
        None => Err(PostError {
            message: format!("{}: no status_token_env in runway.toml", s.repo),
            status: Some(401),
        }),
        Some(Err(var)) => Err(PostError {
            message: format!(
                "status_token_env names {var}, which is not set in the server's environment"
            ),
            status: Some(401),
        }),
        Some(Ok(token)) => {
            let (name, value) = forge::auth_header(forge, &token);
            poster.post(&s.url, &s.body, (name, &value))
        }
    };
    let now = crate::clock::now_ms();
    match result {
        Ok(()) => {
            let _ = state.db(|st| st.status_tried(s.id, Ok(()), None));
        }
        Err(e) => {
            let again = forge::worth_retrying(e.status) && s.attempts + 1 < GIVE_UP;
            let at = again.then(|| retry_at(now, s.attempts + 1));
            tracing::warn!(
                repo = %s.repo,
                build = s.build_id,
                attempts = s.attempts + 1,
                error = %e.message,
                again,
                "commit status not posted"
            );
            let _ = state.db(|st| st.status_tried(s.id, Err(&e.message), at));
        }
    }
    state.changed(s.build_id);
}

/// The outbox's loop, for the life of the server: statuses put in on every change,
/// posted as they fall due.
pub(super) async fn run(state: Arc<AppState>, poster: Arc<dyn Poster>) {
    if !state.cfg.repos.iter().any(|r| r.api_url.is_some()) {
        return;
    }
    let mut changes = state.changes.subscribe();
    // Builds that changed while no node listened (this one starting) are looked at too.
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(rows) = st.db(|s| s.builds_page(None, None, super::RESYNC_BUILDS)) {
            for r in rows.iter().rev() {
                enqueue(&st, r.id);
            }
        }
    })
    .await;
    loop {
        // Everything due now.
        loop {
            let st = state.clone();
            let p = poster.clone();
            let posted = tokio::task::spawn_blocking(move || {
                let now = crate::clock::now_ms();
                match st.db(|s| s.claim_status(now, now + CLAIM_MS)) {
                    Ok(Some(s)) => {
                        post_one(&st, p.as_ref(), &s);
                        true
                    }
                    _ => false,
                }
            })
            .await
            .unwrap_or(false);
            if !posted {
                break;
            }
        }
        let st = state.clone();
        let due = tokio::task::spawn_blocking(move || st.db(|s| s.next_status_at()).ok().flatten())
            .await
            .ok()
            .flatten();
        let wait = due.map(|at| Duration::from_millis((at - crate::clock::now_ms()).max(0) as u64));
        tokio::select! {
            heard = changes.recv() => match heard {
                Ok(c) => {
                    let st = state.clone();
                    let _ = tokio::task::spawn_blocking(move || enqueue(&st, c.build)).await;
                }
                Err(RecvError::Lagged(_)) => {
                    let st = state.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if let Ok(rows) = st.db(|s| s.builds_page(None, None, super::RESYNC_BUILDS)) {
                            for r in &rows {
                                enqueue(&st, r.id);
                            }
                        }
                    })
                    .await;
                }
                Err(RecvError::Closed) => return,
            },
            _ = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}
