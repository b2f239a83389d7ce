//! The web pages in a real headless browser: Debian's chromium driven by Playwright
//! (playwright-core from the npm registry; both installed by the test command) through
//! `tests/browser/driver.mjs`. The list updates live; a build page shows its folds with
//! their commands and durations, ANSI colours, line links, the failing command marked;
//! the log follows the tail until the reader scrolls up; cancel works with the API token
//! and is refused without it. Each test saves screenshots under `target/screenshots/`.

use crate::common::server::Server;
use crate::common::{bare_clone, git, repo_with};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// One headless chromium page, driven over the driver's JSON lines.
pub(crate) struct Browser {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    /// The driver's and chromium's temporary files (profiles, downloads): removed with
    /// the browser (a killed chromium leaves its profile behind in `/tmp`).
    _tmp: tempfile::TempDir,
}

impl Browser {
    pub(crate) fn open() -> Browser {
        let chromium = "/usr/bin/chromium";
        assert!(
            Path::new(chromium).exists(),
            "chromium is not installed: run `bash scripts/test.sh` (it runs apt-get install chromium)"
        );
        let playwright = std::env::var("RUNWAY_TEST_PLAYWRIGHT").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/browser/node_modules/playwright-core"
            )
            .into()
        });
        assert!(
            Path::new(&playwright).join("package.json").exists(),
            "playwright-core is not installed at {playwright}: run `bash scripts/test.sh` (it runs npm install)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/browser/driver.mjs"
            ))
            .env("TMPDIR", tmp.path())
            .env("RUNWAY_TEST_PLAYWRIGHT", &playwright)
            .env("RUNWAY_TEST_CHROMIUM", chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs (apt-get install nodejs)");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Browser {
            child,
            stdin,
            out,
            _tmp: tmp,
        }
    }

    pub(crate) fn try_op(&mut self, cmd: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("the driver said {line:?}: {e}"));
        if v["ok"] == true {
            Ok(v["value"].clone())
        } else {
            Err(v["error"].as_str().unwrap_or("?").to_string())
        }
    }

    pub(crate) fn op(&mut self, cmd: Value) -> Value {
        let what = cmd.to_string();
        self.try_op(cmd)
            .unwrap_or_else(|e| panic!("browser: {what}: {e}"))
    }

    /// Opens `url`. A page that navigates by itself meanwhile (one reloading after a
    /// click, as a build page does when its build ends) interrupts the first try: the
    /// page is opened again once that navigation is done.
    pub(crate) fn goto(&mut self, url: &str) {
        let cmd = json!({"op": "goto", "url": url});
        for _ in 0..3 {
            match self.try_op(cmd.clone()) {
                Ok(_) => return,
                Err(e) if e.contains("is interrupted by another navigation") => continue,
                Err(e) => panic!("browser: {cmd}: {e}"),
            }
        }
        self.op(cmd);
    }

    /// Waits until the JavaScript expression is truthy on the page; its value.
    pub(crate) fn until(&mut self, js: &str) -> Value {
        self.op(json!({"op": "until", "js": js, "timeout": 90000}))
    }

    pub(crate) fn eval(&mut self, js: &str) -> Value {
        self.op(json!({"op": "eval", "js": js}))
    }

    pub(crate) fn click(&mut self, selector: &str) {
        self.op(json!({"op": "click", "selector": selector}));
    }

    /// Saves a screenshot as `target/screenshots/NAME.png`.
    pub(crate) fn shot(&mut self, name: &str) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        self.op(json!({"op": "screenshot", "path": path, "full": false}));
        assert!(path.exists(), "{}", path.display());
        path
    }

    /// Script errors the page raised so far.
    pub(crate) fn errors(&mut self) -> Value {
        self.op(json!({"op": "errors"}))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver closes chromium and exits: waited for (10 s at most) before the
        // temporary directory goes, so that no chromium still writes its profile there
        // (killed at once, it left its profile behind in /tmp on every run).
        let _ = writeln!(self.stdin, "{}", json!({"op": "close"}));
        let pid = self.child.id() as i32;
        if !runway::process::exited_within(pid, std::time::Duration::from_secs(10)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A server with one repository (its work tree at `work`), with `server` lines first
/// in its runway.toml and `env` in its environment.
struct Site {
    _dir: tempfile::TempDir,
    work: PathBuf,
    srv: Server,
    base: String,
}

impl Site {
    fn new(yml: &str, server: &str, env: &[(&str, &str)]) -> Site {
        Site::with_repo(yml, server, "", env)
    }

    /// [`Site::new`] with `repo` lines in its `[[repo]]`.
    fn with_repo(yml: &str, server: &str, repo: &str, env: &[(&str, &str)]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let work = repo_with(
            &dir.path().join("work"),
            "master",
            &[(".travis.yml", yml)],
            "First commit",
        );
        let bare = bare_clone(&work, &dir.path().join("app.git"));
        git(&work, &["remote", "add", "hub", bare.to_str().unwrap()]);
        let config = dir.path().join("runway.toml");
        std::fs::write(
            &config,
            format!(
                "{server}\n[[repo]]\nname = \"o/app\"\nurl = \"{}\"\nwebhook_secret_env = \"APP_SECRET\"\n{repo}",
                bare.display()
            ),
        )
        .unwrap();
        let mut all = vec![("APP_SECRET", "s")];
        all.extend_from_slice(env);
        let srv = Server::start(&config, &dir.path().join("state"), &all);
        let base = format!("http://{}", srv.addr);
        Site {
            _dir: dir,
            work,
            srv,
            base,
        }
    }

    /// Queues a build of master's head; returns the commit.
    fn push(&self) -> String {
        let sha = git(&self.work, &["rev-parse", "HEAD"]);
        let body = format!("{{\"repo\":\"o/app\",\"branch\":\"master\",\"commit\":\"{sha}\"}}");
        let (code, text) = self.srv.request(
            "POST",
            "/hooks/generic",
            &[("Authorization", "Bearer s")],
            body.as_bytes(),
        );
        assert_eq!(code, 202, "{text}");
        sha
    }

    /// Commits `.travis.yml` = `yml` on master (pushed to the hub).
    fn commit(&self, yml: &str, msg: &str) {
        std::fs::write(self.work.join(".travis.yml"), yml).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", msg]);
        git(&self.work, &["push", "-q", "-f", "hub", "master"]);
    }

    /// Waits for build `n` to end; its state.
    fn ended(&self, n: u64) -> String {
        for _ in 0..1200 {
            let v = self.srv.json(&format!("/api/builds/{n}"));
            let st = v["state"].as_str().unwrap_or("").to_string();
            if st != "queued" && st != "running" {
                return st;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("build {n} did not end");
    }
}

/// The highest N in `{prefix}N` in `text`.
fn last_number(text: &str, prefix: &str) -> u32 {
    text.match_indices(prefix)
        .filter_map(|(i, _)| {
            text[i + prefix.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// The log's lines as text (line numbers left out; lines in closed folds kept).
const LOG_TEXT: &str =
    "[...document.querySelectorAll('#log .l > span')].map(s => s.textContent).join('\\n')";

/// The list shows builds as they are queued, start and end, without reloading; the
/// build page shows the log while the build runs, and it grows.
#[test]
fn the_list_updates_live_and_the_build_page_shows_the_log_as_it_grows() {
    let yml = "language: shell\nscript:\n  - for i in $(seq 1 60); do echo \"log line $i\"; sleep 0.1; done\nnotifications:\n  email: false\n";
    let site = Site::new(yml, "", &[]);
    let mut b = Browser::open();
    b.goto(&format!("{}/", site.base));
    b.until("document.getElementById('empty')");
    b.eval("window.notReloaded = true");
    let sha = site.push();
    // The row arrives over /events, on the same page (no reload).
    b.until("document.querySelector('#builds tr[data-id] a[href^=\"/builds/1\"]') && window.notReloaded");
    b.until("document.querySelector('#builds tr[data-id] .badge.passed') && window.notReloaded");
    let row = b.eval("document.querySelector('#builds tr[data-id]').textContent");
    let row = row.as_str().unwrap();
    assert!(
        row.contains("#1") && row.contains("o/app") && row.contains("master"),
        "{row}"
    );
    assert!(
        row.contains(&sha[..7]) && row.contains("First commit"),
        "{row}"
    );
    let repos = b.eval("document.querySelector('ul.repos').textContent");
    assert!(repos.as_str().unwrap().contains("#1"), "{repos}");
    b.shot("list");

    // A second build, watched from its page while it runs.
    site.commit(&format!("{yml}# again\n"), "Second commit");
    site.push();
    b.goto(&format!("{}/builds/2", site.base));
    let first = b.until(&format!(
        "(() => {{ const t = {LOG_TEXT}; return /log line [1-9]/.test(t) && t; }})()"
    ));
    let first = first.as_str().unwrap().to_string();
    let a = last_number(&first, "log line ");
    assert!(a < 60, "the first look was while the build ran ({a})");
    assert!(first.contains("$ for i in $(seq 1 60)"), "{first}");
    let later = b.until(&format!(
        "(() => {{ const t = {LOG_TEXT}; const m = [...t.matchAll(/log line (\\d+)/g)].map(x => +x[1]); return Math.max(...m) > {a} + 5 && t; }})()"
    ));
    assert!(last_number(later.as_str().unwrap(), "log line ") > a);
    assert_eq!(b.errors(), json!([]));
    assert_eq!(site.ended(2), "passed");
}

/// Two jobs side by side: the build's log shows one live and holds the other back
/// (relay.rs), but the held job's own tab grows as it runs. When the build ends, each
/// tab shows its job's whole stored log, markup in it shown as text.
#[test]
fn each_jobs_tab_follows_it_live_while_jobs_run_side_by_side() {
    let yml = "language: shell\nenv:\n  - JOB=a\n  - JOB=b\nscript:\n  - echo \"<!--<script>window.pwned=1</script><i>kept as text</i>\"\n  - for i in $(seq 1 150); do echo \"$JOB line $i\"; sleep 0.2; done\nnotifications:\n  email: false\n";
    let site = Site::new(yml, "concurrency = 2\n", &[]);
    site.push();
    // Which job the build's log shows live is whichever wrote first; the other is held.
    let build_log = || site.srv.request("GET", "/api/builds/1/log", &[], b"").1;
    let mut log = String::new();
    for _ in 0..300 {
        log = build_log();
        if log.contains("a line ") || log.contains("b line ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (held, held_job, live) = if log.contains("a line ") {
        ("b line ", "1.2", "a line ")
    } else {
        ("a line ", "1.1", "b line ")
    };
    let mut b = Browser::open();
    b.goto(&format!("{}/builds/1#job={held_job}", site.base));
    let seen = |b: &mut Browser, more_than: u32| -> String {
        b.until(&format!(
            "(() => {{ const t = {LOG_TEXT}; const m = [...t.matchAll(/{held}(\\d+)/g)].map(x => +x[1]); return m.length && Math.max(...m) > {more_than} && t; }})()"
        ))
        .as_str()
        .unwrap()
        .to_string()
    };
    let first = seen(&mut b, 0);
    let a = last_number(&first, held);
    let second = seen(&mut b, a + 3);
    let c = last_number(&second, held);
    assert!(
        c > a && c < 150,
        "job {held_job}'s tab grows while it runs: {a}, then {c}"
    );
    assert!(
        !second.contains(live),
        "job {held_job}'s tab shows only its job"
    );
    let tabs = b.eval("document.getElementById('tabs').textContent");
    let tabs = tabs.as_str().unwrap();
    assert!(
        tabs.contains("Job 1.1") && tabs.contains("Job 1.2"),
        "{tabs}"
    );
    assert!(
        !build_log().contains(held),
        "the build's log still holds {held_job} back"
    );
    assert_eq!(site.ended(1), "passed");
    b.goto(&format!("{}/builds/1#job=1.1", site.base));
    let log = b.until(&format!(
        "(() => {{ const t = {LOG_TEXT}; return /a line 150/.test(t) && t; }})()"
    ));
    let log = log.as_str().unwrap();
    assert!(!log.contains("b line "), "{log}");
    // `<!--<script>` in the embedded data once ended the page's script (issue 10).
    assert!(
        log.contains("<!--<script>window.pwned=1</script><i>kept as text</i>"),
        "{log}"
    );
    assert_eq!(b.eval("window.pwned === undefined"), json!(true));
    let tabs = b.eval("document.getElementById('tabs').textContent");
    assert!(tabs.as_str().unwrap().contains("Job 1.2 passed"), "{tabs}");
}

/// A passing build's page: folds titled by their command with their duration, opened
/// by a click; ANSI colours; a line link highlighted. A failing build's page opens at
/// the failing command, marked, its fold opened. No buttons without an API token.
#[test]
fn a_passing_and_a_failing_build_page() {
    let yml = "language: shell\ninstall:\n  - echo installing; sleep 0.3\nscript:\n  - printf '\\033[31mred text\\033[0m and plain\\n'\n  - for i in $(seq 1 120); do echo \"output line $i\"; done\nnotifications:\n  email: false\n";
    let site = Site::new(yml, "", &[]);
    site.push();
    assert_eq!(site.ended(1), "passed");
    let mut b = Browser::open();
    b.goto(&format!("{}/builds/1", site.base));
    b.until("document.querySelectorAll('#log .l').length > 100");
    let fold = b.eval(
        "(() => { const d = [...document.querySelectorAll('#log details.fold')].find(d => d.dataset.fold === 'install.1'); return d && {open: d.open, title: d.querySelector('.title').textContent, dur: d.querySelector('.dur').textContent}; })()",
    );
    assert_eq!(fold["open"], json!(false), "{fold}");
    assert_eq!(
        fold["title"],
        json!("$ echo installing; sleep 0.3"),
        "{fold}"
    );
    let dur = fold["dur"].as_str().unwrap();
    assert!(dur.ends_with('s') && dur.contains('.'), "{fold}");
    b.click("#log details[data-fold=\"install.1\"] > summary");
    b.until("document.querySelector('#log details[data-fold=\"install.1\"]').open");
    let red = b.eval(
        "(() => { const l = [...document.querySelectorAll('#log .l')].find(l => l.lastElementChild.textContent.startsWith('red text')); const s = l && l.querySelector('span span'); return s && s.getAttribute('style'); })()",
    );
    assert!(red.as_str().unwrap_or("").contains("color"), "{red}");
    // A script command's duration shows on its line.
    let timed = b.eval("document.querySelectorAll('#log .l.cmd .dur').length");
    assert!(timed.as_u64().unwrap() >= 2, "{timed}");
    assert_eq!(
        b.eval("document.querySelector('.actions') === null"),
        json!(true)
    );
    b.shot("build-passed");
    b.goto(&format!("{}/builds/1#L40", site.base));
    b.until("document.querySelector('#L40.hl')");
    let seen = b.eval("(() => { const r = document.getElementById('L40').getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; })()");
    assert_eq!(seen, json!(true));

    site.commit(
        "language: shell\ninstall:\n  - echo installing\nscript:\n  - for i in $(seq 1 150); do echo \"before $i\"; done\n  - test -f coverage.xml\n  - echo after\nnotifications:\n  email: false\n",
        "Break the build",
    );
    site.push();
    assert_eq!(site.ended(2), "failed");
    b.goto(&format!("{}/builds/2", site.base));
    b.until("document.querySelector('#log .l.fail')");
    let marked = b.eval("[...document.querySelectorAll('#log .l.fail')].map(l => l.textContent)");
    let marked = marked.to_string();
    assert!(marked.contains("$ test -f coverage.xml"), "{marked}");
    assert!(marked.contains("exited with 1"), "{marked}");
    // The page opened at the failing command (below the first screen).
    let at = b.until("(() => { const l = document.querySelector('#log .l.cmd.fail'); const r = l.getBoundingClientRect(); return scrollY > 0 && r.top >= 0 && r.bottom <= innerHeight && scrollY; })()");
    assert!(at.as_f64().unwrap() > 0.0, "{at}");
    let why = b.eval("document.querySelector('.why').textContent");
    assert!(
        why.as_str()
            .unwrap()
            .contains("`test -f coverage.xml` exited 1"),
        "{why}"
    );
    b.shot("build-failed");
    b.eval("scrollTo(0, 0)");
    b.shot("build-failed-top");
    // On a phone, and dark by the system's setting.
    b.op(json!({"op": "viewport", "width": 390, "height": 844}));
    b.op(json!({"op": "scheme", "value": "dark"}));
    let wide = b.eval("document.documentElement.scrollWidth <= innerWidth + 1");
    assert_eq!(wide, json!(true), "the page fits a phone's width");
    let bg = b.eval("getComputedStyle(document.body).backgroundColor");
    assert_eq!(bg, json!("rgb(13, 17, 23)"), "dark by the system's setting");
    b.shot("build-failed-phone-dark");
    assert_eq!(b.errors(), json!([]));
}

/// Issue 28 (7): an errored build's page opened at the first failure of the whole log,
/// another job's, not the job its header names. Now it opens at that job's tab, at its
/// failing command.
#[test]
fn an_ended_build_opens_at_the_job_its_header_names() {
    let yml = "language: shell\nenv:\n  - A=1\n  - A=2\nbefore_install:\n  - test $A = 1\nscript:\n  - test $A = 2\nnotifications:\n  email: false\n";
    let site = Site::new(yml, "", &[]);
    site.push();
    assert_eq!(site.ended(1), "errored");
    let mut b = Browser::open();
    b.goto(&format!("{}/builds/1", site.base));
    let why = b.until(
        "(() => { const a = document.querySelector('#why a'); return a && a.textContent; })()",
    );
    assert_eq!(why, json!("job 1.2"), "the header names the errored job");
    let tab = b.until(
        "(() => { const t = document.querySelector('#tabs a.on'); return t && t.textContent; })()",
    );
    assert!(tab.as_str().unwrap().starts_with("Job 1.2"), "{tab}");
    let marked = b.until("(() => { const l = document.querySelector('#log .l.fail'); return l && l.textContent; })()");
    assert!(
        marked.as_str().unwrap().contains("$ test $A = 1"),
        "{marked}"
    );
    assert_eq!(b.errors(), json!([]));
}

/// A live build's page follows the tail; scrolling up stops following (new lines no
/// longer move the page) and says so; the button follows again.
#[test]
fn a_live_log_follows_the_tail_until_the_reader_scrolls_up() {
    let yml = "language: shell\nscript:\n  - for i in $(seq 1 400); do echo \"tail line $i\"; sleep 0.05; done\nnotifications:\n  email: false\n";
    let site = Site::new(yml, "", &[]);
    site.push();
    let mut b = Browser::open();
    b.goto(&format!("{}/builds/1", site.base));
    let at_bottom = "(innerHeight + scrollY >= document.documentElement.scrollHeight - 10)";
    let lines = "document.querySelectorAll('#log .l').length";
    b.until(&format!("{lines} > 80 && {at_bottom} && scrollY > 0"));
    b.shot("build-live");
    b.op(json!({"op": "wheel", "dy": -1500}));
    b.until(&format!("!{at_bottom}"));
    let y = b.eval("scrollY").as_f64().unwrap();
    let n = b.eval(lines).as_u64().unwrap();
    b.until(&format!("{lines} > {n} + 30"));
    let y2 = b.eval("scrollY").as_f64().unwrap();
    assert!(
        (y2 - y).abs() < 2.0,
        "the page moved while not following: {y} → {y2}"
    );
    let label = b.eval("document.querySelector('#follow button').textContent");
    assert_eq!(label, json!("Follow the log"));
    b.click("#follow button");
    b.until(at_bottom);
    assert_eq!(b.errors(), json!([]));
    assert_eq!(site.ended(1), "passed");
}

/// Cancel on the build page: refused with a wrong token (said on the page), done with
/// the right one; restart queues the build again.
#[test]
fn cancel_and_restart_need_the_api_token() {
    let yml =
        "language: shell\nscript:\n  - echo started; sleep 120\nnotifications:\n  email: false\n";
    let site = Site::new(
        yml,
        "api_token_env = \"RUNWAY_TEST_API_TOKEN\"\n",
        &[("RUNWAY_TEST_API_TOKEN", "t0ken")],
    );
    site.push();
    let mut b = Browser::open();
    b.goto(&format!("{}/builds/1", site.base));
    b.until(&format!("/started/.test({LOG_TEXT})"));
    b.op(json!({"op": "answer", "value": "wrong"}));
    b.click("#cancel");
    let said = b.until("(() => { const t = document.querySelector('.actions .said').textContent; return t.startsWith('Refused') && t; })()");
    assert!(said.as_str().unwrap().contains("401"), "{said}");
    assert_eq!(site.srv.json("/api/builds/1")["state"], json!("running"));
    b.op(json!({"op": "answer", "value": "t0ken"}));
    b.click("#cancel");
    b.until("document.querySelector('h1 .badge') && document.querySelector('h1 .badge').textContent === 'canceled'");
    assert_eq!(site.ended(1), "canceled");
    // The token is kept in this browser: restart asks no more.
    b.op(json!({"op": "answer", "value": null}));
    b.click("#restart");
    b.until("(() => { const t = document.querySelector('.actions .said'); return t && /Restarted/.test(t.textContent); })()");
    let st = site.srv.json("/api/builds/1")["state"].clone();
    assert!(st == json!("queued") || st == json!("running"), "{st}");
    b.goto(&format!("{}/builds/1", site.base));
    b.until("document.getElementById('cancel')");
    b.click("#cancel");
    assert_eq!(site.ended(1), "canceled");
}

/// Issue 26, item 5: a branch's badge, as a README shows it, says the state of its
/// last finished push build in Travis's words and colours; a repository or branch not
/// built says "unknown" (an image, not a 404 page); `no-cache` with an ETag.
#[test]
fn a_branchs_badge_shows_its_last_state() {
    let site = Site::new(
        "language: shell\nscript: test -f ok\nnotifications:\n  email: false\n",
        "",
        &[],
    );
    let value = "document.getElementById('value').textContent";
    let fill = "document.getElementById('state').getAttribute('fill')";
    let mut b = Browser::open();
    b.goto(&format!("{}/badge/o/app.svg", site.base));
    assert_eq!(b.eval(value), json!("unknown"));
    site.push();
    assert_eq!(site.ended(1), "failed");
    b.goto(&format!("{}/badge/o/app.svg?branch=master", site.base));
    assert_eq!(
        (b.eval(value), b.eval(fill)),
        (json!("failing"), json!("#e05d44"))
    );
    std::fs::write(site.work.join("ok"), "").unwrap();
    site.commit(
        "language: shell\nscript: test -f ok\nnotifications:\n  email: false\n",
        "ok",
    );
    site.push();
    assert_eq!(site.ended(2), "passed");
    b.goto(&format!("{}/badge/o/app.svg", site.base));
    assert_eq!(
        (b.eval(value), b.eval(fill)),
        (json!("passing"), json!("#4c1"))
    );
    b.shot("badge-passing");
    b.goto(&format!("{}/badge/o/app.svg?branch=nope", site.base));
    assert_eq!(b.eval(value), json!("unknown"));
    b.goto(&format!("{}/badge/x/unknown.svg", site.base));
    assert_eq!(b.eval(value), json!("unknown"));
    let raw = crate::common::server::http(&site.srv.addr, "GET", "/badge/o/app.svg", &[], b"");
    assert_eq!(raw.0, 200);
    let (code, _) = crate::common::server::http(
        &site.srv.addr,
        "GET",
        "/badge/o/app.svg",
        &[("If-None-Match", "\"passing\"")],
        b"",
    );
    assert_eq!(code, 304, "unchanged: not sent again");
}

/// Issue 26 (2): a fork's pull request waits on its page, saying why, with "Approve and
/// run" for whoever has the API token; approved, it runs and passes.
#[test]
fn a_forks_pull_request_is_approved_on_its_page() {
    let yml = "language: shell\nscript: echo \"from $TRAVIS_PULL_REQUEST_SLUG\"\nnotifications:\n  email: false\n";
    let site = Site::new(
        yml,
        "api_token_env = \"RUNWAY_TEST_API_TOKEN\"\n",
        &[("RUNWAY_TEST_API_TOKEN", "t0ken")],
    );
    let base = git(&site.work, &["rev-parse", "HEAD"]);
    git(&site.work, &["checkout", "-q", "-b", "patch"]);
    std::fs::write(site.work.join("f.txt"), "x\n").unwrap();
    git(&site.work, &["add", "f.txt"]);
    git(&site.work, &["commit", "-q", "-m", "a stranger's change"]);
    git(&site.work, &["push", "-q", "hub", "patch:refs/pull/3/head"]);
    let head = git(&site.work, &["rev-parse", "HEAD"]);
    let body = json!({"action": "opened", "number": 3, "pull_request": {
        "number": 3, "title": "t",
        "head": {"ref": "patch", "sha": head, "repo": {"full_name": "stranger/app"}},
        "base": {"ref": "master", "sha": base, "repo": {"full_name": "o/app"}}},
        "repository": {"full_name": "o/app"}})
    .to_string();
    let sig = format!(
        "sha256={}",
        crate::common::server::sign("s", body.as_bytes())
    );
    let (code, text) = site.srv.request(
        "POST",
        "/hooks/github",
        &[
            ("X-GitHub-Event", "pull_request"),
            ("X-Hub-Signature-256", &sig),
        ],
        body.as_bytes(),
    );
    assert_eq!(code, 202, "{text}");
    let mut b = Browser::open();
    b.goto(&format!("{}/builds/1", site.base));
    let why =
        b.until("document.querySelector('.why') && document.querySelector('.why').textContent");
    assert!(
        why.as_str()
            .unwrap()
            .contains("comes from a fork (stranger/app)"),
        "{why}"
    );
    b.shot("build-awaiting-approval");
    b.op(json!({"op": "answer", "value": "t0ken"}));
    b.click("#approve");
    b.until("(() => { const t = document.querySelector('.actions .said'); return t && /Approved/.test(t.textContent); })()");
    assert_eq!(site.ended(1), "passed");
    let log = site.srv.request("GET", "/api/builds/1/log", &[], b"").1;
    assert!(log.contains("from stranger/app"), "{log}");
}

/// Issue 28 (10): a build page links its commit and what its push compares on the
/// forge (`web_url`), and its raw log, to read or to save.
#[test]
fn a_build_page_links_its_commit_compare_and_raw_log() {
    let site = Site::with_repo(
        "language: shell\nscript: echo linked-log-line\nnotifications:\n  email: false\n",
        "",
        "web_url = \"https://forge.example/o/app\"\n",
        &[],
    );
    let first = git(&site.work, &["rev-parse", "HEAD"]);
    site.commit(
        "language: shell\nscript: echo linked-log-line\nnotifications:\n  email: false\n# two\n",
        "second",
    );
    let second = git(&site.work, &["rev-parse", "HEAD"]);
    let body =
        json!({"repo": "o/app", "branch": "master", "commit": second, "before": first}).to_string();
    let (code, text) = site.srv.request(
        "POST",
        "/hooks/generic",
        &[("Authorization", "Bearer s")],
        body.as_bytes(),
    );
    assert_eq!(code, 202, "{text}");
    assert_eq!(site.ended(1), "passed");
    let mut b = Browser::open();
    b.goto(&format!("{}/builds/1", site.base));
    let href = |id: &str| format!("document.getElementById('{id}').getAttribute('href')");
    assert_eq!(
        b.eval(&href("commit-link")),
        json!(format!("https://forge.example/o/app/commit/{second}"))
    );
    assert_eq!(
        b.eval(&href("compare-link")),
        json!(format!(
            "https://forge.example/o/app/compare/{first}...{second}"
        ))
    );
    b.shot("build-links");
    assert_eq!(
        b.eval(&href("download-log")),
        json!("/api/builds/1/log?repo=o%2Fapp&download=1")
    );
    b.click("#raw-log");
    let raw = b.until("document.body && document.body.innerText.includes('linked-log-line') && document.body.innerText");
    assert!(raw.as_str().unwrap().contains("linked-log-line"), "{raw}");
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(&site.srv.addr).unwrap();
    write!(
        conn,
        "GET /api/builds/1/log?repo=o%2Fapp&download=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-disposition: attachment; filename=\"o-app-build-1.log\""),
        "{answer}"
    );
}

/// Issue 28 (10): a repository's branches, each with its last build's state; the list
/// of one branch's builds (`?branch=`), which takes only that branch's new builds live.
#[test]
fn the_list_shows_each_branch_and_filters_to_one() {
    let yml = "language: shell\nscript: test \"$TRAVIS_BRANCH\" = master\nnotifications:\n  email: false\n";
    let site = Site::new(yml, "", &[]);
    let sha = git(&site.work, &["rev-parse", "HEAD"]);
    git(&site.work, &["push", "-q", "hub", "master:dev"]);
    let push = |branch: &str| {
        let body = json!({"repo": "o/app", "branch": branch, "commit": sha}).to_string();
        let (code, text) = site.srv.request(
            "POST",
            "/hooks/generic",
            &[("Authorization", "Bearer s")],
            body.as_bytes(),
        );
        assert_eq!(code, 202, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()["number"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(site.ended(push("master")), "passed");
    assert_eq!(site.ended(push("dev")), "failed");
    let mut b = Browser::open();
    b.goto(&format!("{}/?repo=o%2Fapp", site.base));
    let branch_state = |b: &mut Browser, name: &str| {
        b.eval(&format!(
            "document.querySelector('#branches li[data-branch=\"{name}\"] .badge').textContent"
        ))
    };
    assert_eq!(branch_state(&mut b, "master"), json!("passed"));
    assert_eq!(branch_state(&mut b, "dev"), json!("failed"));
    b.shot("branches");
    b.click("#branches li[data-branch=\"dev\"] a");
    b.until("location.search.includes('branch=dev')");
    let rows = "[...document.querySelectorAll('#builds tbody tr')].length";
    assert_eq!(b.eval(rows), json!(1));
    // Live: a new build of master is not shown here; one of dev is.
    let m = push("master");
    let d = push("dev");
    b.until("document.querySelector('#builds tr[data-id]') && [...document.querySelectorAll('#builds tbody tr')].length === 2");
    site.ended(m);
    site.ended(d);
    let branches = b.eval("[...document.querySelectorAll('#builds tbody tr td:nth-child(6)')].map(td => td.textContent.trim())");
    assert_eq!(branches, json!(["dev", "dev"]), "only dev's builds");
}

/// Issue 28 (10): "View config": the `.travis.yml` as the build read it, what runway
/// said of it at its line and column, and the decisions with their reasons.
#[test]
fn view_config_shows_the_file_as_read_and_the_decisions() {
    let yml = "language: shell\nenv:\n  - LEVEL=1\n  - LEVEL=2\nscript: echo \"level $LEVEL\"\nsudo: required\ndeploy:\n  provider: s3\n  bucket: b\n  on:\n    branch: release\nnotifications:\n  email: false\n";
    let site = Site::new(yml, "", &[]);
    site.push();
    assert_eq!(site.ended(1), "passed");
    let mut b = Browser::open();
    b.goto(&format!("{}/builds/1", site.base));
    b.click("#view-config");
    let decisions = b.until(
        "document.getElementById('decisions') && document.getElementById('decisions').textContent",
    );
    let decisions = decisions.as_str().unwrap();
    assert!(decisions.contains("Build runs"), "{decisions}");
    assert!(decisions.contains("2 job(s)"), "{decisions}");
    assert!(decisions.contains("deploy s3: skipped"), "{decisions}");
    assert!(
        decisions.contains("this branch is not permitted: master"),
        "{decisions}"
    );
    let text = b.eval("document.getElementById('config-text').textContent");
    assert!(text.as_str().unwrap().contains("bucket: b"), "{text}");
    let said = b
        .eval("document.getElementById('said') ? document.getElementById('said').textContent : ''");
    assert!(
        said.as_str().unwrap().contains(".travis.yml:6:1"),
        "sudo, at its line: {said}"
    );
    b.shot("view-config");
}

/// Issue 28 (10): each log line's time, shown on demand: the stored log keeps when each
/// line was written (the lines stay as they were), and "Show times" puts them before
/// the lines.
#[test]
fn log_lines_show_their_times_on_demand() {
    let site = Site::new(
        "language: shell\nscript: echo first-timed-line; sleep 2; echo second-timed-line\nnotifications:\n  email: false\n",
        "",
        &[],
    );
    site.push();
    assert_eq!(site.ended(1), "passed");
    let mut b = Browser::open();
    b.goto(&format!("{}/builds/1#job=1.1", site.base));
    b.until("document.querySelector('#log .l > span[data-t]')");
    assert_eq!(
        b.eval("document.getElementById('log').classList.contains('times')"),
        json!(false)
    );
    b.click("#times-toggle");
    assert_eq!(
        b.eval("document.getElementById('log').classList.contains('times')"),
        json!(true)
    );
    assert_eq!(
        b.eval("document.getElementById('times-toggle').textContent"),
        json!("Hide times")
    );
    let at = |text: &str| {
        format!(
            "(() => {{ const l = [...document.querySelectorAll('#log .l')].find(l => l.lastElementChild.textContent === '{text}'); \
             const [h, m, s] = l.lastElementChild.dataset.t.split(':').map(Number); return h * 3600 + m * 60 + s; }})()"
        )
    };
    let first = b.eval(&at("first-timed-line")).as_i64().unwrap();
    let second = b.eval(&at("second-timed-line")).as_i64().unwrap();
    let apart = (second - first).rem_euclid(86_400);
    assert!((1..=10).contains(&apart), "{first} → {second}");
    b.shot("log-times");
    // The raw log is as it was: no time in it.
    let raw = site.srv.request("GET", "/api/builds/1/log", &[], b"").1;
    assert!(raw.contains("first-timed-line\n"), "{raw}");
}

/// Issue 28 (10): one job of an ended build restarted on its own (with the API token):
/// the other job keeps its result and log; the job's first run is kept as an attempt,
/// listed with its log; the build's state is its jobs' as they are now.
#[test]
fn one_job_is_restarted_and_its_first_attempt_is_kept() {
    let marker = std::path::PathBuf::from(format!(
        "/var/tmp/runway-test-rerun-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let yml = format!(
        "language: shell\nenv:\n  - PART=one\n  - PART=two\nscript: echo \"running $PART\"; test \"$PART\" = one || test -f {}\nnotifications:\n  email: false\n",
        marker.display()
    );
    let site = Site::new(
        &yml,
        "api_token_env = \"RUNWAY_TEST_API_TOKEN\"\n",
        &[("RUNWAY_TEST_API_TOKEN", "t0ken")],
    );
    site.push();
    assert_eq!(site.ended(1), "failed");
    let before = site.srv.json("/api/builds/1");
    let one_log = site
        .srv
        .request("GET", "/api/builds/1/log?job=1.1", &[], b"")
        .1;
    std::fs::write(&marker, "").unwrap();
    let mut b = Browser::open();
    b.goto(&format!("{}/builds/1", site.base));
    b.op(json!({"op": "answer", "value": "t0ken"}));
    b.click("#restart-job-1-2");
    b.until("(() => { const t = document.querySelector('.actions .said'); return t && /Restarted/.test(t.textContent); })()");
    let ended = site.ended(1);
    let _ = std::fs::remove_file(&marker);
    assert_eq!(ended, "passed");
    let after = site.srv.json("/api/builds/1");
    assert_eq!(after["jobs"][0]["result"], "passed", "{after}");
    assert_eq!(
        after["jobs"][0]["duration_ms"], before["jobs"][0]["duration_ms"],
        "job 1.1 kept"
    );
    assert_eq!(
        site.srv
            .request("GET", "/api/builds/1/log?job=1.1", &[], b"")
            .1,
        one_log
    );
    assert_eq!(after["attempts"][0]["number"], "1.2", "{after}");
    assert_eq!(after["attempts"][0]["result"], "failed", "{after}");
    let first = site
        .srv
        .request("GET", "/api/builds/1/log?job=1.2&attempt=1", &[], b"")
        .1;
    assert!(
        first.contains("running two") && first.contains("exited with 1"),
        "{first}"
    );
    b.goto(&format!("{}/builds/1", site.base));
    let listed = b.until(
        "document.getElementById('attempts') && document.getElementById('attempts').textContent",
    );
    assert!(
        listed.as_str().unwrap().contains("Job 1.2, attempt 1"),
        "{listed}"
    );
    b.shot("job-restarted");
}
