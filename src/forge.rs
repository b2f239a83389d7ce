//! Commit statuses on the forge (GitHub, Gitea/Forgejo, GitLab): which phase of a build
//! is posted, with which state, and the request that posts it (URL, JSON body, the
//! header that carries the token). Pure: the server's status outbox
//! (`server::statuses`) stores these requests and posts them.

use crate::store::{BuildRow, Status};

/// The forge a repository's statuses go to (`forge` in runway.toml).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forge {
    /// `POST {api_url}/repos/OWNER/REPO/statuses/SHA`, `Authorization: token T`.
    #[default]
    GitHub,
    /// The same call as GitHub's (Gitea and Forgejo copy it).
    Gitea,
    /// `POST {api_url}/projects/OWNER%2FREPO/statuses/SHA`, `PRIVATE-TOKEN: T`.
    GitLab,
}

/// A build's phase, each posted once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for its turn (or for an approval).
    Queued,
    /// Its jobs run.
    Running,
    /// It ended so.
    Ended(Status),
}

impl Phase {
    /// The phase build `row` is in.
    pub fn of(row: &BuildRow) -> Phase {
        match row.state {
            Status::Queued | Status::Awaiting => Phase::Queued,
            Status::Running => Phase::Running,
            s => Phase::Ended(s),
        }
    }

    /// The name a phase is stored under: one status per build and phase.
    pub fn key(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Running => "running",
            Phase::Ended(_) => "ended",
        }
    }
}

/// The state `forge` calls `phase`.
pub fn state(forge: Forge, phase: Phase) -> &'static str {
    match (forge, phase) {
        (_, Phase::Queued) => "pending",
        (Forge::GitLab, Phase::Running) => "running",
        (_, Phase::Running) => "pending",
        (Forge::GitLab, Phase::Ended(Status::Passed)) => "success",
        (Forge::GitLab, Phase::Ended(Status::Failed | Status::Errored)) => "failed",
        (Forge::GitLab, Phase::Ended(_)) => "canceled",
        (_, Phase::Ended(Status::Passed)) => "success",
        (_, Phase::Ended(Status::Failed)) => "failure",
        // Errored and canceled: GitHub's and Gitea's `error`.
        (_, Phase::Ended(_)) => "error",
    }
}

/// The longest description GitHub takes.
pub const DESCRIPTION_CHARS: usize = 140;

/// What the status says: the phase, or how the build ended and why, cut to
/// [`DESCRIPTION_CHARS`].
pub fn description(row: &BuildRow, phase: Phase) -> String {
    let text = match phase {
        Phase::Queued if row.state == Status::Awaiting => {
            "The build awaits approval (a pull request from a fork)".to_string()
        }
        Phase::Queued => match &row.reason {
            Some(r) if !r.is_empty() => format!("The build is queued: {r}"),
            _ => "The build is queued".to_string(),
        },
        Phase::Running => "The build is running".to_string(),
        Phase::Ended(s) => {
            let head = format!("The build {}", s.as_str());
            match &row.reason {
                Some(r) if !r.is_empty() => format!("{head}: {r}"),
                _ => head,
            }
        }
    };
    cut(&text, DESCRIPTION_CHARS)
}

fn cut(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let mut out: String = text.chars().take(chars - 1).collect();
    out.push('…');
    out
}

/// A status to post: where, what, and under which context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRequest {
    /// The full URL.
    pub url: String,
    /// The JSON body.
    pub body: String,
    /// The commit the status is for.
    pub sha: String,
    /// The context (`runway/push`, `runway/pr`).
    pub context: String,
    /// The state posted.
    pub state: String,
}

/// Where a repository's statuses go (its `[[repo]]` settings).
#[derive(Clone, Debug)]
pub struct Target<'a> {
    /// Which forge.
    pub forge: Forge,
    /// The API's base (`https://api.github.com`, `https://gitea.example/api/v1`,
    /// `https://gitlab.example/api/v4`).
    pub api_url: &'a str,
    /// The context's first part (`runway`).
    pub context: &'a str,
    /// The server's public URL, for the link to the build's page.
    pub public_url: Option<&'a str>,
}

/// The commit a build's status belongs to: a pull request's head (the forge shows
/// statuses on the pull request's commits), else the commit built.
pub fn status_sha(row: &BuildRow) -> &str {
    row.pull_request
        .as_ref()
        .map_or(row.commit.as_str(), |p| p.head_sha.as_str())
}

/// The request posting `phase` of build `row` to `to`.
pub fn request(to: &Target, row: &BuildRow, phase: Phase) -> StatusRequest {
    let kind = if row.pull_request.is_some() {
        "pr"
    } else {
        "push"
    };
    let context = format!("{}/{kind}", to.context);
    let sha = status_sha(row).to_string();
    let state = state(to.forge, phase);
    let target_url = to
        .public_url
        .map(|u| crate::notify::build_url(u, &row.repo, row.number));
    let description = description(row, phase);
    let base = to.api_url.trim_end_matches('/');
    let (url, body) = match to.forge {
        Forge::GitHub | Forge::Gitea => (
            format!("{base}/repos/{}/statuses/{sha}", row.repo),
            serde_json::json!({
                "state": state, "target_url": target_url,
                "description": description, "context": context,
            }),
        ),
        Forge::GitLab => (
            format!(
                "{base}/projects/{}/statuses/{sha}",
                crate::notify::url_component(&row.repo)
            ),
            serde_json::json!({
                "state": state, "target_url": target_url,
                "description": description, "name": context,
            }),
        ),
    };
    StatusRequest {
        url,
        body: body.to_string(),
        sha,
        context,
        state: state.to_string(),
    }
}

/// The header that carries the token: (name, value).
pub fn auth_header(forge: Forge, token: &str) -> (&'static str, String) {
    match forge {
        Forge::GitHub | Forge::Gitea => ("Authorization", format!("token {token}")),
        Forge::GitLab => ("PRIVATE-TOKEN", token.to_string()),
    }
}

/// Whether a failed post is worth another try: a forge that is down, slow or limiting
/// (no answer, 5xx, 408, 429), not one that refused the request (another 4xx).
pub fn worth_retrying(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => s >= 500 || s == 408 || s == 429,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: Status, pr: bool) -> BuildRow {
        BuildRow {
            repo: "o/app".into(),
            number: 7,
            commit: "merge1".into(),
            state,
            reason: Some("`make` exited 2".into()),
            pull_request: pr.then(|| crate::event::PullRequest {
                number: 3,
                head_sha: "head1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_forge_gets_its_own_call_and_states() {
        let to = Target {
            forge: Forge::GitHub,
            api_url: "http://127.0.0.1:9/",
            context: "runway",
            public_url: Some("https://ci.example"),
        };
        let r = request(
            &to,
            &row(Status::Failed, true),
            Phase::Ended(Status::Failed),
        );
        assert_eq!(r.url, "http://127.0.0.1:9/repos/o/app/statuses/head1");
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["state"], "failure");
        assert_eq!(body["context"], "runway/pr");
        assert_eq!(body["target_url"], "https://ci.example/builds/7?repo=o/app");
        assert_eq!(body["description"], "The build failed: `make` exited 2");
        let push = request(&to, &row(Status::Running, false), Phase::Running);
        assert_eq!(
            (
                push.sha.as_str(),
                push.state.as_str(),
                push.context.as_str()
            ),
            ("merge1", "pending", "runway/push")
        );
        let gl = Target {
            forge: Forge::GitLab,
            ..to
        };
        let r = request(
            &gl,
            &row(Status::Canceled, false),
            Phase::Ended(Status::Canceled),
        );
        assert_eq!(r.url, "http://127.0.0.1:9/projects/o%2Fapp/statuses/merge1");
        assert_eq!(r.state, "canceled");
        assert_eq!(state(Forge::GitLab, Phase::Running), "running");
        assert_eq!(state(Forge::Gitea, Phase::Ended(Status::Canceled)), "error");
    }

    #[test]
    fn a_description_is_cut_to_the_forges_limit() {
        let mut long = row(Status::Errored, false);
        long.reason = Some("x".repeat(500));
        let d = description(&long, Phase::Ended(Status::Errored));
        assert_eq!(d.chars().count(), DESCRIPTION_CHARS);
        assert!(d.ends_with('…'));
        assert!(worth_retrying(Some(502)) && worth_retrying(None) && !worth_retrying(Some(422)));
    }
}
