//! The build store in PostgreSQL (runway.toml's `database_url_env`): a real cluster
//! (Debian's postgresql, made for this test process), two `runway serve` nodes on it.

use super::*;

/// A server whose store is PostgreSQL builds a push and records it there (no SQLite
/// file is made); a second node on the same database lists the same build, and a
/// build queued through one is run once, by whichever node claims it.
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
    let b = Server::start(&s.config, &other_state, &env);
    let sha = s.head();
    for _ in 0..3 {
        let (code, text) = generic(&a, "master", &sha);
        assert_eq!(code, 202, "{text}");
    }
    let (code, text) = generic(&b, "master", &sha);
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
}
