//! The forge loop (issue 26): pull requests from GitHub, Gitea and GitLab build the
//! merge of their head into their base with Travis's variables, forks see no secret,
//! a conflicting head is errored, a closed pull request's build is canceled.

use super::*;

/// A GitHub `pull_request` delivery, shaped as GitHub sends it (the fields runway
/// reads, as in `@octokit/webhooks-examples`).
pub(super) fn github_pr(
    action: &str,
    number: u64,
    head: (&str, &str, &str),
    base_sha: &str,
) -> Vec<u8> {
    let (head_ref, head_sha, head_repo) = head;
    serde_json::to_vec(&serde_json::json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "title": format!("PR {number}"),
            "head": {"ref": head_ref, "sha": head_sha, "repo": {"full_name": head_repo}},
            "base": {"ref": "master", "sha": base_sha, "repo": {"full_name": "o/app"}},
        },
        "repository": {"full_name": "o/app"},
    }))
    .unwrap()
}

/// Delivers `body` as GitHub event `event`, signed; (status, body).
pub(super) fn deliver(srv: &Server, event: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let sig = format!("sha256={}", sign(SECRET, body));
    let (code, text) = srv.request(
        "POST",
        "/hooks/github",
        &[("X-GitHub-Event", event), ("X-Hub-Signature-256", &sig)],
        body,
    );
    (
        code,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}")),
    )
}

fn build(srv: &Server, n: u64) -> serde_json::Value {
    srv.json(&format!("/api/builds/{n}"))
}

fn log(srv: &Server, n: u64) -> String {
    srv.request("GET", &format!("/api/builds/{n}/log"), &[], b"")
        .1
}

fn ended(srv: &Server, n: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = came_true(|| {
        last = build(srv, n);
        !matches!(
            last["state"].as_str(),
            Some("queued" | "running" | "awaiting_approval")
        )
    });
    assert!(done, "build #{n} never ended: {last}\n{}", log(srv, n));
    last
}

/// Pushes the work tree's `branch` to the hub as `refs/pull/N/head`, as a forge keeps
/// a pull request's head; its sha.
pub(super) fn open_head(s: &Setup, branch: &str, number: u64) -> String {
    git(
        &s.work,
        &[
            "push",
            "-q",
            "-f",
            "hub",
            &format!("{branch}:refs/pull/{number}/head"),
        ],
    );
    git(&s.work, &["rev-parse", branch])
}

/// Commits `file` with `text` on `branch` (made from `from` when new); its sha.
pub(super) fn change(s: &Setup, branch: &str, from: &str, file: &str, text: &str) -> String {
    if git(&s.work, &["branch", "--list", branch]).is_empty() {
        git(&s.work, &["checkout", "-q", "-b", branch, from]);
    } else {
        git(&s.work, &["checkout", "-q", branch]);
    }
    std::fs::write(s.work.join(file), text).unwrap();
    git(&s.work, &["add", file]);
    git(
        &s.work,
        &["commit", "-q", "-m", &format!("{branch}: {file}")],
    );
    git(&s.work, &["rev-parse", "HEAD"])
}

const PR_YML: &str = "language: shell\n\
branches:\n  only: [master]\n\
script:\n\
\x20 - echo \"PR=$TRAVIS_PULL_REQUEST BRANCH=$TRAVIS_BRANCH PRB=$TRAVIS_PULL_REQUEST_BRANCH SHA=$TRAVIS_PULL_REQUEST_SHA SLUG=$TRAVIS_PULL_REQUEST_SLUG EVENT=$TRAVIS_EVENT_TYPE COMMIT=$TRAVIS_COMMIT\"\n\
\x20 - echo \"SECRET=${SECRET_TOKEN:-none} PUBLIC=${PUBLIC_NAME:-none}\"\n\
\x20 - cat base.txt feature.txt 2>/dev/null || true\n\
\x20 - if [ \"$TRAVIS_PULL_REQUEST_BRANCH\" = slow ]; then echo SLOW-STARTED; sleep 600; fi\n\
deploy:\n  provider: s3\n  bucket: never\n  on:\n    branch: release\n";

const REPO_TOML: &str = "public = [\"PUBLIC_NAME\"]\n[repo.env]\nSECRET_TOKEN = \"tok-8812-secret\"\nPUBLIC_NAME = \"shown-value\"\n";

/// Issue 26, item 1 and 2 in part: a pull request from a branch and one from a fork
/// build the merge of their head into master with Travis's variables, deploy nothing;
/// the fork's job sees no secret setting; a conflicting head is errored "cannot be
/// merged"; GitHub's own merge ref is used while it merges this head; a closed pull
/// request's running build is canceled; pushes of master are neither canceled by nor
/// cancel the pull requests' builds.
#[test]
fn pull_requests_build_the_merge_of_head_into_base() {
    let s = Setup::new(PR_YML, "api_token_env = \"RUNWAY_TEST_API_TOKEN\"");
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str(REPO_TOML);
    std::fs::write(&s.config, toml).unwrap();
    let first = s.head();
    let base = change(&s, "master", "master", "base.txt", "base line\n");
    git(&s.work, &["push", "-q", "hub", "master"]);

    // A pull request from a branch of the repository.
    let head = change(&s, "feature", &first, "feature.txt", "feature line\n");
    open_head(&s, "feature", 1);
    let srv = s.start();
    let (code, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("opened", 1, ("feature", &head, "o/app"), &base),
    );
    assert_eq!(code, 202, "{said}");
    let n = said["number"].as_u64().unwrap();
    let b = ended(&srv, n);
    let text = log(&srv, n);
    assert_eq!(b["state"], "passed", "{b}\n{text}");
    let merge = b["commit"].as_str().unwrap().to_string();
    assert!(merge != head && merge != base, "{b}");
    assert!(
        text.contains(&format!(
            "PR=1 BRANCH=master PRB=feature SHA={head} SLUG=o/app EVENT=pull_request COMMIT={merge}"
        )),
        "{text}"
    );
    assert!(
        text.contains("base line") && text.contains("feature line"),
        "the merge has both sides: {text}"
    );
    assert!(
        text.contains("SECRET=[secure] PUBLIC=shown-value"),
        "{text}"
    );
    let deploys = b["jobs"][0]["deploys"].to_string();
    assert!(
        deploys.contains("the current build is a pull request"),
        "{deploys}"
    );
    // runway's merge, in its own repository beside the state (the hub is not written).
    let merges = s.state().join("merges/o/app.git");
    let parents = git(&merges, &["log", "-1", "--format=%P", &merge]);
    assert_eq!(parents, format!("{base} {head}"));
    let in_hub = std::process::Command::new("git")
        .arg("-C")
        .arg(&s.bare)
        .args(["cat-file", "-e", &merge])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        !in_hub.success(),
        "runway wrote its merge into the repository it builds"
    );

    // From a fork: it waits for an approval (fork_prs = "approve", the default); a new
    // push to it needs a new one; approved, it runs without the secret setting.
    let fork_first = change(&s, "fork-work", &first, "feature.txt", "first try\n");
    open_head(&s, "fork-work", 2);
    let (code, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("opened", 2, ("patch-1", &fork_first, "stranger/app"), &base),
    );
    assert_eq!(code, 202, "{said}");
    let waiting = said["number"].as_u64().unwrap();
    let w = build(&srv, waiting);
    assert_eq!(w["state"], "awaiting_approval", "{w}");
    assert!(
        w["reason"]
            .as_str()
            .unwrap()
            .contains("comes from a fork (stranger/app)"),
        "{w}"
    );
    let fork_head = change(&s, "fork-work", &first, "feature.txt", "from a fork\n");
    open_head(&s, "fork-work", 2);
    let (code, said) = deliver(
        &srv,
        "pull_request",
        &github_pr(
            "synchronize",
            2,
            ("patch-1", &fork_head, "stranger/app"),
            &base,
        ),
    );
    assert_eq!(code, 202, "{said}");
    assert_eq!(said["canceled"], serde_json::json!([waiting]), "{said}");
    let n2 = said["number"].as_u64().unwrap();
    assert_eq!(build(&srv, n2)["state"], "awaiting_approval");
    let approve = format!("/api/builds/{n2}/approve?repo=o/app");
    let (code, text) = srv.request("POST", &approve, &[], b"");
    assert_eq!(code, 401, "nobody approves without the token: {text}");
    assert_eq!(build(&srv, n2)["state"], "awaiting_approval");
    let bearer = format!("Bearer {API_TOKEN}");
    let (code, text) = srv.request("POST", &approve, &[("Authorization", &bearer)], b"");
    assert_eq!(code, 200, "{text}");
    let (code, text) = srv.request("POST", &approve, &[("Authorization", &bearer)], b"");
    assert_eq!(code, 409, "approved once: {text}");
    let b2 = ended(&srv, n2);
    let text2 = log(&srv, n2);
    assert_eq!(b2["state"], "passed", "{b2}\n{text2}");
    // Who approved it, in its audit trail and its reason.
    assert_eq!(b2["audit"][0]["action"], "approve", "{b2}");
    assert_eq!(b2["audit"][0]["who"], "the API token", "{b2}");
    assert!(
        text2.contains(&format!("SHA={fork_head} SLUG=stranger/app")),
        "{text2}"
    );
    assert!(text2.contains("SECRET=none PUBLIC=shown-value"), "{text2}");
    assert!(!text2.contains("tok-8812"), "{text2}");

    // A head that conflicts with master.
    let clash = change(&s, "clash", &first, "base.txt", "another base line\n");
    open_head(&s, "clash", 3);
    let (code, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("opened", 3, ("clash", &clash, "o/app"), &base),
    );
    assert_eq!(code, 202, "{said}");
    let b3 = ended(&srv, said["number"].as_u64().unwrap());
    assert_eq!(b3["state"], "errored", "{b3}");
    assert!(
        b3["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot be merged into master"),
        "{b3}"
    );
    assert!(
        b3["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("base.txt"),
        "{b3}"
    );

    // GitHub's merge ref, while it is the merge of this head into this base, is built.
    let ours = change(&s, "ours", &first, "feature.txt", "ours\n");
    open_head(&s, "ours", 5);
    git(&s.work, &["checkout", "-q", "--detach", &base]);
    git(
        &s.work,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "Merge ours into master",
            &ours,
        ],
    );
    let forge_merge = git(&s.work, &["rev-parse", "HEAD"]);
    git(
        &s.work,
        &["push", "-q", "-f", "hub", "HEAD:refs/pull/5/merge"],
    );
    let (_, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("opened", 5, ("ours", &ours, "o/app"), &base),
    );
    let b5 = ended(&srv, said["number"].as_u64().unwrap());
    assert_eq!(b5["commit"], forge_merge.as_str(), "{b5}");
    assert_eq!(b5["state"], "passed", "{b5}");

    // A push of master builds beside them, and a pull request's build cancels no push.
    let pushed = change(&s, "master", "master", "base.txt", "base line\nmore\n");
    git(&s.work, &["push", "-q", "hub", "master"]);
    let (code, text) = generic(&srv, "master", &pushed);
    assert_eq!(code, 202, "{text}");
    let push_n: u64 = serde_json::from_str::<serde_json::Value>(&text).unwrap()["number"]
        .as_u64()
        .unwrap();

    // Closed while it runs: canceled.
    let slow = change(&s, "slow", &first, "feature.txt", "slow\n");
    open_head(&s, "slow", 4);
    let (code, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("opened", 4, ("slow", &slow, "o/app"), &pushed),
    );
    assert_eq!(code, 202, "{said}");
    let n4 = said["number"].as_u64().unwrap();
    wait_for(
        || log(&srv, n4).contains("SLOW-STARTED"),
        "the slow build to start",
    );
    let (code, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("closed", 4, ("slow", &slow, "o/app"), &pushed),
    );
    assert_eq!(code, 200, "{said}");
    assert_eq!(said["canceled"], serde_json::json!([n4]), "{said}");
    let b4 = ended(&srv, n4);
    assert_eq!(b4["state"], "canceled", "{b4}");
    let pb = ended(&srv, push_n);
    assert_eq!(pb["state"], "passed", "{pb}\n{}", log(&srv, push_n));
    assert_eq!(pb["event"], "push", "{pb}");
}

/// Issue 26 (1): auto-cancel per repository for pushes and pull requests, as Travis had
/// it: with `auto_cancel_pull_requests = false` a new push to a pull request leaves its
/// older build (waiting for approval) alone; a push's builds still supersede.
#[test]
fn auto_cancel_is_set_for_pushes_and_pull_requests_apart() {
    let s = Setup::new(PR_YML, "");
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str("auto_cancel_pull_requests = false\n");
    std::fs::write(&s.config, toml).unwrap();
    let srv = s.start();
    let first = s.head();
    let mut waiting = Vec::new();
    for (i, text) in ["one\n", "two\n"].iter().enumerate() {
        let head = change(&s, "fork", &first, "f.txt", text);
        open_head(&s, "fork", 3);
        let action = if i == 0 { "opened" } else { "synchronize" };
        let (code, said) = deliver(
            &srv,
            "pull_request",
            &github_pr(action, 3, ("fork", &head, "stranger/app"), &first),
        );
        assert_eq!(code, 202, "{said}");
        assert_eq!(said["canceled"], serde_json::json!([]), "{said}");
        waiting.push(said["number"].as_u64().unwrap());
    }
    for n in waiting {
        assert_eq!(build(&srv, n)["state"], "awaiting_approval");
    }
}

/// The statuses a contract server received for `sha`, as (context, state), in order.
fn statuses_for(calls: &[crate::common::contract::Call], sha: &str) -> Vec<(String, String)> {
    calls
        .iter()
        .filter(|c| c.path.ends_with(&format!("/statuses/{sha}")))
        .map(|c| {
            let v = c.json();
            (
                v["context"].as_str().unwrap_or_default().to_string(),
                v["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Issue 26, item 3: each build posts `pending` when queued and its end to the forge,
/// for the commit built (a pull request's head), context `runway/push` or `runway/pr`,
/// linking its page; every request valid by GitHub's own OpenAPI description (Prism
/// answers anything else 422). A forge that cannot be reached holds up nothing: the
/// build passes, its page says the status was not posted and why.
#[test]
fn builds_post_their_states_to_the_forge_as_github_describes() {
    let contract = crate::common::contract::Contract::github_statuses();
    let s = Setup::new(PR_YML, "public_url = \"https://ci.example\"");
    let toml = std::fs::read_to_string(&s.config).unwrap();
    let with_api = format!(
        "{toml}api_url = \"http://{}\"\nstatus_token_env = \"RUNWAY_TEST_STATUS_TOKEN\"\n",
        contract.addr
    );
    std::fs::write(&s.config, &with_api).unwrap();
    let token = "ghs_status-token-4417";
    let srv = Server::start(
        &s.config,
        &s.state(),
        &[("APP_SECRET", SECRET), ("RUNWAY_TEST_STATUS_TOKEN", token)],
    );
    let first = s.head();
    let (code, text) = generic(&srv, "master", &first);
    assert_eq!(code, 202, "{text}");
    let n = serde_json::from_str::<serde_json::Value>(&text).unwrap()["number"]
        .as_u64()
        .unwrap();
    assert_eq!(ended(&srv, n)["state"], "passed");

    let head = change(&s, "feature", &first, "feature.txt", "feature\n");
    open_head(&s, "feature", 1);
    let (code, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("opened", 1, ("feature", &head, "o/app"), &first),
    );
    assert_eq!(code, 202, "{said}");
    let pr_n = said["number"].as_u64().unwrap();
    assert_eq!(ended(&srv, pr_n)["state"], "passed");
    let clash = change(
        &s,
        "clash",
        &first,
        ".travis.yml",
        "language: shell\nscript: true\n",
    );
    git(&s.work, &["checkout", "-q", "master"]);
    let base = change(
        &s,
        "master",
        "master",
        ".travis.yml",
        &format!("{PR_YML}# moved\n"),
    );
    git(&s.work, &["push", "-q", "hub", "master"]);
    open_head(&s, "clash", 2);
    let (_, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("opened", 2, ("clash", &clash, "o/app"), &base),
    );
    let clash_n = said["number"].as_u64().unwrap();
    assert_eq!(ended(&srv, clash_n)["state"], "errored");

    let want = |sha: &str, expected: &[(&str, &str)]| {
        let mut got = Vec::new();
        let done = came_true(|| {
            got = statuses_for(&contract.calls(), sha);
            got.len() >= expected.len()
        });
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(c, s)| (c.to_string(), s.to_string()))
            .collect();
        assert!(
            done && got == expected,
            "{sha}: {got:?}, not {expected:?}\n{:#?}",
            contract.calls()
        );
    };
    // Pending while queued (and again while running, when the poster saw it), then the end.
    let mut ends = Vec::new();
    let got_end = came_true(|| {
        ends = statuses_for(&contract.calls(), &first);
        ends.last().is_some_and(|l| l.1 == "success")
    });
    assert!(got_end, "{ends:?}");
    assert_eq!(ends[0], ("runway/push".to_string(), "pending".to_string()));
    assert!(
        ends.iter()
            .all(|(c, s)| c == "runway/push" && (s == "pending" || s == "success")),
        "{ends:?}"
    );
    let got_pr = came_true(|| {
        statuses_for(&contract.calls(), &head)
            .last()
            .is_some_and(|l| l.1 == "success")
    });
    assert!(got_pr, "{:#?}", contract.calls());
    let pr_states = statuses_for(&contract.calls(), &head);
    assert_eq!(
        pr_states[0],
        ("runway/pr".to_string(), "pending".to_string())
    );
    want(&clash, &[("runway/pr", "error")]);
    for c in contract.calls() {
        assert_eq!(c.status, 201, "the contract refused {c:?}: {}", c.answer);
        assert_eq!(c.method, "POST");
        assert_eq!(
            c.header("authorization"),
            Some(format!("token {token}").as_str())
        );
        let v = c.json();
        let url = v["target_url"].as_str().unwrap_or_default();
        assert!(url.starts_with("https://ci.example/builds/"), "{v}");
        assert!(
            v["description"].as_str().unwrap_or_default().len() <= 140,
            "{v}"
        );
    }
    let clash_call = contract
        .calls()
        .into_iter()
        .find(|c| c.path.ends_with(&clash))
        .unwrap();
    assert!(
        clash_call.json()["description"]
            .as_str()
            .unwrap()
            .contains("cannot be merged into master"),
        "{clash_call:#?}"
    );
    let page = srv
        .request("GET", &format!("/builds/{pr_n}?repo=o/app"), &[], b"")
        .1;
    assert!(page.contains("runway/pr"), "{page}");
    assert!(!page.contains(token));
    drop(srv);

    // A forge nobody answers at: the build passes; its page says what became of it.
    let dead = crate::common::free_port();
    std::fs::write(
        &s.config,
        with_api.replace(&contract.addr, &format!("127.0.0.1:{dead}")),
    )
    .unwrap();
    let srv = Server::start(
        &s.config,
        &s.state(),
        &[("APP_SECRET", SECRET), ("RUNWAY_TEST_STATUS_TOKEN", token)],
    );
    let again = change(&s, "master", "master", "base.txt", "again\n");
    git(&s.work, &["push", "-q", "hub", "master"]);
    let (code, text) = generic(&srv, "master", &again);
    assert_eq!(code, 202, "{text}");
    let n = serde_json::from_str::<serde_json::Value>(&text).unwrap()["number"]
        .as_u64()
        .unwrap();
    assert_eq!(ended(&srv, n)["state"], "passed");
    let mut last = serde_json::Value::Null;
    let said = came_true(|| {
        last = build(&srv, n)["statuses"].clone();
        last.as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s["attempts"].as_u64().unwrap_or(0) >= 1 && s["outcome"] == "pending")
        })
    });
    assert!(said, "{last}");
    assert!(last.to_string().contains("error"), "{last}");
    let page = srv
        .request("GET", &format!("/builds/{n}?repo=o/app"), &[], b"")
        .1;
    assert!(page.contains("not posted yet"), "{page}");
}

/// Issue 26, item 4: `POST /api/repos/OWNER/REPO/requests` (the API token) builds a
/// branch's tip as event `api`, its config laid on the `.travis.yml` by Travis's merge
/// modes; without the token, with an unknown branch or merge mode, it is refused.
#[test]
fn api_requests_build_a_branch_with_each_merge_mode() {
    let yml = "language: shell\nenv:\n  global:\n    - FROM_FILE=yes\nscript: echo \"FILE-SCRIPT ${FROM_FILE:-none} ${FROM_API:-none} $TRAVIS_EVENT_TYPE\"\nnotifications:\n  email: false\n";
    let s = Setup::new(yml, "api_token_env = \"RUNWAY_TEST_API_TOKEN\"");
    let srv = s.start();
    let bearer = format!("Bearer {API_TOKEN}");
    let ask = |body: serde_json::Value, token: Option<&str>| {
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(t) = token {
            headers.push(("Authorization", t));
        }
        let (code, text) = srv.request(
            "POST",
            "/api/repos/o/app/requests",
            &headers,
            body.to_string().as_bytes(),
        );
        (
            code,
            serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|_| text.into()),
        )
    };
    let request = |config: serde_json::Value, mode: &str| serde_json::json!({"request": {"branch": "master", "message": format!("api {mode}"), "config": config, "merge_mode": mode}});
    let (code, said) = ask(request(serde_json::json!({}), "merge"), None);
    assert_eq!(code, 401, "{said}");
    let cases = [
        (
            "replace",
            serde_json::json!({"language": "shell", "script": "echo \"REPLACED ${FROM_FILE:-none} $TRAVIS_EVENT_TYPE\""}),
            "REPLACED none api",
        ),
        (
            "merge",
            serde_json::json!({"script": "echo \"MERGED ${FROM_FILE:-none} $TRAVIS_EVENT_TYPE\""}),
            "MERGED yes api",
        ),
        (
            "deep_merge",
            serde_json::json!({"env": {"global": ["FROM_API=1"]}}),
            "FILE-SCRIPT none 1 api",
        ),
    ];
    for (mode, config, want) in cases {
        let (code, said) = ask(request(config, mode), Some(&bearer));
        assert_eq!(code, 202, "{mode}: {said}");
        let n = said["number"].as_u64().unwrap();
        let b = ended(&srv, n);
        let text = log(&srv, n);
        assert_eq!(b["state"], "passed", "{mode}: {b}\n{text}");
        assert_eq!(b["event"], "api", "{b}");
        assert_eq!(b["message"], format!("api {mode}"), "{b}");
        assert!(text.contains(want), "{mode}: {text}");
    }
    let (code, said) = ask(
        serde_json::json!({"request": {"branch": "nope"}}),
        Some(&bearer),
    );
    assert_eq!(code, 404, "{said}");
    let (code, said) = ask(
        serde_json::json!({"request": {"branch": "master", "merge_mode": "squash"}}),
        Some(&bearer),
    );
    assert_eq!(code, 400, "{said}");
    assert!(said.to_string().contains("deep_merge"), "{said}");
}

/// GitHub's own example deliveries (npm `@octokit/webhooks-examples`, pinned in
/// tests/forge), as GitHub sends them, for a repository runway builds under their
/// name: every `push` and `pull_request` example is queued or answered 200 with a
/// reason, never refused or failed. With their commits made real (the examples name
/// commits this repository cannot have), `opened` builds the merge with Travis's
/// variables and `closed` cancels it.
#[test]
fn githubs_own_examples_build_or_are_answered_with_a_reason() {
    let index = crate::common::contract::forge_dir()
        .join("node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    let examples = |name: &str| -> Vec<serde_json::Value> {
        all.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()["examples"]
            .as_array()
            .unwrap()
            .clone()
    };
    let s = Setup::new(PR_YML, "");
    let toml = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("name = \"o/app\"", "name = \"Codertocat/Hello-World\"");
    std::fs::write(&s.config, toml).unwrap();
    let srv = s.start();
    let send = |event: &str, v: &serde_json::Value| -> (u16, serde_json::Value) {
        deliver(&srv, event, &serde_json::to_vec(v).unwrap())
    };
    let mut answered = Vec::new();
    for (event, list) in [
        ("push", examples("push")),
        ("pull_request", examples("pull_request")),
    ] {
        assert!(!list.is_empty());
        for v in &list {
            let (code, said) = send(event, v);
            let what = format!(
                "{event} {}",
                v["action"]
                    .as_str()
                    .unwrap_or(v["ref"].as_str().unwrap_or(""))
            );
            match code {
                202 => assert!(said["number"].as_u64().is_some(), "{what}: {said}"),
                200 => assert!(
                    said["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{what}: no reason: {said}"
                ),
                other => panic!("{what}: answered {other}: {said}"),
            }
            answered.push((what, code));
        }
    }
    // A tag's creation is queued; its deletion, a push of a commit master is not at
    // (a replay: master is at this repository's commit) and pull requests whose head
    // is not here are answered, saying why.
    assert_eq!(answered[0], ("push refs/tags/simple-tag".to_string(), 202));
    assert!(
        answered
            .iter()
            .any(|(w, c)| w == "push refs/heads/master" && *c == 200),
        "{answered:?}"
    );
    assert!(
        answered
            .iter()
            .any(|(w, c)| w == "pull_request labeled" && *c == 200),
        "{answered:?}"
    );

    // The master push example with its commit made real: built, as a push.
    let mut pushed = examples("push")
        .into_iter()
        .find(|v| v["ref"] == "refs/heads/master")
        .unwrap();
    pushed["after"] = s.head().into();
    let (code, said) = send("push", &pushed);
    assert_eq!(code, 202, "{said}");
    let n = said["number"].as_u64().unwrap();
    let b = ended(&srv, n);
    assert_eq!(b["state"], "passed", "{b}\n{}", log(&srv, n));
    assert!(
        log(&srv, n).contains("PR=false BRANCH=master"),
        "{}",
        log(&srv, n)
    );

    // The first `opened` example with its head made real: built, with the variables.
    let first = s.head();
    let head = change(&s, "changes", &first, "feature.txt", "from the example\n");
    open_head(&s, "changes", 2);
    let mut opened = examples("pull_request")
        .into_iter()
        .find(|v| v["action"] == "opened")
        .unwrap();
    opened["pull_request"]["head"]["sha"] = head.clone().into();
    opened["pull_request"]["base"]["sha"] = first.clone().into();
    let (code, said) = send("pull_request", &opened);
    assert_eq!(code, 202, "{said}");
    let n = said["number"].as_u64().unwrap();
    let b = ended(&srv, n);
    let text = log(&srv, n);
    assert_eq!(b["state"], "passed", "{b}\n{text}");
    assert!(
        text.contains(&format!(
            "PR=2 BRANCH=master PRB=changes SHA={head} SLUG=Codertocat/Hello-World EVENT=pull_request"
        )),
        "{text}"
    );
    let closed = examples("pull_request")
        .into_iter()
        .find(|v| v["action"] == "closed")
        .unwrap();
    let (code, said) = send("pull_request", &closed);
    assert_eq!(code, 200, "{said}");
    assert!(
        said["message"]
            .as_str()
            .unwrap()
            .contains("pull request #2 closed"),
        "{said}"
    );
}

/// Delivers Gitea's pull request fixture as pull request `number` of o/app, its head
/// `head` (branch update-readme) onto `base`; the build's number.
fn gitea_pr(srv: &Server, number: u64, head: &str, base: &str) -> u64 {
    let mut pr = fixture("gitea-pull-request.json");
    pr["number"] = number.into();
    pr["pull_request"]["number"] = number.into();
    pr["repository"]["full_name"] = "o/app".into();
    pr["pull_request"]["head"]["sha"] = head.into();
    pr["pull_request"]["head"]["repo"]["full_name"] = "o/app".into();
    pr["pull_request"]["base"]["sha"] = base.into();
    let body = serde_json::to_vec(&pr).unwrap();
    let (code, text) = srv.request(
        "POST",
        "/hooks/gitea",
        &[
            ("X-Gitea-Event", "pull_request"),
            ("X-Gitea-Signature", &sign(SECRET, &body)),
        ],
        &body,
    );
    assert_eq!(code, 202, "{text}");
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["number"]
        .as_u64()
        .unwrap()
}

/// Serves `s` with its repository posting statuses to `forge` at `api_url`, with
/// `token` (and `public_url`, set by the setup).
fn serve_posting(s: &Setup, forge: &str, api_url: &str, token: &str) -> Server {
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str(&format!(
        "forge = \"{forge}\"\napi_url = \"{api_url}\"\nstatus_token_env = \"RUNWAY_TEST_STATUS_TOKEN\"\n"
    ));
    std::fs::write(&s.config, toml).unwrap();
    Server::start(
        &s.config,
        &s.state(),
        &[("APP_SECRET", SECRET), ("RUNWAY_TEST_STATUS_TOKEN", token)],
    )
}

fn fixture(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/forge")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Issue 26 (1, 3): GitLab's merge request and Gitea's pull request deliveries, in the
/// shapes their documentation gives (fixtures naming their source), build the merge
/// with Travis's variables; GitLab gets its statuses on its own call, each request
/// checked against the fields GitLab documents.
#[test]
fn gitlab_and_gitea_pull_requests_build_and_gitlab_gets_its_statuses() {
    let recorder = crate::common::contract::Contract::gitlab_statuses();
    let s = Setup::new(PR_YML, "public_url = \"https://ci.example\"");
    let srv = serve_posting(
        &s,
        "gitlab",
        &format!("http://{}/api/v4", recorder.addr),
        "glpat-77",
    );
    let first = s.head();
    let head = change(&s, "ms-viewport", &first, "feature.txt", "from gitlab\n");
    git(
        &s.work,
        &[
            "push",
            "-q",
            "-f",
            "hub",
            "ms-viewport:refs/merge-requests/1/head",
        ],
    );
    let mut mr = fixture("gitlab-merge-request.json");
    mr["project"]["path_with_namespace"] = "o/app".into();
    mr["object_attributes"]["source"]["path_with_namespace"] = "o/app".into();
    mr["object_attributes"]["target"]["path_with_namespace"] = "o/app".into();
    mr["object_attributes"]["last_commit"]["id"] = head.clone().into();
    let (code, text) = srv.request(
        "POST",
        "/hooks/gitlab",
        &[
            ("X-Gitlab-Token", SECRET),
            ("X-Gitlab-Event", "Merge Request Hook"),
        ],
        &serde_json::to_vec(&mr).unwrap(),
    );
    assert_eq!(code, 202, "{text}");
    let n = serde_json::from_str::<serde_json::Value>(&text).unwrap()["number"]
        .as_u64()
        .unwrap();
    let b = ended(&srv, n);
    let out = log(&srv, n);
    assert_eq!(b["state"], "passed", "{b}\n{out}");
    assert!(
        out.contains(&format!(
            "PR=1 BRANCH=master PRB=ms-viewport SHA={head} SLUG=o/app"
        )),
        "{out}"
    );
    let done = came_true(|| {
        recorder
            .calls()
            .last()
            .is_some_and(|c| c.json()["state"] == "success")
    });
    assert!(done, "{:#?}", recorder.calls());
    let calls = recorder.calls();
    for c in &calls {
        assert_eq!(
            c.status, 201,
            "GitLab's documented fields: {}: {c:?}",
            c.answer
        );
        assert_eq!(c.path, format!("/api/v4/projects/o%2Fapp/statuses/{head}"));
        assert_eq!(c.header("private-token"), Some("glpat-77"));
        assert_eq!(c.json()["name"], "runway/pr");
    }
    assert_eq!(calls[0].json()["state"], "pending");

    // Gitea: no merge ref of its own; runway merges.
    let gitea_head = change(&s, "update-readme", &first, "feature.txt", "from gitea\n");
    open_head(&s, "update-readme", 2);
    let n = gitea_pr(&srv, 2, &gitea_head, &first);
    let b = ended(&srv, n);
    let out = log(&srv, n);
    assert_eq!(b["state"], "passed", "{b}\n{out}");
    assert!(
        out.contains(&format!(
            "PR=2 BRANCH=master PRB=update-readme SHA={gitea_head}"
        )),
        "{out}"
    );
    assert_ne!(b["commit"], gitea_head.as_str(), "the merge, not the head");
}

/// Issue 26 (3): Gitea's pull request posts its statuses on Gitea's call, every request
/// valid by Gitea's own API description (Prism answers anything else 400).
#[test]
fn gitea_gets_its_statuses_as_its_description_says() {
    let contract = crate::common::contract::Contract::gitea_statuses();
    let s = Setup::new(PR_YML, "public_url = \"https://ci.example\"");
    let srv = serve_posting(
        &s,
        "gitea",
        &format!("http://{}", contract.addr),
        "gitea-tok",
    );
    let first = s.head();
    let head = change(&s, "update-readme", &first, "feature.txt", "from gitea\n");
    open_head(&s, "update-readme", 4);
    let n = gitea_pr(&srv, 4, &head, &first);
    assert_eq!(ended(&srv, n)["state"], "passed");
    let done = came_true(|| {
        contract
            .calls()
            .last()
            .is_some_and(|c| c.json()["state"] == "success")
    });
    assert!(done, "{:#?}", contract.calls());
    for c in contract.calls() {
        assert_eq!(
            c.status, 201,
            "Gitea's description refused {c:?}: {}",
            c.answer
        );
        assert_eq!(c.path, format!("/repos/o/app/statuses/{head}"));
        assert_eq!(c.header("authorization"), Some("token gitea-tok"));
        assert_eq!(c.json()["context"], "runway/pr");
    }
}

/// Issue 26 (1): a pull request for a repository whose git host hangs is answered
/// within `intake_fetch_secs` (queued on its head); once the host answers, the build
/// makes the merge into the base as it is then, and runs on it.
#[test]
fn a_pull_request_is_queued_while_the_git_host_hangs_and_merged_when_it_runs() {
    use crate::common::server::GitHttps;
    let s = Setup::new(PR_YML, "");
    let hold = s.dir.path().join("answer-now");
    let https = GitHttps::start_with(s.dir.path(), "tok-123", &["--hold", hold.to_str().unwrap()]);
    let srv = s.serve_remote(
        &format!(
            "intake_fetch_secs = 1\n[[repo]]\nname = \"o/app\"\nurl = \"{}/app.git\"\nwebhook_secret_env = \"APP_SECRET\"\ntoken_env = \"APP_TOKEN\"\n",
            https.url
        ),
        &[("APP_TOKEN", "tok-123")],
    );
    let first = s.head();
    let head = change(
        &s,
        "feature",
        &first,
        "feature.txt",
        "through a slow host\n",
    );
    open_head(&s, "feature", 1);
    let (code, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("opened", 1, ("feature", &head, "o/app"), &first),
    );
    assert_eq!(code, 202, "answered while the host hangs: {said}");
    let n = said["number"].as_u64().unwrap();
    std::fs::write(&hold, "").unwrap();
    let b = ended(&srv, n);
    let text = log(&srv, n);
    assert_eq!(b["state"], "passed", "{b}\n{text}");
    let merge = b["commit"].as_str().unwrap();
    assert_ne!(merge, head);
    assert!(
        text.contains(&format!(
            "PR=1 BRANCH=master PRB=feature SHA={head} SLUG=o/app EVENT=pull_request COMMIT={merge}"
        )),
        "{text}"
    );
    assert!(text.contains("through a slow host"), "{text}");
}

/// Issue 26 (3): a forge that answers 502 is tried again with backoff until it takes
/// the status; the build is not held up, and its page says how many tries it took.
#[test]
fn a_status_the_forge_refuses_for_a_while_is_posted_when_it_recovers() {
    let contract = crate::common::contract::Contract::github_statuses_failing_first(2);
    let s = Setup::new(PR_YML, "public_url = \"https://ci.example\"");
    let srv = serve_posting(&s, "github", &format!("http://{}", contract.addr), "tok");
    let (code, text) = generic(&srv, "master", &s.head());
    assert_eq!(code, 202, "{text}");
    let n = serde_json::from_str::<serde_json::Value>(&text).unwrap()["number"]
        .as_u64()
        .unwrap();
    assert_eq!(ended(&srv, n)["state"], "passed");
    let done = came_true(|| {
        contract
            .calls()
            .last()
            .is_some_and(|c| c.status == 201 && c.json()["state"] == "success")
    });
    let calls = contract.calls();
    assert!(done, "{calls:#?}");
    assert_eq!(
        calls.iter().filter(|c| c.status == 502).count(),
        2,
        "{calls:#?}"
    );
    let statuses = build(&srv, n)["statuses"].clone();
    let success = statuses
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == "success")
        .cloned()
        .unwrap_or_default();
    assert_eq!(success["outcome"], "posted", "{statuses}");
}

/// Issue 26 (1): a pull request's build reads the cache of the pull request, else of its
/// base, and writes only its own; the base's builds never see what it wrote.
#[test]
fn a_pull_requests_cache_is_its_own_and_falls_back_to_its_base() {
    let yml = "language: shell\ncache:\n  directories:\n    - $HOME/stash\nscript:\n  - mkdir -p $HOME/stash\n  - echo \"SEEN $(cat $HOME/stash/who 2>/dev/null || echo nothing)\"\n  - echo \"$TRAVIS_EVENT_TYPE-$TRAVIS_PULL_REQUEST-$TRAVIS_COMMIT\" > $HOME/stash/who\nnotifications:\n  email: false\n";
    let s = Setup::new(yml, "auto_cancel = false");
    let srv = s.start();
    let seen = |n: u64| {
        let b = ended(&srv, n);
        let text = log(&srv, n);
        assert_eq!(b["state"], "passed", "{b}\n{text}");
        text.lines()
            .find_map(|l| l.strip_prefix("SEEN "))
            .unwrap_or_else(|| panic!("no SEEN line: {text}"))
            .to_string()
    };
    let number = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text).unwrap()["number"]
            .as_u64()
            .unwrap()
    };
    let first = s.head();
    let (_, text) = generic(&srv, "master", &first);
    let push1 = number(&text);
    assert_eq!(seen(push1), "nothing");
    let head = change(&s, "feature", &first, "f.txt", "one\n");
    open_head(&s, "feature", 7);
    let (_, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("opened", 7, ("feature", &head, "o/app"), &first),
    );
    let pr1 = said["number"].as_u64().unwrap();
    assert!(seen(pr1).starts_with("push-false-"), "the base's cache");
    let pushed = change(&s, "master", "master", "m.txt", "two\n");
    git(&s.work, &["push", "-q", "hub", "master"]);
    let (_, text) = generic(&srv, "master", &pushed);
    let push2 = number(&text);
    assert!(
        seen(push2).starts_with("push-false-"),
        "a push never sees the pull request's cache"
    );
    let head2 = change(&s, "feature", &first, "f.txt", "two\n");
    open_head(&s, "feature", 7);
    let (_, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("synchronize", 7, ("feature", &head2, "o/app"), &pushed),
    );
    let pr2 = said["number"].as_u64().unwrap();
    assert!(
        seen(pr2).starts_with("pull_request-7-"),
        "its own cache first"
    );
}
