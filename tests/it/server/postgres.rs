//! The build store in PostgreSQL (runway.toml's `database_url_env`): a real cluster
//! (Debian's postgresql, made for this test process), two `runway serve` nodes on it.

use super::*;

/// What a node's `/events` stream has said so far (`build` events as number and state),
/// read on a thread; and the connection.
type Heard = std::sync::Arc<std::sync::Mutex<Vec<(u64, String)>>>;

fn events(addr: &str) -> (Heard, std::net::TcpStream) {
    use std::io::{BufRead, Write};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let out = seen.clone();
    let kept = s.try_clone().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            // The chunked body's last chunk: the server ended the stream itself.
            if line.trim() == "0" {
                out.lock().unwrap().push((0, "last chunk".to_string()));
            }
            if let Some(json) = line.strip_prefix("data:")
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(json.trim())
                && let (Some(n), Some(st)) = (v["number"].as_u64(), v["state"].as_str())
            {
                out.lock().unwrap().push((n, st.to_string()));
            }
        }
        out.lock().unwrap().push((0, "closed".to_string()));
    });
    (seen, kept)
}

/// A server whose store is PostgreSQL builds a push and records it there (no SQLite
/// file is made). A second node on the same database with `concurrency = 0` takes
/// webhooks and serves pages but runs no job: the first node runs what it queues, woken
/// through the database, and the second's list hears of every start and end there
/// (LISTEN/NOTIFY). Each build is numbered and run once.
#[test]
fn two_serve_nodes_share_one_postgresql_store() {
    let url = crate::common::postgres::shared().database("serve");
    let s = Setup::new(
        "language: shell\nscript: echo built on $(hostname)\nnotifications:\n  email: false\n",
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nauto_cancel = false",
    );
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_DATABASE_URL", url.as_str()),
    ];
    let a = Server::start(&s.config, &s.state(), &env);
    let other_state = s.dir.path().join("state-b");
    let b_config = s.config_with("b", 0);
    let b = Server::start(&b_config, &other_state, &env);
    let (heard, stream) = events(&b.addr);
    let sha = s.head();
    for _ in 0..3 {
        let (code, text) = generic(&b, "master", &sha);
        assert_eq!(code, 202, "{text}");
    }
    let (code, text) = generic(&a, "master", &sha);
    assert_eq!(code, 202, "{text}");
    let all_passed = |srv: &Server| {
        let st = states(srv);
        st.len() == 4 && st.iter().all(|(_, s)| s == "passed")
    };
    wait_for(
        || all_passed(&a) && all_passed(&b),
        "four builds passed, seen from both nodes",
    );
    let mut numbers: Vec<u64> = states(&b).into_iter().map(|(n, _)| n).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3, 4], "numbered once across the nodes");
    // Recorded in PostgreSQL, each build once with its job; no SQLite store was made.
    let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let jobs: i64 = db
        .query_one("SELECT COUNT(*) FROM jobs", &[])
        .unwrap()
        .get(0);
    assert_eq!(jobs, 4);
    assert!(!s.state().join("runway.db").exists());
    assert!(!other_state.join("runway.db").exists());
    let b1 = b.json("/api/builds/1");
    assert_eq!(b1["jobs"][0]["result"], "passed", "{b1}");
    // The history commands read the same store when given the runway.toml.
    let cli = |args: &[&str]| {
        let mut c = crate::common::runway();
        c.args(args)
            .arg("--config")
            .arg(&b_config)
            .env("RUNWAY_TEST_DATABASE_URL", &url);
        crate::common::run(&mut c)
    };
    let listed = cli(&["builds", "--json"]);
    assert_eq!(listed.code, 0, "{}", listed.all());
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 4, "{rows}");
    let log = cli(&["log", "1", "--repo", "o/app"]);
    assert!(log.stdout.contains("built on"), "{}", log.all());
    // The node with concurrency = 0 ran nothing (no running build's log was made
    // there); its list heard every build start and pass, from the other node.
    assert!(!other_state.join("logs").exists(), "node B ran a build");
    wait_for(
        || {
            let h = heard.lock().unwrap();
            (1..=4).all(|n| {
                h.contains(&(n, "running".to_string())) && h.contains(&(n, "passed".to_string()))
            })
        },
        "node B's /events to hear each build start and pass",
    );
    // The open stream is ended by the node when it stops (its last chunk sent), rather
    // than holding the node's shutdown until the connection deadline cuts it.
    drop(b);
    drop(stream);
    let h = heard.lock().unwrap().clone();
    let end: Vec<&String> = h.iter().filter(|(n, _)| *n == 0).map(|(_, s)| s).collect();
    assert_eq!(end, ["last chunk", "closed"], "{h:?}");
}

/// Several nodes on PostgreSQL, jobs run in the nodes: a node killed (SIGKILL) while it
/// runs a build leaves it to the others, which error it ("interrupted") once the
/// killed node's lease lapses, without waiting for a restart; a node starting meanwhile
/// leaves the other node's running builds alone.
#[test]
fn a_killed_nodes_running_build_is_errored_by_another() {
    let url = crate::common::postgres::shared().database("lapsed");
    let s = Setup::new(
        "language: shell\nscript: sleep 113\nnotifications:\n  email: false\n",
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nnode_lease_ms = 2000",
    );
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_DATABASE_URL", url.as_str()),
    ];
    let a = Server::start(&s.config, &s.state(), &env);
    let (code, text) = generic(&a, "master", &s.head());
    assert_eq!(code, 202, "{text}");
    wait_for(
        || states(&a) == [(1, "running".to_string())],
        "build #1 to run on A",
    );
    let b = Server::start(&s.config, &s.dir.path().join("state-b"), &env);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        states(&b),
        [(1, "running".to_string())],
        "B's start left A's build alone"
    );
    a.signal("-KILL");
    drop(a);
    wait_for(
        || states(&b) == [(1, "errored".to_string())],
        "B to error A's build",
    );
    let row = b.json("/api/builds/1");
    assert!(
        row["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("interrupted"),
        "{row}"
    );
    crate::common::wait_gone("sleep 113", 30);
}

/// Issue 30: PostgreSQL stopped (`pg_ctl stop -m fast`) under a node running a build,
/// long enough for the job to end meanwhile, then started again. While it is down,
/// webhooks get 503 with Retry-After (the forge delivers again: nothing is lost), the
/// API and the pages say the store is unreachable (never an empty list or a 404), and
/// the log says so once. Once it is back the node reconnects by itself: the build that
/// ended meanwhile is recorded passed with its log (run once), a delivery builds, and
/// the log says the store is back. A second restart, while idle, is survived as well. A SIGTERM while the store is down still stops the
/// node.
#[test]
fn a_database_that_restarts_is_reconnected_and_nothing_is_lost() {
    let pg = crate::common::postgres::own();
    let url = pg.database("blip");
    let s = Setup::new(
        "language: shell\nscript: sleep 4; echo survived-the-blip\nnotifications:\n  email: false\n",
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nauto_cancel = false",
    );
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_DATABASE_URL", url.as_str()),
    ];
    let mut srv = Server::start(&s.config, &s.state(), &env);
    let log = said(&mut srv);
    // A second node, which runs nothing: its list hears of the first node's builds
    // through LISTEN, which must be made again after the restart.
    let b_config = s.config_with("b", 0);
    let mut b = Server::start(&b_config, &s.dir.path().join("state-b"), &env);
    let b_log = said(&mut b);
    let (heard, _stream) = events(&b.addr);
    let sha = s.head();
    let (code, text) = generic(&srv, "master", &sha);
    assert_eq!(code, 202, "{text}");
    wait_for(
        || states(&srv) == [(1, "running".to_string())],
        "build 1 running",
    );
    pg.stop();
    let (code, text) = generic(&srv, "master", &sha);
    assert_eq!(code, 503, "a delivery while the store is down: {text}");
    let api = raw_get(&srv.addr, "/api/builds");
    assert!(api.starts_with("HTTP/1.1 503"), "{api}");
    assert!(api.to_ascii_lowercase().contains("retry-after: 5"), "{api}");
    assert!(api.contains("unreachable"), "{api}");
    let one = raw_get(&srv.addr, "/api/builds/1");
    assert!(one.starts_with("HTTP/1.1 503"), "not a 404: {one}");
    let page = raw_get(&srv.addr, "/");
    assert!(page.starts_with("HTTP/1.1 503"), "{page}");
    assert!(page.contains("The build store is unreachable"), "{page}");
    assert!(!page.contains("No builds yet"), "{page}");
    // The job ends while the store is down (it sleeps 4 s).
    std::thread::sleep(Duration::from_secs(6));
    pg.start();
    wait_for(
        || generic(&srv, "master", &sha).0 == 202,
        "a delivery accepted once the store is back",
    );
    let mut seen = Vec::new();
    let both = came_true(|| {
        seen = states(&srv);
        seen.len() == 2 && seen.iter().all(|(_, s)| s == "passed")
    });
    assert!(
        both,
        "both builds passed: {seen:?}; {:?}; {}",
        srv.json("/api/builds/1"),
        log.lock().unwrap()
    );
    let b1 = srv.json("/api/builds/1");
    assert_eq!(b1["jobs"].as_array().unwrap().len(), 1, "{b1}");
    let (_, text) = srv.request("GET", "/api/builds/1/log", &[], b"");
    assert_eq!(
        text.lines().filter(|l| *l == "survived-the-blip").count(),
        1,
        "echoed once, run once: {text}"
    );
    let b_heard = came_true(|| heard.lock().unwrap().contains(&(2, "passed".to_string())));
    assert!(
        b_heard,
        "node B to hear build 2 pass (its LISTEN made again): {:?}\n{}",
        heard.lock().unwrap(),
        b_log.lock().unwrap()
    );
    let said = log.lock().unwrap().clone();
    assert_eq!(
        said.matches("is unreachable").count(),
        1,
        "said once: {said}"
    );
    assert!(said.contains("reachable again"), "{said}");
    // A restart while nothing runs: the next push is built and node B hears of it (its
    // LISTEN made again once more), without either node being restarted.
    pg.stop();
    pg.start();
    wait_for(
        || generic(&srv, "master", &sha).0 == 202,
        "a delivery accepted after an idle restart",
    );
    wait_for(
        || states(&srv).contains(&(3, "passed".to_string())),
        "build 3 passed",
    );
    let b_heard = came_true(|| heard.lock().unwrap().contains(&(3, "passed".to_string())));
    assert!(
        b_heard,
        "node B to hear build 3 pass after the idle restart: {:?}\n{}",
        heard.lock().unwrap(),
        b_log.lock().unwrap()
    );
    assert_eq!(
        b.json("/api/builds").as_array().map(|a| a.len()),
        Some(3),
        "node B lists every build"
    );
    // A SIGTERM with the store down again still stops the node.
    pg.stop();
    srv.signal("-TERM");
    assert!(srv.exited_within(60), "the node stopped");
}

/// Issue 30: `database_url_env` naming a variable that is not set started the node on
/// SQLite in its state directory, an island the other nodes never see, and the history
/// commands read that island. Now the node does not start, and the commands refuse,
/// each naming the variable (exit 2); no SQLite store is made.
#[test]
fn a_database_variable_that_is_not_set_is_an_error_not_an_island() {
    let s = Setup::new(
        "language: shell\nscript: true\n",
        "database_url_env = \"RUNWAY_TEST_UNSET_DATABASE_URL\"",
    );
    let runs = [
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["builds"],
        vec!["workers"],
    ];
    for args in runs {
        let mut c = crate::common::runway();
        c.args(&args)
            .arg("--config")
            .arg(&s.config)
            .env("RUNWAY_STATE_DIR", s.state())
            .env_remove("RUNWAY_TEST_UNSET_DATABASE_URL");
        // A node that starts anyway would serve until stopped: it is given a minute.
        let out = crate::common::run_within(&mut c, Duration::from_secs(60));
        assert_eq!(out.code, 2, "{args:?}: {}", out.all());
        assert!(
            out.stderr.contains(
                "database_url_env names RUNWAY_TEST_UNSET_DATABASE_URL, which is not set"
            ),
            "{args:?}: {}",
            out.all()
        );
    }
    assert!(!s.state().join("runway.db").exists());
}

/// Issue 25: the store was called synchronously inside the async server, behind one
/// lock: requests waiting on PostgreSQL (a table locked by someone else, a slow query)
/// held the runtime's threads and that lock, and the node answered nothing else, not
/// even its stylesheet, until they returned. Now a store call never holds up the
/// runtime's threads, and PostgreSQL calls do not take turns behind one lock: while
/// three list requests wait on a locked `builds` table, the node serves its script and
/// the workers' list (another table), and the three lists are answered once the lock
/// goes.
#[test]
fn requests_waiting_on_the_database_hold_up_no_other_request() {
    let url = crate::common::postgres::shared().database("held");
    let s = Setup::new(
        "language: shell\nscript: echo ok\nnotifications:\n  email: false\n",
        // Connections to spare beside the three waiting lists and the node's own
        // loops (which wait on the locked table too).
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\napi_token_env = \"RUNWAY_TEST_API_TOKEN\"\ndatabase_pool = 8",
    );
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_DATABASE_URL", url.as_str()),
        ("RUNWAY_TEST_API_TOKEN", API_TOKEN),
    ];
    let mut srv = Server::start(&s.config, &s.state(), &env);
    if let Some(mut out) = srv.stdout.take() {
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    }
    let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let mut lock = db.transaction().unwrap();
    lock.batch_execute("LOCK TABLE builds IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let (lists_tx, lists) = std::sync::mpsc::channel();
    for _ in 0..3 {
        let (a, tx) = (srv.addr.clone(), lists_tx.clone());
        std::thread::spawn(move || {
            let _ = tx.send(crate::common::server::http(
                &a,
                "GET",
                "/api/builds",
                &[],
                b"",
            ));
        });
    }
    let mut watch = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    wait_for(
        || {
            let waiting: i64 = watch
                .query_one(
                    "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND relation = 'builds'::regclass",
                    &[],
                )
                .unwrap()
                .get(0);
            waiting >= 1
        },
        "a list request waiting on the locked table",
    );
    let answered = |what: &str, path: &'static str, headers: Vec<(&'static str, String)>| {
        let (tx, rx) = std::sync::mpsc::channel();
        let a = srv.addr.clone();
        std::thread::spawn(move || {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let _ = tx.send(crate::common::server::http(&a, "GET", path, &h, b""));
        });
        let got = rx.recv_timeout(Duration::from_secs(30));
        assert!(
            got.is_ok(),
            "{what}: no answer while the lists wait on the database"
        );
        got.unwrap()
    };
    let (code, text) = answered("the pages' script", "/assets/app.js", Vec::new());
    assert_eq!(code, 200, "{text}");
    let (code, text) = answered(
        "the workers' list",
        "/api/workers",
        vec![("Authorization", format!("Bearer {API_TOKEN}"))],
    );
    assert_eq!(code, 200, "{text}");
    assert!(
        lists.try_recv().is_err(),
        "a list was answered while its table was locked"
    );
    lock.commit().unwrap();
    for _ in 0..3 {
        let (code, text) = lists.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(code, 200, "{text}");
    }
}

/// Issue 26, item 4: `[[repo.cron]]` builds a branch's tip as event `cron` when due:
/// once across two nodes starting together on one database; after a downtime that
/// missed three daily runs, once (not three times); a cron with
/// `dont_run_if_recent_build_exists` is skipped while the branch had a build in the
/// last 24 hours.
#[test]
fn a_cron_runs_once_across_nodes_and_once_after_a_downtime() {
    let url = crate::common::postgres::shared().database("cron");
    let s = Setup::new(
        "language: shell\nscript: echo \"event $TRAVIS_EVENT_TYPE\"\nnotifications:\n  email: false\n",
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"",
    );
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str("[[repo.cron]]\nbranch = \"master\"\ninterval = \"daily\"\n");
    std::fs::write(&s.config, &toml).unwrap();
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_DATABASE_URL", url.as_str()),
    ];
    let crons = |srv: &Server| -> Vec<(u64, String)> {
        srv.json("/api/builds")
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["event"] == "cron")
            .map(|b| {
                (
                    b["number"].as_u64().unwrap(),
                    b["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let read_schedule = |log: &std::sync::Arc<std::sync::Mutex<String>>| {
        wait_for(
            || log.lock().unwrap().contains("cron schedule read"),
            "the schedule read",
        )
    };
    let mut a = Server::start(&s.config, &s.state(), &env);
    let a_log = said(&mut a);
    let mut b = Server::start(&s.config_with("b", 2), &s.dir.path().join("state-b"), &env);
    let b_log = said(&mut b);
    read_schedule(&a_log);
    read_schedule(&b_log);
    wait_for(
        || crons(&a).iter().all(|(_, st)| st == "passed") && !crons(&a).is_empty(),
        "the cron build",
    );
    assert_eq!(crons(&a).len(), 1, "{:?}", crons(&a));
    let n = crons(&a)[0].0;
    let text = a
        .request("GET", &format!("/api/builds/{n}/log"), &[], b"")
        .1;
    assert!(text.contains("event cron"), "{text}");
    drop(a);
    drop(b);

    // Down for three days: the daily cron missed three runs.
    let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    db.execute(
        "UPDATE crons SET next_at = next_at - 4 * 86400, last_run = last_run - 3 * 86400",
        &[],
    )
    .unwrap();
    db.execute("UPDATE builds SET started_at = started_at - 3 * 86400", &[])
        .unwrap();
    let mut a = Server::start(&s.config, &s.state(), &env);
    let a_log = said(&mut a);
    read_schedule(&a_log);
    wait_for(
        || crons(&a).len() == 2 && crons(&a).iter().all(|(_, st)| st == "passed"),
        "one more cron build",
    );
    let said_now = a_log.lock().unwrap().clone();
    assert_eq!(
        said_now.matches("cron build queued").count(),
        1,
        "{said_now}"
    );
    assert_eq!(
        crons(&a).len(),
        2,
        "one run for the missed ones: {:?}",
        crons(&a)
    );
}

/// Issue 26 (3): two nodes on one database both hear every change of a build, and its
/// statuses are posted once each: queued, running, ended (the status outbox in the
/// store, one row per build and phase, claimed by one node).
#[test]
fn statuses_are_posted_once_whichever_node_hears_the_change() {
    let contract = crate::common::contract::Contract::github_statuses();
    let url = crate::common::postgres::shared().database("statuses");
    let s = Setup::new(
        "language: shell\nscript: echo posted-once\nnotifications:\n  email: false\n",
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\npublic_url = \"https://ci.example\"\nauto_cancel = false",
    );
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str(&format!(
        "api_url = \"http://{}\"\nstatus_token_env = \"RUNWAY_TEST_STATUS_TOKEN\"\n",
        contract.addr
    ));
    std::fs::write(&s.config, &toml).unwrap();
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_DATABASE_URL", url.as_str()),
        ("RUNWAY_TEST_STATUS_TOKEN", "tok"),
    ];
    let a = Server::start(&s.config, &s.state(), &env);
    let b = Server::start(&s.config_with("b", 0), &s.dir.path().join("state-b"), &env);
    let sha = s.head();
    let mut numbers = Vec::new();
    for _ in 0..3 {
        let (code, text) = generic(&b, "master", &sha);
        assert_eq!(code, 202, "{text}");
        numbers.push(
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["number"]
                .as_u64()
                .unwrap(),
        );
    }
    let descriptions = || -> Vec<(u64, String)> {
        contract
            .calls()
            .iter()
            .map(|c| {
                let v = c.json();
                let n = v["target_url"]
                    .as_str()
                    .and_then(|u| u.split("/builds/").nth(1))
                    .and_then(|u| u.split('?').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                (n, v["description"].as_str().unwrap_or_default().to_string())
            })
            .collect()
    };
    let ends = came_true(|| {
        let d = descriptions();
        numbers
            .iter()
            .all(|n| d.iter().any(|(m, t)| m == n && t == "The build passed"))
    });
    assert!(ends, "every build's end posted: {:#?}", descriptions());
    // Each node has heard every change by now (the ends came last); one post each.
    wait_for(
        || states(&a).iter().all(|(_, st)| st == "passed"),
        "all passed",
    );
    let d = descriptions();
    for n in &numbers {
        for text in ["The build is queued", "The build passed"] {
            let count = d.iter().filter(|(m, t)| m == n && t == text).count();
            assert_eq!(count, 1, "build #{n}, {text:?}: {d:#?}");
        }
        let running = d
            .iter()
            .filter(|(m, t)| m == n && t == "The build is running")
            .count();
        assert!(running <= 1, "build #{n}: {d:#?}");
    }
    assert!(contract.calls().iter().all(|c| c.status == 201));
    drop(b);
}
