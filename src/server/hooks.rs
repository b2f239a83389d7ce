//! Webhook deliveries: GitHub (`X-Hub-Signature-256`, HMAC-SHA256 over the raw body),
//! Gitea/Forgejo (`X-Gitea-Signature`), GitLab (`X-Gitlab-Token`) and a generic JSON
//! endpoint with a bearer token. Every comparison of a secret is constant-time.
//! Pure: headers and body in, a [`Delivery`] or the reason for refusing it out.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::runway_toml::ServerConfig;

/// Which endpoint received the delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `/hooks/github`
    GitHub,
    /// `/hooks/gitea`
    Gitea,
    /// `/hooks/gitlab`
    GitLab,
    /// `/hooks/generic`
    Generic,
}

impl Source {
    /// The endpoint's name: `github`, `gitea`, `gitlab`, `generic`.
    pub fn name(self) -> &'static str {
        match self {
            Source::GitHub => "github",
            Source::Gitea => "gitea",
            Source::GitLab => "gitlab",
            Source::Generic => "generic",
        }
    }
}

/// A push to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// `owner/repo` as configured.
    pub repo: String,
    /// The branch, or `None` for a tag.
    pub branch: Option<String>,
    /// The tag.
    pub tag: Option<String>,
    /// The sha before the push (zeros for a new ref).
    pub before: String,
    /// The pushed sha.
    pub after: String,
    /// The head commit's message, when the payload has it.
    pub message: String,
    /// The sender's delivery id ([`delivery_id`]), the same when sent again.
    pub id: Option<String>,
}

impl Delivery {
    /// The ref pushed: `refs/heads/B` or `refs/tags/T`.
    pub fn ref_name(&self) -> String {
        match (&self.tag, &self.branch) {
            (Some(t), _) => format!("refs/tags/{t}"),
            (None, Some(b)) => format!("refs/heads/{b}"),
            (None, None) => String::new(),
        }
    }

    /// What the push is, whatever its delivery id says: (repository, ref, before,
    /// after). A delivery sent again with a new id is the same push. None when the
    /// sender does not say `before` (the generic endpoint): its deliveries are told
    /// apart by their id alone.
    pub fn push_key(&self) -> Option<String> {
        let known = !self.before.is_empty();
        known.then(|| {
            format!(
                "push:{}:{}:{}:{}",
                self.repo,
                self.ref_name(),
                self.before,
                self.after
            )
        })
    }

    /// The push as an event, with the head commit's message (the payload's, or the
    /// commit's when the payload had none).
    pub fn event(&self, message: String) -> crate::event::BuildEvent {
        crate::event::BuildEvent {
            repo: self.repo.clone(),
            branch: self.branch.clone(),
            tag: self.tag.clone(),
            event: crate::event::EventType::Push,
            commit: self.after.clone(),
            commit_message: message,
            commit_range: crate::event::commit_range(&self.before, &self.after),
            ..Default::default()
        }
    }
}

/// What a delivery asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intake {
    /// A push to build.
    Push(Delivery),
    /// A pull request opened or moved on: build the merge of its head into its base.
    Pull(PullDelivery),
    /// A pull request closed (or merged): its builds that have not ended are canceled.
    Closed {
        /// `owner/repo` as configured.
        repo: String,
        /// The pull request's number.
        number: u64,
    },
}

/// A pull request to build (GitHub's and Gitea's `pull_request`, GitLab's
/// `merge_request`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullDelivery {
    /// `owner/repo` as configured (the base's repository).
    pub repo: String,
    /// Its number (GitLab's `iid`).
    pub number: u64,
    /// The branch it would merge into.
    pub base_branch: String,
    /// The base's commit, when the payload says it (GitHub, Gitea).
    pub base_sha: Option<String>,
    /// The head's branch.
    pub head_branch: String,
    /// The head's commit.
    pub head_sha: String,
    /// The head's repository (`owner/repo`; empty when the forge no longer knows it).
    pub head_slug: String,
    /// Its title.
    pub title: String,
    /// The ref the forge keeps the head under in the base's repository
    /// (`refs/pull/N/head`, GitLab's `refs/merge-requests/N/head`).
    pub head_ref: String,
    /// The ref of the forge's own merge commit, where it makes one
    /// (GitHub's `refs/pull/N/merge`).
    pub merge_ref: Option<String>,
    /// The sender's delivery id ([`delivery_id`]).
    pub id: Option<String>,
}

impl PullDelivery {
    /// True when the head is in another repository than the one built (a fork).
    pub fn fork(&self) -> bool {
        !self.head_slug.eq_ignore_ascii_case(&self.repo)
    }

    /// What the pull request's state is, whatever its delivery id says: the same head
    /// on the same base is the same build.
    pub fn key(&self) -> String {
        format!(
            "pr:{}:{}:{}:{}",
            self.repo,
            self.number,
            self.head_sha,
            self.base_sha.as_deref().unwrap_or_default()
        )
    }
}

/// What to answer instead of queueing.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 401: unsigned, tampered, or the wrong token.
    #[error("{0}")]
    Unauthorized(String),
    /// 400: not the JSON expected.
    #[error("{0}")]
    Malformed(String),
    /// 404: a repository runway does not build.
    #[error("{0}")]
    UnknownRepo(String),
    /// 200 without a build: a ping, a deletion, a non-push event.
    #[error("{0}")]
    Nothing(String),
}

/// The request headers a delivery needs (lower-case names).
pub trait Headers {
    /// A header's value.
    fn get(&self, name: &str) -> Option<String>;
}

impl Headers for axum::http::HeaderMap {
    fn get(&self, name: &str) -> Option<String> {
        axum::http::HeaderMap::get(self, name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case, as
/// RFC 9110 has it).
pub fn bearer(headers: &dyn Headers) -> Option<String> {
    let value = headers.get("authorization")?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

pub use crate::mask::same;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 of `body` with `secret`, hex.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// True when `given` (hex) is the HMAC-SHA256 of `body` under `secret`: checked by
/// the MAC itself (`verify_slice`, in constant time).
fn signed(secret: &str, body: &[u8], given: Option<&str>) -> bool {
    let Some(bytes) = given.and_then(unhex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

/// `ab01…` as bytes; None unless it is an even number of hex digits.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn json(body: &[u8]) -> Result<serde_json::Value, Refusal> {
    serde_json::from_slice(body)
        .map_err(|e| Refusal::Malformed(format!("the body is not JSON: {e}")))
}

fn text(v: &serde_json::Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().map(str::to_string)
}

/// Checks a delivery's signature (GitHub, Gitea) or token (GitLab, generic) against
/// `secret`, in constant time.
fn verify(source: Source, headers: &dyn Headers, body: &[u8], secret: &str) -> Result<(), Refusal> {
    match source {
        Source::GitHub | Source::Gitea => {
            let (header, prefix) = if source == Source::GitHub {
                ("x-hub-signature-256", "sha256=")
            } else {
                ("x-gitea-signature", "")
            };
            let given = headers.get(header).ok_or_else(|| {
                Refusal::Unauthorized(format!("unsigned delivery: no {header} header"))
            })?;
            if !signed(secret, body, given.trim().strip_prefix(prefix)) {
                return Err(Refusal::Unauthorized(format!(
                    "bad signature: {header} does not match the body"
                )));
            }
        }
        Source::GitLab => {
            let given = headers
                .get("x-gitlab-token")
                .ok_or_else(|| Refusal::Unauthorized("no X-Gitlab-Token header".into()))?;
            if !same(given.as_bytes(), secret.as_bytes()) {
                return Err(Refusal::Unauthorized("wrong X-Gitlab-Token".into()));
            }
        }
        Source::Generic => {
            let given = bearer(headers)
                .ok_or_else(|| Refusal::Unauthorized("no Authorization: Bearer token".into()))?;
            if !same(given.as_bytes(), secret.as_bytes()) {
                return Err(Refusal::Unauthorized("wrong bearer token".into()));
            }
        }
    }
    Ok(())
}

/// The refusal of a delivery no known secret verifies: what [`verify`] says of it,
/// from its headers alone, so the answer is the same whether or not the repository
/// it names exists.
fn unverified(source: Source, headers: &dyn Headers) -> Refusal {
    let (header, missing, wrong) = match source {
        Source::GitHub => (
            "x-hub-signature-256",
            "unsigned delivery: no x-hub-signature-256 header",
            "bad signature: x-hub-signature-256 does not match the body",
        ),
        Source::Gitea => (
            "x-gitea-signature",
            "unsigned delivery: no x-gitea-signature header",
            "bad signature: x-gitea-signature does not match the body",
        ),
        Source::GitLab => (
            "x-gitlab-token",
            "no X-Gitlab-Token header",
            "wrong X-Gitlab-Token",
        ),
        Source::Generic => (
            "authorization",
            "no Authorization: Bearer token",
            "wrong bearer token",
        ),
    };
    let given = if source == Source::Generic {
        bearer(headers)
    } else {
        headers.get(header)
    };
    Refusal::Unauthorized(if given.is_some() { wrong } else { missing }.to_string())
}

/// The sender's id of a delivery, the same when it is sent again: GitHub's
/// `X-GitHub-Delivery`, Gitea's and Forgejo's `X-Gitea-Delivery`, GitLab's
/// `Idempotency-Key` or `X-Gitlab-Event-UUID`, the generic endpoint's
/// `X-Runway-Delivery`.
pub fn delivery_id(source: Source, headers: &dyn Headers) -> Option<String> {
    let names: &[&str] = match source {
        Source::GitHub => &["x-github-delivery"],
        Source::Gitea => &["x-gitea-delivery", "x-forgejo-delivery"],
        Source::GitLab => &["idempotency-key", "x-gitlab-event-uuid"],
        Source::Generic => &["x-runway-delivery"],
    };
    names
        .iter()
        .find_map(|n| headers.get(n))
        .map(|v| v.trim().chars().take(200).collect::<String>())
        .filter(|v| !v.is_empty())
}

/// Checks and reads one delivery: the repository it names, its signature, its event,
/// then the push or the pull request.
pub fn read(
    source: Source,
    headers: &dyn Headers,
    body: &[u8],
    cfg: &ServerConfig,
) -> Result<Intake, Refusal> {
    let v = json(body)?;
    let repo = verified_repo(source, headers, body, &v, cfg)?;
    let event = event_name(source, headers, &v);
    if event == "ping" {
        return Err(Refusal::Nothing("pong".into()));
    }
    let id = delivery_id(source, headers).map(|id| format!("{}:{id}", source.name()));
    match event.as_str() {
        "push" | "tag_push" if source == Source::Generic => {
            generic_push(&v, repo, id).map(Intake::Push)
        }
        "push" | "tag_push" => forge_push(&v, repo, id).map(Intake::Push),
        "pull_request" if matches!(source, Source::GitHub | Source::Gitea) => {
            pull_request(source, &v, repo, id)
        }
        "merge_request" if source == Source::GitLab => merge_request(&v, repo, id),
        _ => Err(Refusal::Nothing(format!(
            "ignored: runway builds pushes and pull requests, not {event} events"
        ))),
    }
}

/// A number at `path`.
fn number(v: &serde_json::Value, path: &str) -> Option<u64> {
    v.pointer(path)?.as_u64()
}

/// A string at `path` (a JSON pointer).
fn at(v: &serde_json::Value, path: &str) -> Option<String> {
    v.pointer(path)?.as_str().map(str::to_string)
}

/// A pull request's head commit as the payload names it: refused unless it is a git
/// object id (it goes to git's command line when runway merges).
fn commit_id(v: Option<String>, what: &str) -> Result<String, Refusal> {
    match v {
        Some(id) if crate::source::is_object_id(&id) => Ok(id),
        Some(id) => Err(Refusal::Malformed(format!(
            "the pull request's {what} {id:?} is not a commit id"
        ))),
        None => Err(Refusal::Malformed(format!(
            "the pull request has no {what}"
        ))),
    }
}

/// GitHub's and Gitea's `pull_request` event.
fn pull_request(
    source: Source,
    v: &serde_json::Value,
    repo: String,
    id: Option<String>,
) -> Result<Intake, Refusal> {
    let action = at(v, "/action").unwrap_or_default();
    let number = number(v, "/number")
        .or_else(|| number(v, "/pull_request/number"))
        .ok_or_else(|| Refusal::Malformed("the pull request has no number".into()))?;
    match action.as_str() {
        // Gitea says `synchronized`, GitHub `synchronize`.
        "opened" | "synchronize" | "synchronized" | "reopened" | "ready_for_review" => {}
        "closed" => return Ok(Intake::Closed { repo, number }),
        other => {
            return Err(Refusal::Nothing(format!(
                "pull request #{number} {other}: nothing to build (runway builds a pull request when it is opened, reopened, ready for review or its head moves)"
            )));
        }
    }
    let missing = |what: &str| Refusal::Malformed(format!("the pull request has no {what}"));
    let head_sha = commit_id(at(v, "/pull_request/head/sha"), "head.sha")?;
    let base_branch = at(v, "/pull_request/base/ref").ok_or_else(|| missing("base.ref"))?;
    Ok(Intake::Pull(PullDelivery {
        number,
        base_branch,
        base_sha: at(v, "/pull_request/base/sha").filter(|b| crate::source::is_object_id(b)),
        head_branch: at(v, "/pull_request/head/ref").unwrap_or_default(),
        head_sha,
        head_slug: at(v, "/pull_request/head/repo/full_name").unwrap_or_default(),
        title: at(v, "/pull_request/title").unwrap_or_default(),
        head_ref: format!("refs/pull/{number}/head"),
        merge_ref: (source == Source::GitHub).then(|| format!("refs/pull/{number}/merge")),
        repo,
        id,
    }))
}

/// GitLab's `merge_request` event.
fn merge_request(
    v: &serde_json::Value,
    repo: String,
    id: Option<String>,
) -> Result<Intake, Refusal> {
    let attrs = "/object_attributes";
    let number = number(v, &format!("{attrs}/iid"))
        .ok_or_else(|| Refusal::Malformed("the merge request has no iid".into()))?;
    let action = at(v, &format!("{attrs}/action")).unwrap_or_default();
    match action.as_str() {
        "open" | "reopen" => {}
        // An update without `oldrev` changed no commit (a title, a label).
        "update" if v.pointer(&format!("{attrs}/oldrev")).is_some() => {}
        "close" | "merge" => return Ok(Intake::Closed { repo, number }),
        other => {
            return Err(Refusal::Nothing(format!(
                "merge request !{number} {}: nothing to build (runway builds a merge request when it is opened, reopened or its source branch moves)",
                if other.is_empty() { "changed" } else { other }
            )));
        }
    }
    let missing = |what: &str| Refusal::Malformed(format!("the merge request has no {what}"));
    Ok(Intake::Pull(PullDelivery {
        number,
        base_branch: at(v, &format!("{attrs}/target_branch"))
            .ok_or_else(|| missing("target_branch"))?,
        base_sha: None,
        head_branch: at(v, &format!("{attrs}/source_branch")).unwrap_or_default(),
        head_sha: commit_id(at(v, &format!("{attrs}/last_commit/id")), "last_commit.id")?,
        head_slug: at(v, &format!("{attrs}/source/path_with_namespace")).unwrap_or_default(),
        title: at(v, &format!("{attrs}/title")).unwrap_or_default(),
        head_ref: format!("refs/merge-requests/{number}/head"),
        merge_ref: None,
        repo,
        id,
    }))
}

/// The configured repository a delivery names, once its signature is checked against
/// that repository's secret.
fn verified_repo(
    source: Source,
    headers: &dyn Headers,
    body: &[u8],
    v: &serde_json::Value,
    cfg: &ServerConfig,
) -> Result<String, Refusal> {
    let name = match source {
        Source::GitLab => text(v, &["project", "path_with_namespace"]),
        Source::Generic => text(v, &["repo"]),
        _ => text(v, &["repository", "full_name"]),
    }
    .ok_or_else(|| Refusal::Malformed("the payload names no repository".into()))?;
    // An unsigned or wrongly signed delivery is 401 whatever repository it names, so
    // nobody learns which repositories runway builds; only a delivery signed with a
    // configured repository's secret hears that its name is unknown (404).
    let Some(repo) = cfg.repo(&name) else {
        let signed_by_one = cfg
            .repos
            .iter()
            .filter_map(|r| r.secret())
            .any(|secret| verify(source, headers, body, &secret).is_ok());
        return Err(if signed_by_one {
            Refusal::UnknownRepo(format!(
                "runway does not build {name}: add a [[repo]] with name = \"{name}\" to runway.toml"
            ))
        } else {
            unverified(source, headers)
        });
    };
    // A repository without a secret refuses every delivery, with the same answer.
    let secret = repo.secret().ok_or_else(|| unverified(source, headers))?;
    verify(source, headers, body, &secret)?;
    Ok(repo.name.clone())
}

/// The forge's name for the event (`push`, `tag_push`, `ping`, …).
fn event_name(source: Source, headers: &dyn Headers, v: &serde_json::Value) -> String {
    match source {
        Source::GitHub => headers
            .get("x-github-event")
            .unwrap_or_else(|| "push".into()),
        Source::Gitea => headers
            .get("x-gitea-event")
            .or_else(|| headers.get("x-forgejo-event"))
            .unwrap_or_else(|| "push".into()),
        Source::GitLab => text(v, &["object_kind"]).unwrap_or_default(),
        Source::Generic => "push".into(),
    }
}

/// runway's own payload: `{repo, branch | tag, commit, before?, message?}`.
fn generic_push(
    v: &serde_json::Value,
    repo: String,
    id: Option<String>,
) -> Result<Delivery, Refusal> {
    let branch = text(v, &["branch"]);
    let tag = text(v, &["tag"]);
    let after = text(v, &["commit"])
        .ok_or_else(|| Refusal::Malformed("the payload has no commit".into()))?;
    if branch.is_none() && tag.is_none() {
        return Err(Refusal::Malformed(
            "the payload has neither branch nor tag".into(),
        ));
    }
    Ok(Delivery {
        repo,
        branch,
        tag,
        before: text(v, &["before"]).unwrap_or_default(),
        after,
        message: text(v, &["message"]).unwrap_or_default(),
        id,
    })
}

/// A GitHub, Gitea/Forgejo or GitLab push: its ref, its commits, and the head
/// commit's message; a deleted ref builds nothing.
fn forge_push(
    v: &serde_json::Value,
    repo: String,
    id: Option<String>,
) -> Result<Delivery, Refusal> {
    let refname =
        text(v, &["ref"]).ok_or_else(|| Refusal::Malformed("the payload has no ref".into()))?;
    let after = text(v, &["after"])
        .or_else(|| text(v, &["checkout_sha"]))
        .unwrap_or_default();
    if after.is_empty() || after.chars().all(|c| c == '0') {
        return Err(Refusal::Nothing(format!(
            "{refname} was deleted; nothing to build"
        )));
    }
    let (branch, tag) = if let Some(b) = refname.strip_prefix("refs/heads/") {
        (Some(b.to_string()), None)
    } else if let Some(t) = refname.strip_prefix("refs/tags/") {
        (None, Some(t.to_string()))
    } else {
        return Err(Refusal::Nothing(format!(
            "{refname} is not a branch or a tag"
        )));
    };
    let message = text(v, &["head_commit", "message"])
        .or_else(|| {
            let commits = v.pointer("/commits")?.as_array()?;
            Some(commits.last()?.pointer("/message")?.as_str()?.to_string())
        })
        .unwrap_or_default();
    Ok(Delivery {
        repo,
        branch,
        tag,
        before: text(v, &["before"]).unwrap_or_default(),
        after,
        message,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The signature is checked by the MAC itself, on its bytes.
    #[test]
    fn a_signature_is_the_macs_own_hex() {
        let good = sign("k", b"body");
        assert!(signed("k", b"body", Some(&good)));
        assert!(signed("k", b"body", Some(&good.to_uppercase())));
        assert!(!signed("k", b"bodY", Some(&good)));
        assert!(!signed("other", b"body", Some(&good)));
        assert!(!signed("k", b"body", Some(&good[1..])));
        assert!(!signed("k", b"body", Some(&format!("{}zz", &good[2..]))));
        assert!(!signed("k", b"body", None));
    }

    struct H(HashMap<&'static str, String>);
    impl Headers for H {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn cfg() -> ServerConfig {
        // SAFETY: tests set a variable only they read.
        unsafe { std::env::set_var("RUNWAY_TEST_HOOK_SECRET", "s3cr3t") };
        toml::from_str("[[repo]]\nname = \"o/app\"\nurl = \"/tmp/x\"\nwebhook_secret_env = \"RUNWAY_TEST_HOOK_SECRET\"\n").unwrap()
    }

    const PUSH: &str = r#"{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":"abc123","repository":{"full_name":"o/app"},"head_commit":{"message":"hi"}}"#;

    #[test]
    fn github_signature_checked() {
        let c = cfg();
        let sig = format!("sha256={}", sign("s3cr3t", PUSH.as_bytes()));
        let ok = H([
            ("x-hub-signature-256", sig),
            ("x-github-event", "push".into()),
        ]
        .into());
        let Ok(Intake::Push(d)) = read(Source::GitHub, &ok, PUSH.as_bytes(), &c) else {
            panic!("a push")
        };
        assert_eq!(
            (d.branch.as_deref(), d.after.as_str(), d.message.as_str()),
            (Some("main"), "abc123", "hi")
        );
        let tampered = PUSH.replace("abc123", "evil00");
        assert!(matches!(
            read(Source::GitHub, &ok, tampered.as_bytes(), &c),
            Err(Refusal::Unauthorized(_))
        ));
        assert!(matches!(
            read(Source::GitHub, &H(HashMap::new()), PUSH.as_bytes(), &c),
            Err(Refusal::Unauthorized(_))
        ));
        assert!(matches!(
            read(Source::GitHub, &ok, b"not json", &c),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn gitlab_token_and_generic_bearer() {
        let c = cfg();
        let gl = r#"{"object_kind":"push","ref":"refs/tags/v1","before":"1","after":"2","project":{"path_with_namespace":"o/app"},"commits":[{"message":"m"}]}"#;
        let Ok(Intake::Push(d)) = read(
            Source::GitLab,
            &H([("x-gitlab-token", "s3cr3t".to_string())].into()),
            gl.as_bytes(),
            &c,
        ) else {
            panic!("a push")
        };
        assert_eq!(d.tag.as_deref(), Some("v1"));
        let g = r#"{"repo":"o/app","branch":"dev","commit":"fff"}"#;
        let Ok(Intake::Push(d)) = read(
            Source::Generic,
            &H([("authorization", "Bearer s3cr3t".to_string())].into()),
            g.as_bytes(),
            &c,
        ) else {
            panic!("a push")
        };
        assert_eq!(d.branch.as_deref(), Some("dev"));
        assert!(
            read(
                Source::Generic,
                &H([("authorization", "Bearer nope".to_string())].into()),
                g.as_bytes(),
                &c
            )
            .is_err()
        );
    }

    /// Pull requests: GitHub's and Gitea's `pull_request`, GitLab's `merge_request`;
    /// which actions build, which cancel, which are answered with a reason.
    #[test]
    fn pull_requests_from_each_forge() {
        let c = cfg();
        let pr = |action: &str| {
            serde_json::json!({"action": action, "number": 7, "pull_request": {
                "title": "t", "head": {"ref": "f", "sha": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "repo": {"full_name": "fork/app"}},
                "base": {"ref": "main", "sha": "bbb", "repo": {"full_name": "o/app"}}},
                "repository": {"full_name": "o/app"}})
            .to_string()
        };
        let github = |body: &str| {
            let sig = format!("sha256={}", sign("s3cr3t", body.as_bytes()));
            let h = H([
                ("x-hub-signature-256", sig),
                ("x-github-event", "pull_request".to_string()),
            ]
            .into());
            read(Source::GitHub, &h, body.as_bytes(), &c)
        };
        let Ok(Intake::Pull(p)) = github(&pr("synchronize")) else {
            panic!("builds")
        };
        assert_eq!(
            (
                p.number,
                p.base_branch.as_str(),
                p.head_sha.as_str(),
                p.fork()
            ),
            (7, "main", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true)
        );
        assert_eq!(p.merge_ref.as_deref(), Some("refs/pull/7/merge"));
        assert_eq!(
            github(&pr("closed")),
            Ok(Intake::Closed {
                repo: "o/app".into(),
                number: 7
            })
        );
        assert!(
            matches!(github(&pr("labeled")), Err(Refusal::Nothing(r)) if r.contains("#7 labeled"))
        );
        // Gitea: `synchronized`, no merge ref of its own.
        let body = pr("synchronized");
        let h = H([
            ("x-gitea-signature", sign("s3cr3t", body.as_bytes())),
            ("x-gitea-event", "pull_request".to_string()),
        ]
        .into());
        let Ok(Intake::Pull(p)) = read(Source::Gitea, &h, body.as_bytes(), &c) else {
            panic!("builds")
        };
        assert_eq!(p.merge_ref, None);
        // GitLab: an update builds only when it moved the source branch (`oldrev`).
        let mr = |action: &str, oldrev: bool| {
            let mut attrs = serde_json::json!({"iid": 3, "action": action, "source_branch": "f",
                "target_branch": "main", "title": "t", "last_commit": {"id": "cccccccccccccccccccccccccccccccccccccccc"},
                "source": {"path_with_namespace": "o/app"}});
            if oldrev {
                attrs["oldrev"] = "ddd".into();
            }
            serde_json::json!({"object_kind": "merge_request", "object_attributes": attrs,
                "project": {"path_with_namespace": "o/app"}})
            .to_string()
        };
        let gitlab = |body: String| {
            let h = H([("x-gitlab-token", "s3cr3t".to_string())].into());
            read(Source::GitLab, &h, body.as_bytes(), &c)
        };
        let Ok(Intake::Pull(p)) = gitlab(mr("update", true)) else {
            panic!("builds")
        };
        assert_eq!(
            (p.number, p.head_ref.as_str(), p.fork()),
            (3, "refs/merge-requests/3/head", false)
        );
        assert!(matches!(
            gitlab(mr("update", false)),
            Err(Refusal::Nothing(_))
        ));
        assert!(matches!(
            gitlab(mr("merge", false)),
            Ok(Intake::Closed { number: 3, .. })
        ));
    }
}
