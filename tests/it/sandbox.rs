//! Every job on a throwaway copy of the machine (README "The job sandbox"): real
//! namespaces and overlayfs, as root (CI's user on these machines), tried the way a
//! careless or a hostile job would.

use crate::common::{Lines, Run, assert_no_process, run, runway, wait_gone};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A project with this `.travis.yml`, its own cache and state directories.
struct Project {
    dir: tempfile::TempDir,
    cache: PathBuf,
    state: PathBuf,
}

impl Project {
    fn new(yml: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".travis.yml"), yml).unwrap();
        let cache = dir.path().with_extension("cache");
        let state = dir.path().with_extension("state");
        Project { dir, cache, state }
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut c = runway();
        c.arg("run").arg(self.dir.path());
        if !extra.contains(&"--branch") {
            c.args(["--branch", "master"]);
        }
        c.arg("--cache-dir").arg(&self.cache);
        c.env("RUNWAY_STATE_DIR", &self.state);
        c.args(extra);
        c
    }

    fn run(&self, extra: &[&str]) -> Run {
        run(&mut self.command(extra))
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cache);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// A word no other test prints, so process and file checks cannot see another's.
fn unique(tag: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}{}x{n}", std::process::id())
}

#[test]
fn daemons_a_job_starts_end_with_it_however_they_escape() {
    // Odd sleep lengths name each escape in `pgrep`.
    let p = Project::new(
        "language: shell\nscript:\n\
         \x20 - setsid sleep 71001 &\n\
         \x20 - setsid -f sh -c 'trap \"\" TERM HUP; exec sleep 71002'\n\
         \x20 - ( (sleep 71003 &) & )\n\
         \x20 - nohup sleep 71004 >/dev/null 2>&1 &\n\
         \x20 - setsid -f sh -c 'trap \"\" TERM; while :; do sleep 71005; done'\n\
         \x20 - pgrep -c -f 'sleep 7100' \n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Sandbox: namespaces"), "{}", r.all());
    // `runway run` returned: the namespace ended with the job, and nothing is left.
    for n in 71001..=71005 {
        assert_no_process(&format!("sleep {n}"));
    }
}

#[test]
fn what_one_job_changes_on_the_machine_no_other_job_and_not_the_host_sees() {
    let mark = unique("runway-mark-");
    let yml = format!(
        "language: shell\nenv:\n  - ROLE=write\n  - ROLE=read\nscript:\n\
         \x20 - PURELIB=$(/usr/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')\n\
         \x20 - mkdir -p $PURELIB && echo \"purelib $PURELIB\"\n\
         \x20 - |\n\
         \x20   if [ \"$ROLE\" = write ]; then\n\
         \x20     echo 1 > /etc/{mark} && echo 1 > /usr/local/bin/{mark} && echo 1 > $PURELIB/{mark}.py && mkdir -p /root/.cargo && echo 1 > /root/.cargo/{mark} && echo 1 > /tmp/{mark} && echo 1 > /var/tmp/{mark}\n\
         \x20     test -e /etc/{mark} && echo WROTE-ALL\n\
         \x20   else\n\
         \x20     for f in /etc/{mark} /usr/local/bin/{mark} $PURELIB/{mark}.py /root/.cargo/{mark} /tmp/{mark} /var/tmp/{mark}; do test ! -e $f || {{ echo \"LEAKED $f\"; exit 1; }}; done\n\
         \x20     echo SAW-NOTHING\n\
         \x20   fi\n"
    );
    let p = Project::new(&yml);
    let r = p.run(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("WROTE-ALL") && r.stdout.contains("SAW-NOTHING"),
        "{}",
        r.all()
    );
    let purelib = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("purelib "))
        .expect("the job printed the system Python's site-packages")
        .to_string();
    for f in [
        format!("/etc/{mark}"),
        format!("/usr/local/bin/{mark}"),
        format!("{purelib}/{mark}.py"),
        format!("/root/.cargo/{mark}"),
        format!("/tmp/{mark}"),
        format!("/var/tmp/{mark}"),
    ] {
        assert!(!Path::new(&f).exists(), "{f} reached the host");
    }
}

#[test]
fn a_job_cannot_see_runways_state_caches_env_file_or_environment() {
    let secret = unique("hunter2-");
    let dir = tempfile::tempdir().unwrap();
    // Outside /tmp, so that only hiding (not the private /tmp) keeps them out of sight.
    let base = PathBuf::from("/var/tmp").join(unique("runway-sbx-"));
    let (state, cache, env_file) = (
        base.join("state"),
        base.join("cache"),
        base.join("site.env"),
    );
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(state.join("secret.txt"), &secret).unwrap();
    std::fs::write(cache.join("secret.txt"), &secret).unwrap();
    std::fs::write(&env_file, format!("SITE_TOKEN={}\n", unique("filetok-"))).unwrap();
    // Written by a builtin from two halves, so no command line in /proc holds it whole.
    let rest = secret.strip_prefix("hunter2-").unwrap();
    let yml = format!(
        "language: shell\nscript:\n\
         \x20 - ls -A {state} {cache}\n\
         \x20 - test \"$(find {state} {cache} -mindepth 1 | wc -l)\" = 0 && echo STATE-AND-CACHE-EMPTY\n\
         \x20 - test ! -s {env_file} && echo ENV-FILE-EMPTY\n\
         \x20 - printf '%s%s' hunter2- {rest} > /tmp/pattern\n\
         \x20 - \"! grep -rqs -F -f /tmp/pattern /proc/[0-9]*/environ && echo ENVIRON-CLEAN\"\n\
         \x20 - \"! cat /proc/1/environ && echo INIT-UNREADABLE\"\n",
        state = state.display(),
        cache = cache.display(),
        env_file = env_file.display(),
    );
    std::fs::write(dir.path().join(".travis.yml"), yml).unwrap();
    let r = run(runway()
        .arg("run")
        .arg(dir.path())
        .args(["--branch", "master", "--cache-dir"])
        .arg(&cache)
        .arg("--env-file")
        .arg(&env_file)
        .env("RUNWAY_STATE_DIR", &state)
        .env("SERVER_WEBHOOK_SECRET", &secret)
        .env("RUNWAY_SMTP_URL", format!("smtp://u:{secret}@127.0.0.1:1")));
    let _ = std::fs::remove_dir_all(&base);
    assert_eq!(r.code, 0, "{}", r.all());
    for said in [
        "STATE-AND-CACHE-EMPTY",
        "ENV-FILE-EMPTY",
        "ENVIRON-CLEAN",
        "INIT-UNREADABLE",
    ] {
        assert!(r.stdout.contains(said), "{said}: {}", r.all());
    }
    assert!(!r.stdout.contains(&secret), "{}", r.all());
}

#[test]
fn a_job_that_is_root_inside_cannot_mount_unshare_or_signal_outside() {
    let mut outside = Command::new("sleep").arg("71777").spawn().unwrap();
    let yml = format!(
        "language: shell\nscript:\n\
         \x20 - command -v mount unshare kill date mknod ip\n\
         \x20 - id -u\n\
         \x20 - \"! mount -t tmpfs none /mnt && echo NO-MOUNT\"\n\
         \x20 - \"! unshare -r true && echo NO-USERNS\"\n\
         \x20 - \"! unshare -m true && echo NO-MOUNTNS\"\n\
         \x20 - \"! kill -9 {pid} && echo NO-KILL\"\n\
         \x20 - \"! date -s '2001-01-01' && echo NO-CLOCK\"\n\
         \x20 - \"! echo 1 > /proc/sys/vm/drop_caches && echo NO-SYSCTL\"\n\
         \x20 - \"! mknod /tmp/disk b 254 0 && echo NO-MKNOD\"\n\
         \x20 - \"! ip link set lo down && echo NO-NET-ADMIN\"\n",
        pid = outside.id()
    );
    let p = Project::new(&yml);
    let r = p.run(&[]);
    let alive = outside.try_wait().unwrap().is_none();
    let _ = outside.kill();
    let _ = outside.wait();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("\n0\n"), "root inside: {}", r.all());
    for said in [
        "NO-MOUNT",
        "NO-USERNS",
        "NO-MOUNTNS",
        "NO-KILL",
        "NO-CLOCK",
        "NO-SYSCTL",
        "NO-MKNOD",
        "NO-NET-ADMIN",
    ] {
        assert!(r.stdout.contains(said), "{said}: {}", r.all());
    }
    assert!(alive, "the job killed a process outside its sandbox");
}

#[test]
fn a_branch_cannot_poison_what_the_default_branch_restores() {
    let p = Project::new(
        "language: shell\ncache:\n  directories: [stuff]\nscript:\n\
         \x20 - mkdir -p stuff && echo \"restored=$(cat stuff/who 2>/dev/null)\"\n\
         \x20 - if [ \"$TRAVIS_BRANCH\" = master ]; then echo main > stuff/who; else echo poison > stuff/who; fi\n\
         \x20 - for f in $(find $CACHE -type f 2>/dev/null); do echo poison > $f; done; echo TRIED-CACHE\n",
    );
    let cache = p.cache.display().to_string();
    let with_cache = |branch: &str| {
        let mut c = p.command(&["--branch", branch]);
        // `--env` carries the cache path into the job, as a hostile script would know it.
        c.arg("--env").arg(format!("CACHE={cache}"));
        run(&mut c)
    };
    let first = with_cache("master");
    assert_eq!(first.code, 0, "{}", first.all());
    let feature = with_cache("feature");
    assert_eq!(feature.code, 0, "{}", feature.all());
    assert!(feature.stdout.contains("TRIED-CACHE"), "{}", feature.all());
    // The feature job restored master's cache (the fallback) and could not write back.
    assert!(
        feature.stdout.contains("\nrestored=main\n"),
        "{}",
        feature.all()
    );
    let again = with_cache("master");
    assert!(
        again.stdout.contains("\nrestored=main\n"),
        "{}",
        again.all()
    );
}

#[test]
fn a_killed_runway_takes_its_jobs_with_it_and_the_next_run_removes_the_workspace() {
    let p = Project::new(
        "language: shell\nscript:\n  - setsid -f sleep 71888\n  - echo \"WORKSPACE $TRAVIS_BUILD_DIR\"\n  - sleep 71999\n",
    );
    let lines = Lines::spawn(&mut p.command(&[]), false);
    let (seen, found) = lines.wait_for("WORKSPACE /", 60);
    assert!(found, "{seen:#?}");
    let build_dir = seen
        .iter()
        .find_map(|l| l.strip_prefix("WORKSPACE "))
        .unwrap()
        .to_string();
    // The workspace root: /tmp/runway-job-XXXX (the build dir is build/owner/repo in it).
    let workspace = Path::new(&build_dir)
        .ancestors()
        .nth(3)
        .unwrap()
        .to_path_buf();
    assert!(workspace.exists());
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(lines.child.id() as i32, libc::SIGKILL);
    }
    let _ = lines.finish(10);
    wait_gone("sleep 71888", 10);
    wait_gone("sleep 71999", 10);
    assert!(
        workspace.exists(),
        "the crashed run's workspace stays until the next run"
    );
    let next = Project {
        dir: tempfile::tempdir().unwrap(),
        cache: p.cache.clone(),
        state: p.state.clone(),
    };
    std::fs::write(
        next.dir.path().join(".travis.yml"),
        "language: shell\nscript: true\n",
    )
    .unwrap();
    let r = next.run(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !workspace.exists(),
        "{} was left: {}",
        workspace.display(),
        r.all()
    );
}

#[test]
fn network_off_leaves_loopback_only() {
    let p = Project::new(
        "language: shell\nscript:\n\
         \x20 - ip -o link | awk '{print $2}'\n\
         \x20 - python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); c=socket.create_connection(s.getsockname()); print(\"LOOPBACK-OK\")'\n",
    );
    let r = p.run(&["--no-network"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("LOOPBACK-OK"), "{}", r.all());
    assert!(
        r.stdout.contains("network off (loopback only)"),
        "{}",
        r.all()
    );
    let links: Vec<&str> = r.stdout.lines().filter(|l| l.ends_with(':')).collect();
    assert_eq!(links, ["lo:"], "{}", r.all());
}

#[test]
fn sandbox_none_runs_on_the_bare_host_and_says_what_is_lost() {
    let mark = unique("runway-bare-");
    let p = Project::new(&format!("language: shell\nscript: echo 1 > /tmp/{mark}\n"));
    let r = p.run(&["--sandbox", "none"]);
    let reached = Path::new("/tmp").join(&mark).exists();
    let _ = std::fs::remove_file(Path::new("/tmp").join(&mark));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("warning: --sandbox none: jobs run on the bare host"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("Sandbox: none"), "{}", r.all());
    assert!(reached, "a bare job writes to the host's /tmp");
}

#[test]
fn as_another_user_runway_says_what_is_missing_and_sandbox_none_runs() {
    // A copy of the binary, a project and a home that user `nobody` can reach (a test
    // checkout may sit in a directory only root can enter).
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    };
    open(dir.path());
    let exe = dir.path().join("runway");
    crate::common::copy_executable(Path::new(env!("CARGO_BIN_EXE_runway")), &exe);
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    open(&project);
    std::fs::write(
        project.join(".travis.yml"),
        "language: shell\nscript: id -u\n",
    )
    .unwrap();
    let as_nobody = |extra: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .arg("run")
            .arg(&project)
            .args(["--branch", "master"])
            .args(extra)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir.path())
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("XDG_CACHE_HOME", dir.path().join("cache"));
        run(&mut c)
    };
    let refused = as_nobody(&[]);
    assert_eq!(refused.code, runway::exit::ERRORED, "{}", refused.all());
    for said in [
        "the job sandbox cannot be made here: making the job's namespaces",
        "Operation not permitted",
        "(runway runs as uid 65534, not root)",
        "--sandbox none",
    ] {
        assert!(refused.stderr.contains(said), "{said}: {}", refused.all());
    }
    assert!(
        !refused.stdout.contains("Job 1.1"),
        "no job ran: {}",
        refused.all()
    );
    let bare = as_nobody(&["--sandbox", "none"]);
    assert_eq!(bare.code, 0, "{}", bare.all());
    assert!(bare.stdout.contains("\n65534\n"), "{}", bare.all());
    assert!(
        bare.stdout.contains("runway: warning: --sandbox none"),
        "{}",
        bare.all()
    );
}

#[test]
fn a_job_over_its_memory_limit_is_errored_and_one_over_its_process_limit_cannot_fork() {
    // These machines delegate cgroup v1's memory and pids controllers to root.
    let p = Project::new(
        "language: shell\nscript:\n\
         \x20 - python3 forks.py\n\
         \x20 - python3 -c 'b = bytearray(400 * 1024 * 1024); print(\"ALLOCATED\")'\n\
         \x20 - echo AFTER-THE-KILL\n",
    );
    // Forks until the kernel says no (Python does not retry, as bash does), then ends
    // what it started.
    std::fs::write(
        p.dir.path().join("forks.py"),
        "import os, signal, time\nkids = []\nfor i in range(100):\n    try:\n        pid = os.fork()\n    except BlockingIOError:\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    kids.append(pid)\nprint('running:', len(kids))\nfor k in kids:\n    os.kill(k, signal.SIGKILL)\n    os.waitpid(k, 0)\n",
    )
    .unwrap();
    let r = p.run(&["--memory", "128M", "--max-processes", "60"]);
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    assert!(
        r.stdout.contains("memory 128M, 60 processes"),
        "{}",
        r.all()
    );
    let running: usize = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("running: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", r.all()));
    assert!(
        (40..60).contains(&running),
        "the process limit held: {running} of 100 started"
    );
    assert!(!r.stdout.contains("\nALLOCATED"), "{}", r.all());
    assert!(
        r.stdout
            .contains("The job exceeded its memory limit (128M)"),
        "{}",
        r.all()
    );
    assert!(!r.stdout.contains("\nAFTER-THE-KILL"), "{}", r.all());
    assert!(
        r.stdout.contains("Job 1.1: errored in ")
            && r.stdout.contains("(exceeded its memory limit of 128M)"),
        "{}",
        r.all()
    );
}

#[test]
fn credentials_of_runways_own_user_are_hidden_from_jobs() {
    // A home of runway's user outside /tmp, holding credentials a job must not read.
    let home = tempfile::Builder::new()
        .prefix("runway-home-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let secret = unique("aws-secret-");
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::write(home.path().join(".aws/credentials"), &secret).unwrap();
    std::fs::write(home.path().join(".netrc"), &secret).unwrap();
    std::fs::write(home.path().join("notes.txt"), "not a credential\n").unwrap();
    let h = home.path().display();
    let p = Project::new(&format!(
        "language: shell\nscript:\n\
         \x20 - test \"$(find {h}/.aws -mindepth 1 | wc -l)\" = 0 && echo AWS-HIDDEN\n\
         \x20 - test ! -s {h}/.netrc && echo NETRC-HIDDEN\n\
         \x20 - cat {h}/notes.txt\n"
    ));
    let mut c = p.command(&[]);
    c.env("HOME", home.path());
    let r = run(&mut c);
    assert_eq!(r.code, 0, "{}", r.all());
    for said in ["AWS-HIDDEN", "NETRC-HIDDEN", "not a credential"] {
        assert!(r.stdout.contains(said), "{said}: {}", r.all());
    }
    assert!(!r.stdout.contains(&secret), "{}", r.all());
}

/// Issue 29: every `runway run` made a throwaway sandbox to check the machine before the
/// job's own. The answer is kept per boot, per runway binary and per isolation options
/// in runway's state directory (which jobs do not see); a kept answer of another boot,
/// binary or options is checked again and replaced.
#[test]
fn the_sandbox_check_is_kept_for_the_boot() {
    let state = tempfile::tempdir().unwrap();
    let mark = state.path().join("sandbox-checked");
    let p = Project::new(&format!(
        "language: shell\nscript: if test -e {m}; then echo SEEN-BY-THE-JOB; else echo hidden-from-the-job; fi\n",
        m = mark.display()
    ));
    let mut c = p.command(&[]);
    c.env("RUNWAY_STATE_DIR", state.path());
    let r = run(&mut c);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("hidden-from-the-job"), "{}", r.all());
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let kept = std::fs::read_to_string(&mark).expect("the check's answer kept");
    assert!(kept.contains(&format!("boot {}", boot.trim())), "{kept}");
    // Another boot's (or binary's) answer is not taken: checked again and replaced.
    std::fs::write(&mark, "runway 0 exe x boot another\n").unwrap();
    let mut c = p.command(&[]);
    c.env("RUNWAY_STATE_DIR", state.path());
    let r = run(&mut c);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), kept);
    // Other options are kept beside it: alternating them checks nothing again.
    let mut c = p.command(&["--disk", "none"]);
    c.env("RUNWAY_STATE_DIR", state.path());
    let r = run(&mut c);
    assert_eq!(r.code, 0, "{}", r.all());
    let both = std::fs::read_to_string(&mark).unwrap();
    let keys: Vec<&str> = both.split('\x1e').collect();
    assert_eq!(keys.len(), 2, "{both:?}");
    assert!(keys.contains(&kept.as_str()), "{both:?}");
    assert!(keys.iter().any(|k| k.contains("disk None")), "{both:?}");
}
