//! Server builds run in the job sandbox: a job cannot read runway.toml, the state
//! directory or the server's secrets (by path, and through `/proc/*/environ`).

use super::{API_TOKEN, SECRET, Setup, generic, states, wait_for};
use crate::common::server::Server;

#[test]
fn a_server_job_cannot_read_runway_toml_the_state_or_the_servers_secrets() {
    // Outside /tmp, so that only hiding (not the job's private /tmp) keeps them out.
    let base = tempfile::Builder::new()
        .prefix("runway-server-sandbox-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let (config, state) = (base.path().join("runway.toml"), base.path().join("state"));
    // Each secret is written by a builtin from two halves, so that no command line in
    // /proc holds it whole; each check fails the job when it does not hold.
    let (s1, s2) = SECRET.split_at(5);
    let (t1, t2) = API_TOKEN.split_at(5);
    let s = Setup::new(
        &format!(
            "language: shell\nscript:\n\
             \x20 - test -e {config} && test ! -s {config} && echo CONFIG-HIDDEN\n\
             \x20 - test \"$(find {state} -mindepth 1 | wc -l)\" = 0 && echo STATE-HIDDEN\n\
             \x20 - printf '%s%s\\n%s%s\\n' {s1} {s2} {t1} {t2} > /tmp/secrets\n\
             \x20 - \"! grep -rqsF -f /tmp/secrets /proc/[0-9]*/environ && echo SECRETS-HIDDEN\"\n\
             \x20 - \"! env | grep -qF -f /tmp/secrets && echo ENV-CLEAN\"\n",
            config = config.display(),
            state = state.display(),
        ),
        "api_token_env = \"RUNWAY_TEST_API_TOKEN\"",
    );
    std::fs::copy(&s.config, &config).unwrap();
    let srv = Server::start(
        &config,
        &state,
        &[("APP_SECRET", SECRET), ("RUNWAY_TEST_API_TOKEN", API_TOKEN)],
    );
    assert_eq!(generic(&srv, "master", &s.head()).0, 202);
    wait_for(
        || {
            states(&srv)
                .iter()
                .all(|(_, st)| st != "queued" && st != "running")
        },
        "the build to end",
    );
    let (_, log) = srv.request("GET", "/api/builds/1/log", &[], b"");
    assert_eq!(states(&srv), [(1, "passed".to_string())], "{log}");
    for said in [
        "CONFIG-HIDDEN",
        "STATE-HIDDEN",
        "SECRETS-HIDDEN",
        "ENV-CLEAN",
    ] {
        assert!(log.contains(&format!("\n{said}")), "{said}: {log}");
    }
    assert!(log.contains("Sandbox: namespaces"), "{log}");
}
