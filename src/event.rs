//! What triggered a build: the repository, the ref (branch or tag), the event type and
//! the commit. Every trigger (command line, post-receive hook, webhook) makes one.

use std::fmt;
use std::str::FromStr;

/// Travis's event types (`TRAVIS_EVENT_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EventType {
    /// A push.
    #[default]
    Push,
    /// A pull request (`TRAVIS_BRANCH` is then the base branch).
    PullRequest,
    /// A build asked for through the API.
    Api,
    /// A scheduled build.
    Cron,
}

impl EventType {
    /// The name Travis uses.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Push => "push",
            EventType::PullRequest => "pull_request",
            EventType::Api => "api",
            EventType::Cron => "cron",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "push" => Ok(EventType::Push),
            "pull_request" | "pr" => Ok(EventType::PullRequest),
            "api" => Ok(EventType::Api),
            "cron" => Ok(EventType::Cron),
            _ => Err(format!(
                "unknown event \"{s}\" (expected push, pull_request, api or cron)"
            )),
        }
    }
}

/// A commit's author or committer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Person {
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
}

/// One trigger of a build.
#[derive(Clone, Debug, Default)]
pub struct BuildEvent {
    /// `owner/repo` (`TRAVIS_REPO_SLUG`).
    pub repo: String,
    /// The branch pushed, or for a pull request its base branch. `None` for a tag push.
    pub branch: Option<String>,
    /// The tag pushed, if this is a tag build.
    pub tag: Option<String>,
    /// push, pull_request, api or cron.
    pub event: EventType,
    /// The commit sha (may be empty for a rehearsal of uncommitted files).
    pub commit: String,
    /// The full commit message.
    pub commit_message: String,
    /// `first...last` of the push, empty on a new branch's first push.
    pub commit_range: String,
    /// The commit's author.
    pub author: Option<Person>,
    /// The commit's committer.
    pub committer: Option<Person>,
    /// The pull request, for a pull request's build.
    pub pull_request: Option<PullRequest>,
    /// The repository's default branch (for the cache fallback; deploys use `master`).
    pub default_branch: String,
}

impl BuildEvent {
    /// The reference a copy of the repository that holds many builds' commits (a
    /// worker's) shows for this build: its tag, else its branch, else
    /// `refs/heads/runway-build`.
    pub fn ref_name(&self) -> String {
        match (&self.tag, &self.branch) {
            (Some(t), _) => format!("refs/tags/{t}"),
            (None, Some(b)) => format!("refs/heads/{b}"),
            (None, None) => "refs/heads/runway-build".to_string(),
        }
    }
}

/// A pull request being built: its number and head (the build runs on the merge of the
/// head into the base, whose branch is [`BuildEvent::branch`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullRequest {
    /// Its number (`TRAVIS_PULL_REQUEST`).
    pub number: u64,
    /// The head's branch (`TRAVIS_PULL_REQUEST_BRANCH`).
    pub head_branch: String,
    /// The head's commit (`TRAVIS_PULL_REQUEST_SHA`).
    pub head_sha: String,
    /// The head's repository, `owner/repo` (`TRAVIS_PULL_REQUEST_SLUG`).
    pub head_slug: String,
    /// The base's commit the head was merged into.
    #[serde(default)]
    pub base_sha: String,
    /// From a repository other than the one built (a fork): no secret settings, no
    /// deploys.
    #[serde(default)]
    pub fork: bool,
    /// runway made the merge commit (the forge offered none); any node makes the same
    /// one again from the two commits ([`crate::source::merge`]).
    #[serde(default)]
    pub merged_by_runway: bool,
}

impl BuildEvent {
    /// The pull request's number, for a pull request's build.
    pub fn pull_request_number(&self) -> Option<u64> {
        self.pull_request.as_ref().map(|p| p.number)
    }

    /// `TRAVIS_BRANCH`: the branch, or the tag name for tag builds.
    pub fn travis_branch(&self) -> &str {
        self.tag
            .as_deref()
            .or(self.branch.as_deref())
            .unwrap_or_default()
    }
}

/// `TRAVIS_COMMIT_RANGE` of a push from `before` to `after`: `before...after`, or empty
/// for a new branch or tag (`before` empty or all zeros, as git and webhooks send it).
pub fn commit_range(before: &str, after: &str) -> String {
    if before.chars().all(|c| c == '0') {
        String::new()
    } else {
        format!("{before}...{after}")
    }
}
