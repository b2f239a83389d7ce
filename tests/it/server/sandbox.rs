//! Server builds run in the job sandbox: a job cannot read runway.toml, the state
//! directory or the server's secrets (by path, and through `/proc/*/environ`). The
//! server starts its jobs' sandboxes through its spawner, and by itself once the
//! spawner is gone.

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

/// The processes whose parent is `pid` (a process of this test's own).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let listed = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(
            listed
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    out
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn a_server_starts_jobs_through_its_spawner_and_by_itself_once_it_is_gone() {
    // The job checks that it is its sandbox's shell: init (PID 1 of a namespace of
    // its own) is its parent, and the host's processes are not to be seen. Then it
    // looks for a way to the spawner (which forks as root whatever it is sent): no
    // process of that name in sight, no socket among its own or init's descriptors.
    let s = Setup::new(
        "language: shell\nscript:\n\
         \x20 - test \"$PPID\" = 1 && test \"$(ls -d /proc/[0-9]* | wc -l)\" -lt 10 && echo IN-ITS-SANDBOX\n\
         \x20 - \"! grep -qsx runway-spawner /proc/[0-9]*/comm && echo NO-SPAWNER-IN-SIGHT\"\n\
         \x20 - \"! ls -l /proc/$$/fd /proc/1/fd 2>/dev/null | grep -q socket && echo NO-SOCKET-HELD\"\n",
        "",
    );
    let srv = s.start();
    let server = srv.child.id();
    let spawner: Vec<u32> = children(server)
        .into_iter()
        .filter(|p| comm(*p) == "runway-spawner")
        .collect();
    assert_eq!(
        spawner.len(),
        1,
        "the server's children: {:?}",
        children(server)
    );
    let spawner = spawner[0];
    // It holds nothing of the server's (its listening socket, its database, its
    // logs): /dev/null as 0, 1 and 2, its socket, its PID namespace.
    let mut held: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{spawner}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let to = std::fs::read_link(e.path()).unwrap_or_default();
            let to = to.to_string_lossy();
            let kind = to.split(':').next().unwrap_or_default().to_string();
            (e.file_name().to_string_lossy().parse().unwrap(), kind)
        })
        .collect();
    held.sort();
    let want: Vec<(u32, String)> = [
        (0, "/dev/null"),
        (1, "/dev/null"),
        (2, "/dev/null"),
        (100, "socket"),
        (101, "pid"),
    ]
    .map(|(fd, kind)| (fd, kind.to_string()))
    .to_vec();
    assert_eq!(held, want);

    let ended = |n: usize| {
        wait_for(
            || {
                let st = states(&srv);
                st.len() == n && st.iter().all(|(_, s)| s != "queued" && s != "running")
            },
            "the build to end",
        )
    };
    assert_eq!(generic(&srv, "master", &s.head()).0, 202);
    ended(1);
    let (_, log) = srv.request("GET", "/api/builds/1/log", &[], b"");
    assert_eq!(states(&srv)[0], (1, "passed".to_string()), "{log}");
    for said in ["IN-ITS-SANDBOX", "NO-SPAWNER-IN-SIGHT", "NO-SOCKET-HELD"] {
        assert!(log.contains(&format!("\n{said}")), "{said}: {log}");
    }

    // Once the spawner is gone, the server makes each sandbox itself.
    std::process::Command::new("kill")
        .args(["-KILL", &spawner.to_string()])
        .status()
        .unwrap();
    wait_for(
        || {
            comm(spawner).is_empty()
                || std::fs::read_to_string(format!("/proc/{spawner}/stat"))
                    .is_ok_and(|st| st.contains(") Z "))
        },
        "the spawner to die",
    );
    let second = s.commit("master", "second");
    assert_eq!(generic(&srv, "master", &second).0, 202);
    ended(2);
    let (_, log) = srv.request("GET", "/api/builds/2/log", &[], b"");
    let st = states(&srv);
    assert!(st.contains(&(2, "passed".to_string())), "{st:?}: {log}");
    assert!(log.contains("\nIN-ITS-SANDBOX"), "{log}");
}
