//! Remote repositories: mirrored over https with a token.

use super::*;

/// design.md "Server configuration", issue #6: a repository cloned over https with a
/// token from an env var. The server mirrors it with git, reads .travis.yml at the
/// pushed commit from the mirror (branch filters apply at intake), fetches new pushes,
/// and builds the pushed commit. A wrong token errors the build with a message naming
/// the variable; the token is never shown, nor written into the mirror's config.
#[test]
fn an_https_repository_with_a_token_is_mirrored_fetched_and_built() {
    use crate::common::server::GitHttps;
    let s = Setup::new(
        "language: shell\nbranches:\n  only: [master]\nscript: echo \"built $TRAVIS_COMMIT over https\"\n",
        "",
    );
    let https = GitHttps::start(s.dir.path(), "tok-right-123");
    let srv = s.serve_remote(
        &format!(
            "[[repo]]\nname = \"o/app\"\nurl = \"{0}/app.git\"\nwebhook_secret_env = \"APP_SECRET\"\ntoken_env = \"APP_TOKEN\"\n\n[[repo]]\nname = \"o/bad\"\nurl = \"{0}/app.git\"\nwebhook_secret_env = \"APP_SECRET\"\ntoken_env = \"BAD_TOKEN\"\n",
            https.url
        ),
        &[("APP_TOKEN", "tok-right-123"), ("BAD_TOKEN", "tok-wrong-456")],
    );
    let deliver = |repo: &str, branch: &str, commit: &str| generic_for(&srv, repo, branch, commit);
    let log = |n: &str, repo: &str| {
        crate::common::run(
            crate::common::runway()
                .args(["log", n, "--repo", repo])
                .env("RUNWAY_STATE_DIR", s.state()),
        )
        .all()
    };
    let finished = |repo: &str, n: u64| {
        wait_for(
            || {
                let st = srv.json(&format!("/api/builds/{n}?repo={repo}"))["state"].clone();
                st != "queued" && st != "running"
            },
            &format!("{repo}#{n}"),
        );
        srv.json(&format!("/api/builds/{n}?repo={repo}"))
    };

    // The first push clones the mirror.
    let first = s.head();
    let (code, body) = deliver("o/app", "master", &first);
    assert_eq!(code, 202, "{body}");
    let b1 = finished("o/app", 1);
    assert_eq!(b1["state"], "passed", "{b1}\n{}", log("1", "o/app"));
    assert!(log("1", "o/app").contains(&format!("built {first} over https")));

    // A filtered branch is read from the mirror at intake: not queued.
    let feature = s.commit("feature", "a feature");
    let (code, body) = deliver("o/app", "feature", &feature);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("not built"), "{body}");

    // The next push fetches into the existing mirror and builds the new commit.
    let second = s.commit("master", "second");
    let (code, body) = deliver("o/app", "master", &second);
    assert_eq!(code, 202, "{body}");
    let b2 = finished("o/app", 2);
    assert_eq!(b2["state"], "passed", "{b2}\n{}", log("2", "o/app"));
    assert!(log("2", "o/app").contains(&format!("built {second} over https")));

    // A wrong token: queued, then errored with what to check; the token never shown.
    let (code, body) = deliver("o/bad", "master", &second);
    assert_eq!(code, 202, "{body}");
    let bad = finished("o/bad", 1);
    assert_eq!(bad["state"], "errored", "{bad}");
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.contains("$BAD_TOKEN"), "{reason}");
    let bad_log = log("1", "o/bad");
    assert!(bad_log.contains("$BAD_TOKEN"), "{bad_log}");
    for text in [reason, &bad_log, &log("1", "o/app")] {
        assert!(!text.contains("tok-wrong-456") && !text.contains("tok-right-123"));
    }
    let mirror = std::fs::read_to_string(s.state().join("mirrors/o/app.git/config")).unwrap();
    assert!(!mirror.contains("tok-right-123"), "{mirror}");
    let requests = https.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.ends_with(" 401"))
            && requests.iter().any(|r| r.ends_with(" 200")),
        "{requests:?}"
    );
}
