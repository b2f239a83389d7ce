//! Sign-in and permissions (issue 27) against a real OpenID provider: npm's
//! `oidc-provider` (OpenID Certified), started by `tests/auth/provider.mjs` with two
//! people (rita in group dev, walt) and installed by the test command. People sign in
//! through chromium (Playwright); a reader sees a private repository and cannot
//! cancel, a writer cancels, signing out ends the session on the server, forged and
//! expired cookies count for nothing, a write without its CSRF token or from another
//! site is refused; personal tokens are scoped and revoked at once on every node of a
//! PostgreSQL store; ID tokens changed on their way from the issuer (another audience,
//! another issuer, expired, another key, `alg: none`, an earlier sign-in's) are each
//! refused with a log line saying why.

use crate::browser::Browser;
use crate::common::server::{Server, http};
use crate::common::{bare_clone, free_port, git, repo_with};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const CLIENT_SECRET: &str = "runway-client-secret";
const API_TOKEN: &str = "api-token-for-scripts";

/// The OpenID provider, on a free loopback port.
struct Provider {
    child: Child,
    issuer: String,
    errors: tempfile::NamedTempFile,
}

impl Provider {
    fn start(redirect: &str) -> Provider {
        let root = std::env::var("RUNWAY_TEST_OIDC")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/auth").into());
        let modules = Path::new(&root).join("node_modules");
        assert!(
            modules.join("oidc-provider/package.json").exists(),
            "oidc-provider is not installed at {}: run `bash scripts/test.sh` (it runs npm install)",
            modules.display()
        );
        // Its warnings and errors go to a file, shown when a sign-in fails.
        let errors = tempfile::NamedTempFile::new().unwrap();
        let mut child = Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/auth/provider.mjs"
            ))
            .arg(&modules)
            .arg(redirect)
            .arg(CLIENT_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(errors.reopen().unwrap())
            .spawn()
            .expect("node runs (apt-get install nodejs)");
        let mut line = String::new();
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // Whatever it prints later is read away (a closed pipe would end it).
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let Some(issuer) = line.trim().strip_prefix("issuer ").map(str::to_string) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the OpenID provider said {line:?}: {}",
                std::fs::read_to_string(errors.path()).unwrap_or_default()
            );
        };
        Provider {
            child,
            issuer,
            errors,
        }
    }

    /// What the provider wrote on stderr so far.
    fn said(&self) -> String {
        std::fs::read_to_string(self.errors.path()).unwrap_or_default()
    }

    /// What the token answers' ID tokens become from now on (`off`: themselves).
    fn tamper(&self, mode: &str) {
        let addr = self.issuer.trim_start_matches("http://");
        let (code, text) = http(addr, "GET", &format!("/__tamper?mode={mode}"), &[], b"");
        assert_eq!(code, 200, "{text}");
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A serve node with `[auth]` and three repositories: o/app private (group dev reads,
/// walt writes), o/other private (walt reads), o/pub public.
struct Site {
    dir: tempfile::TempDir,
    srv: Server,
    base: String,
    provider: Provider,
    log: Receiver<String>,
    config: PathBuf,
    env: Vec<(String, String)>,
}

const REPOS: [&str; 3] = ["o/app", "o/other", "o/pub"];

impl Site {
    /// `server`: more top-level lines (a database). `app_yml`: o/app's .travis.yml.
    fn start(server: &str, env: &[(&str, &str)], app_yml: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let provider = Provider::start(&format!("{base}/auth/callback"));
        let mut repos = String::new();
        for name in REPOS {
            let short = name.trim_start_matches("o/");
            let yml = if name == "o/app" {
                app_yml
            } else {
                "language: shell\nscript: echo fine\nnotifications:\n  email: false\n"
            };
            let work = repo_with(
                &dir.path().join(short),
                "master",
                &[(".travis.yml", yml)],
                "First commit",
            );
            let bare = bare_clone(&work, &dir.path().join(format!("{short}.git")));
            let access = match name {
                "o/app" => {
                    "visibility = \"private\"\n[[repo.grant]]\ngroup = \"dev\"\nrole = \"read\"\n[[repo.grant]]\nuser = \"walt@example.com\"\nrole = \"write\"\n"
                }
                "o/other" => {
                    "visibility = \"private\"\n[[repo.grant]]\nuser = \"walt@example.com\"\nrole = \"read\"\n"
                }
                _ => "visibility = \"public\"\n",
            };
            repos.push_str(&format!(
                "[[repo]]\nname = \"{name}\"\nurl = \"{}\"\nwebhook_secret_env = \"APP_SECRET\"\n{access}",
                bare.display()
            ));
        }
        let config = dir.path().join("runway.toml");
        std::fs::write(
            &config,
            format!(
                "api_token_env = \"API_TOKEN\"\nconcurrency = 4\n{server}\n[auth]\nissuer = \"{}\"\nclient_id = \"runway\"\nclient_secret_env = \"OIDC_SECRET\"\nredirect_url = \"{base}/auth/callback\"\n\n{repos}",
                provider.issuer
            ),
        )
        .unwrap();
        let mut all: Vec<(String, String)> = vec![
            ("APP_SECRET".into(), "s".into()),
            ("API_TOKEN".into(), API_TOKEN.into()),
            ("OIDC_SECRET".into(), CLIENT_SECRET.into()),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let (srv, log) = serve(&config, &dir.path().join("state"), port, &all);
        Site {
            dir,
            srv,
            base,
            provider,
            log,
            config,
            env: all,
        }
    }

    /// Another node on the same configuration (its own state directory and port).
    fn another_node(&self) -> (Server, Receiver<String>) {
        serve(
            &self.config,
            &self.dir.path().join("state-b"),
            free_port(),
            &self.env,
        )
    }

    /// Queues a build of `repo`'s master.
    fn push(&self, repo: &str) {
        let work = self.dir.path().join(repo.trim_start_matches("o/"));
        let sha = git(&work, &["rev-parse", "HEAD"]);
        let body = format!("{{\"repo\":\"{repo}\",\"branch\":\"master\",\"commit\":\"{sha}\"}}");
        let (code, text) = self.srv.request(
            "POST",
            "/hooks/generic",
            &[("Authorization", "Bearer s")],
            body.as_bytes(),
        );
        assert_eq!(code, 202, "{text}");
    }

    /// Build 1 of `repo` as the API token sees it, once `done` says so.
    fn build_when(&self, repo: &str, done: impl Fn(&str) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, text) = self.srv.request(
                "GET",
                &format!("/api/builds/1?repo={repo}"),
                &[("Authorization", &format!("Bearer {API_TOKEN}"))],
                b"",
            );
            assert_eq!(code, 200, "{text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            if done(v["state"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "{repo} #1 stayed {}", v["state"]);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for a log line containing `needle`; the line.
    fn logged(&self, needle: &str) -> String {
        said(&self.log, needle)
    }
}

/// `runway serve` on `port` with its log lines on a channel.
fn serve(
    config: &Path,
    state: &Path,
    port: u16,
    env: &[(String, String)],
) -> (Server, Receiver<String>) {
    let mut c = crate::common::runway();
    c.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--config",
    ])
    .arg(config)
    .env("RUNWAY_STATE_DIR", state)
    .env("XDG_CACHE_HOME", state.join("cache"))
    .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut srv = Server::spawn(&mut c);
    let out = srv.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in out.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (srv, rx)
}

fn said(log: &Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                panic!("the server never logged {needle:?}")
            }
        }
    }
}

/// Signs `user` in through the provider's login form (or its single sign-on when the
/// browser is signed in there already), coming back to `next`.
fn sign_in(b: &mut Browser, base: &str, user: &str, next: &str) -> String {
    b.goto(&format!("{base}/auth/login?next={next}"));
    let at = b.op(json!({"op": "url"}));
    if !at.as_str().unwrap().starts_with(base) {
        b.op(json!({"op": "fill", "selector": "input[name=login]", "value": user}));
        b.op(json!({"op": "fill", "selector": "input[name=password]", "value": "any"}));
        b.click("button[type=submit]");
    }
    b.op(json!({"op": "waitUrl", "prefix": base}));
    b.op(json!({"op": "loaded"}));
    b.op(json!({"op": "url"})).as_str().unwrap().to_string()
}

/// A POST from the page (its cookies go along); `csrf`: with the page's CSRF token.
/// Status and body.
fn page_post(b: &mut Browser, path: &str, body: Option<Value>, csrf: bool) -> (u64, Value) {
    let js = format!(
        "(async () => {{ const h = {{'Content-Type': 'application/json'}}; \
         const m = document.querySelector('meta[name=\"csrf-token\"]'); \
         if ({csrf} && m) h['X-CSRF-Token'] = m.content; \
         const r = await fetch({path}, {{method: 'POST', headers: h, body: {body}}}); \
         return [r.status, await r.json().catch(() => null)]; }})()",
        path = json!(path),
        body = body.map_or("undefined".to_string(), |b| json!(b.to_string())
            .to_string()),
    );
    let v = b.eval(&js);
    (v[0].as_u64().unwrap(), v[1].clone())
}

fn session_cookie(b: &mut Browser) -> Option<Value> {
    b.op(json!({"op": "cookies"}))
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "runway_session" && c["value"] != "")
        .cloned()
}

const SLOW: &str = "language: shell\nscript: sleep 600\nnotifications:\n  email: false\n";

/// A reader sees a private repository and cannot cancel; a writer cancels (recorded
/// in the audit trail); signing out ends the session on the server (its cookie, sent
/// again, is nobody's); a forged cookie and an expired session count for nothing; a
/// write without the CSRF token is refused; to nobody a private repository does not
/// exist.
#[test]
fn readers_read_writers_cancel_and_sessions_end() {
    let site = Site::start("", &[], SLOW);
    for r in REPOS {
        site.push(r);
    }
    site.build_when("o/app", |s| s == "running");
    site.build_when("o/pub", |s| s == "passed");
    // Nobody: the public repository only; the private ones do not exist.
    let (code, text) = site.srv.request("GET", "/api/builds", &[], b"");
    assert_eq!(code, 200, "{text}");
    let listed: Value = serde_json::from_str(&text).unwrap();
    let repos: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["repo"].as_str().unwrap())
        .collect();
    assert_eq!(repos, ["o/pub"], "{listed}");
    for path in [
        "/api/builds/1?repo=o/app",
        "/builds/1?repo=o/app",
        "/builds/1/config?repo=o/app",
        "/api/builds/1/log?repo=o/app",
        "/badge/o/app.svg",
        "/api/repos/o/app/audit",
    ] {
        assert_eq!(site.srv.request("GET", path, &[], b"").0, 404, "{path}");
    }
    assert_eq!(site.srv.request("GET", "/badge/o/pub.svg", &[], b"").0, 200);
    let (code, text) = site
        .srv
        .request("POST", "/api/builds/1/cancel?repo=o/app", &[], b"");
    assert_eq!(code, 404, "nobody cannot tell it exists: {text}");
    let (code, _) = site
        .srv
        .request("POST", "/api/builds/1/restart?repo=o/pub", &[], b"");
    assert_eq!(
        code, 401,
        "a public repository is read by anyone, written by grants"
    );

    let mut b = Browser::open();
    b.goto(&format!("{}/", site.base));
    b.until("document.querySelector('#sign-in')");
    // Rita (group dev): reads o/app, cannot cancel.
    let at = sign_in(&mut b, &site.base, "rita", "/builds/1?repo=o/app");
    assert!(
        at.ends_with("/builds/1?repo=o/app"),
        "{at}: {}\nthe provider said: {}",
        b.eval("document.body.innerText"),
        site.provider.said()
    );
    site.logged("signed in");
    let who = b.until("document.querySelector('#signed-in')?.textContent");
    assert_eq!(who, "rita@example.com");
    let h1 = b.eval("document.querySelector('h1').textContent");
    assert!(h1.as_str().unwrap().contains("o/app"), "{h1}");
    assert_eq!(
        b.eval("!!document.querySelector('#cancel')"),
        false,
        "a reader has no Cancel"
    );
    let (code, said_) = page_post(&mut b, "/api/builds/1/cancel?repo=o/app", None, true);
    assert_eq!(code, 403, "{said_}");
    assert!(
        said_["error"]
            .as_str()
            .unwrap()
            .contains("needs the write role"),
        "{said_}"
    );
    // Rita does not see o/other at all.
    b.goto(&format!("{}/", site.base));
    b.until("document.querySelector('#signed-in')");
    let list = b.eval("document.querySelector('main').textContent");
    assert!(!list.as_str().unwrap().contains("o/other"), "{list}");
    assert!(list.as_str().unwrap().contains("o/app"), "{list}");
    b.shot("signin-reader");
    let rita = session_cookie(&mut b).expect("rita's session cookie");
    assert_eq!(rita["httpOnly"], true, "{rita}");
    assert_eq!(rita["sameSite"], "Lax", "{rita}");

    // Signing out ends the session on the server: the same cookie again is nobody's.
    b.click("#sign-out");
    b.until("document.querySelector('#sign-in')");
    site.logged("signed out");
    b.op(json!({"op": "addCookies", "cookies": [rita]}));
    b.goto(&format!("{}/builds/1?repo=o/app", site.base));
    assert_eq!(b.eval("document.title"), "not found");
    site.logged("the session ended or expired");

    // A forged cookie: nobody.
    b.op(json!({"op": "clearCookies"}));
    let mut forged = rita.clone();
    forged["value"] = json!("c2Vzc2lvbg.Zm9yZ2Vk");
    b.op(json!({"op": "addCookies", "cookies": [forged]}));
    b.goto(&format!("{}/builds/1?repo=o/app", site.base));
    assert_eq!(b.eval("document.title"), "not found");
    site.logged("it is not signed by this server");

    // Walt (write): a write without the CSRF token is refused; Cancel works.
    b.op(json!({"op": "clearCookies"}));
    sign_in(&mut b, &site.base, "walt", "/builds/1?repo=o/app");
    b.until("document.querySelector('#cancel')");
    let (code, said_) = page_post(&mut b, "/api/builds/1/cancel?repo=o/app", None, false);
    assert_eq!(code, 403, "{said_}");
    assert!(said_["error"].as_str().unwrap().contains("CSRF"), "{said_}");
    site.logged("a write without a CSRF token was refused");
    b.click("#cancel");
    let ended = site.build_when("o/app", |s| s == "canceled");
    assert_eq!(ended["audit"][0]["who"], "walt@example.com", "{ended}");
    assert_eq!(ended["audit"][0]["action"], "cancel", "{ended}");
    b.goto(&format!("{}/builds/1?repo=o/app", site.base));
    let audit = b.until("document.querySelector('#audit')?.textContent");
    assert!(
        audit.as_str().unwrap().contains("walt@example.com cancel"),
        "{audit}"
    );
    b.shot("signin-writer-canceled");
    // A form's `csrf_token` field does as the header does.
    let restarted = b.eval(
        "(async () => { const t = document.querySelector('meta[name=\"csrf-token\"]').content; \
         const r = await fetch('/api/builds/1/restart?repo=o/app', {method: 'POST', \
         headers: {'Content-Type': 'application/x-www-form-urlencoded'}, \
         body: 'csrf_token=' + encodeURIComponent(t)}); return r.status; })()",
    );
    assert_eq!(restarted, 202);

    // An expired session: nobody.
    let db = rusqlite::Connection::open(site.dir.path().join("state/runway.db")).unwrap();
    db.execute("UPDATE sessions SET expires_at = 0", [])
        .unwrap();
    b.goto(&format!("{}/builds/1?repo=o/app", site.base));
    assert_eq!(b.eval("document.title"), "not found");
    assert_eq!(b.errors(), json!([]));
}

/// Personal tokens: made by a signed-in person, scoped to repositories and a role no
/// more than theirs, shown once and stored as digests; one scoped to o/app cannot read
/// o/other; revoked, it is refused at once by the other node of a PostgreSQL store.
/// Sessions work on every node, and a write from another site is refused there. The
/// audit trail lists each action.
#[test]
fn personal_tokens_are_scoped_and_revoked_at_once_on_every_node() {
    let url = crate::common::postgres::shared().database("signin");
    let fine = "language: shell\nscript: echo fine\nnotifications:\n  email: false\n";
    let site = Site::start(
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"",
        &[("RUNWAY_TEST_DATABASE_URL", url.as_str())],
        fine,
    );
    let (other, _other_log) = site.another_node();
    for r in REPOS {
        site.push(r);
    }
    site.build_when("o/app", |s| s == "passed");
    site.build_when("o/other", |s| s == "passed");

    let mut b = Browser::open();
    sign_in(&mut b, &site.base, "walt", "/tokens");
    b.until("document.querySelector('#make')");
    // More than walt may: refused.
    let ask = |repos: &[&str], role: &str| json!({"name": "ci", "repos": repos, "role": role, "expires_in_days": 7});
    let (code, said_) = page_post(&mut b, "/api/tokens", Some(ask(&["o/app"], "admin")), true);
    assert_eq!(code, 403, "{said_}");
    let (code, said_) = page_post(
        &mut b,
        "/api/tokens",
        Some(ask(&["o/other"], "write")),
        true,
    );
    assert_eq!(code, 403, "{said_}");
    let (code, said_) = page_post(&mut b, "/api/tokens", Some(ask(&["o/app"], "write")), false);
    assert_eq!(code, 403, "no CSRF token: {said_}");
    let (code, made) = page_post(&mut b, "/api/tokens", Some(ask(&["o/app"], "write")), true);
    assert_eq!(code, 201, "{made}");
    let token = made["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("rwp_"), "{token}");
    let id = made["id"].as_i64().unwrap();
    // Stored as a digest, never as itself.
    let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let kept: String = db
        .query_one("SELECT hash FROM tokens WHERE id = $1", &[&id])
        .unwrap()
        .get(0);
    assert_ne!(kept, token);
    assert!(!kept.contains(&token[4..]));

    let bearer = format!("Bearer {token}");
    let with = [("Authorization", bearer.as_str())];
    // On the other node: o/app yes, o/other (walt reads it, the token is not for it) no.
    let (code, text) = other.request("GET", "/api/builds/1?repo=o/app", &with, b"");
    assert_eq!(code, 200, "{text}");
    let (code, text) = other.request("GET", "/api/builds/1?repo=o/other", &with, b"");
    assert_eq!(code, 404, "{text}");
    let (code, text) = other.request("GET", "/api/builds", &with, b"");
    let repos: Vec<String> = serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["repo"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        (code, repos),
        (200, vec!["o/pub".to_string(), "o/app".to_string()])
    );
    let (code, text) = other.request("POST", "/api/builds/1/restart?repo=o/app", &with, b"");
    assert_eq!(code, 202, "{text}");
    site.build_when("o/app", |s| s == "passed");
    // A build triggered through the API with it (Travis's requests).
    let trigger = |repo: &str| {
        other.request(
            "POST",
            &format!("/api/repos/{repo}/requests"),
            &[
                ("Authorization", bearer.as_str()),
                ("Content-Type", "application/json"),
            ],
            br#"{"request": {"branch": "master"}}"#,
        )
    };
    let (code, text) = trigger("o/app");
    assert_eq!(code, 202, "{text}");
    let (code, text) = trigger("o/other");
    assert_eq!(code, 404, "not the token's repository: {text}");

    // Walt's session works on the other node; from another site it is refused there.
    let cookie = session_cookie(&mut b).expect("walt's session");
    let csrf = b.eval("document.querySelector('meta[name=\"csrf-token\"]').content");
    let cookie = format!("runway_session={}", cookie["value"].as_str().unwrap());
    let csrf = csrf.as_str().unwrap();
    let base_b = format!("http://{}", other.addr);
    let (code, text) = other.request(
        "POST",
        "/api/builds/1/approve?repo=o/app",
        &[
            ("Cookie", &cookie),
            ("X-CSRF-Token", csrf),
            ("Origin", &site.base),
        ],
        b"",
    );
    assert_eq!(
        code, 409,
        "signed in on node B too (not awaiting approval): {text} ({base_b})"
    );
    for hostile in [
        ("Origin", "http://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let (code, text) = other.request(
            "POST",
            "/api/builds/1/restart?repo=o/app",
            &[("Cookie", &cookie), ("X-CSRF-Token", csrf), hostile],
            b"",
        );
        assert_eq!(code, 403, "{hostile:?}: {text}");
    }

    // Revoked on node A: refused at once on node B.
    let (code, said_) = page_post(&mut b, &format!("/api/tokens/{id}/revoke"), None, true);
    assert_eq!(code, 200, "{said_}");
    let (code, text) = other.request("GET", "/api/builds/1?repo=o/app", &with, b"");
    assert_eq!(code, 401, "{text}");

    // The audit trail: the token made, the restart through it, the revocation.
    let (code, text) = other.request(
        "GET",
        "/api/repos/o/app/audit",
        &[("Authorization", &format!("Bearer {API_TOKEN}"))],
        b"",
    );
    assert_eq!(code, 200, "{text}");
    let trail: Value = serde_json::from_str(&text).unwrap();
    let said_: Vec<(String, String)> = trail["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["who"].as_str().unwrap().to_string(),
                a["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        said_,
        [
            ("walt@example.com".to_string(), "token_created".to_string()),
            (
                "walt@example.com (personal token)".to_string(),
                "restart".to_string()
            ),
            (
                "walt@example.com (personal token)".to_string(),
                "trigger".to_string()
            ),
        ],
        "{trail}"
    );
    let (_, text) = site.srv.request(
        "GET",
        "/api/builds/1?repo=o/app",
        &[("Authorization", &format!("Bearer {API_TOKEN}"))],
        b"",
    );
    assert!(text.contains("(personal token)"), "{text}");

    // The tokens page: made with its form (shown once), revoked with its button.
    b.goto(&format!("{}/tokens", site.base));
    b.op(json!({"op": "fill", "selector": "input[name=name]", "value": "laptop"}));
    b.click("input[name=repo][value=\"o/other\"]");
    b.click("#make");
    let shown = b.until("document.querySelector('#new-token')?.textContent");
    let laptop = shown.as_str().unwrap().to_string();
    assert!(laptop.starts_with("rwp_"), "{laptop}");
    let bearer = format!("Bearer {laptop}");
    let (code, text) = other.request(
        "GET",
        "/api/builds/1?repo=o/other",
        &[("Authorization", bearer.as_str())],
        b"",
    );
    assert_eq!(code, 200, "{text}");
    b.goto(&format!("{}/tokens", site.base));
    let rows = b.eval("document.querySelector('#tokens').textContent");
    assert!(rows.as_str().unwrap().contains("laptop"), "{rows}");
    let live = b.eval("document.querySelector('#tokens button').id");
    b.click(&format!("#{}", live.as_str().unwrap()));
    b.until("/revoked/.test(document.querySelector('#tokens').textContent)");
    let (code, _) = other.request(
        "GET",
        "/api/builds/1?repo=o/other",
        &[("Authorization", bearer.as_str())],
        b"",
    );
    assert_eq!(code, 401);
    b.shot("signin-tokens");
    assert_eq!(b.errors(), json!([]));
}

/// ID tokens changed on their way from a real issuer are refused, each with a log line
/// saying why, and no session is made: another audience, another issuer, expired,
/// signed by another key, `alg: none`, and an earlier sign-in's token (its nonce used).
#[test]
fn id_tokens_that_are_not_the_issuers_for_this_sign_in_are_refused() {
    let site = Site::start("", &[], "language: shell\nscript: true\n");
    let mut b = Browser::open();
    // One sign-in as it should be (its ID token is the one replayed below).
    sign_in(&mut b, &site.base, "rita", "/");
    b.until("document.querySelector('#signed-in')");
    b.click("#sign-out");
    b.until("document.querySelector('#sign-in')");
    for (mode, why) in [
        ("aud", "is for [\"someone-else\"], not for this client"),
        ("iss", "was issued by \"http://127.0.0.1:1\""),
        ("expired", "the ID token expired at"),
        (
            "otherkey",
            "signature is not made by any key the issuer publishes",
        ),
        ("none", "algorithm \"none\" is not accepted"),
        ("replay", "nonce is not this sign-in's"),
    ] {
        site.provider.tamper(mode);
        let at = sign_in(&mut b, &site.base, "rita", "/");
        assert!(at.contains("/auth/callback"), "{mode}: {at}");
        let shown = b.until("document.querySelector('#message')?.textContent");
        assert!(shown.as_str().unwrap().contains(why), "{mode}: {shown}");
        let line = site.logged("sign-in refused");
        assert!(line.contains(why), "{mode}: {line}");
        assert_eq!(session_cookie(&mut b), None, "{mode}: no session");
    }
    // As it should be again: signed in.
    site.provider.tamper("off");
    sign_in(&mut b, &site.base, "rita", "/");
    b.until("document.querySelector('#signed-in')");
    // Eve claims walt's address, unverified: she is eve, not walt.
    b.op(json!({"op": "clearCookies"}));
    sign_in(&mut b, &site.base, "eve", "/");
    let who = b.until("document.querySelector('#signed-in')?.textContent");
    assert_eq!(who, "eve");
    // A callback replayed (the same code and state again) finds no sign-in under way.
    let (code, text) = site.srv.request(
        "GET",
        "/auth/callback?code=x&state=y",
        &[("Cookie", "runway_login=y.z")],
        b"",
    );
    assert_eq!(code, 403, "{text}");
    site.logged("this sign-in was not started in this browser");
    // What the callback's caller writes reaches the log as one line.
    let (code, _) = site.srv.request(
        "GET",
        "/auth/callback?error=access_denied&error_description=one%0Aforged%20line",
        &[],
        b"",
    );
    assert_eq!(code, 403);
    let line = site.logged("sign-in refused: the issuer said access_denied");
    assert!(line.contains("one forged line"), "{line}");
}
