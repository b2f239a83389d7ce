//! Webhook deliveries in: checked (hooks.rs), answered with a reason, and queued in the
//! build store before the answer, with auto-cancellation of superseded builds.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::hooks::{self, Delivery, Refusal, Source};
use super::{AppState, answer, mirror};
use crate::event::EventType;
use crate::store::{BuildRow, NewBuild};

/// `POST /hooks/{github,gitea,gitlab,generic}`: a delivery checked, answered with its
/// reason, and queued before the answer.
pub(super) async fn intake(
    State(state): State<Arc<AppState>>,
    req: Request,
    source: Source,
) -> Response {
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
                .map(|u| crate::notify::build_url(u, &row.repo, row.number));
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
        && let Ok(bytes) = repo.read_file(&d.after, ".travis.yml", crate::config::MAX_CONFIG_BYTES)
    {
        if message.is_empty() {
            message = repo.commit(&d.after).map(|c| c.message).unwrap_or_default();
        }
        let loaded = crate::config::load_bytes(&bytes);
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
    let range = crate::event::commit_range(&d.before, &d.after);
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
