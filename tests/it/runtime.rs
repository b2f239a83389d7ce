//! The environment each job asks for (README "Runtimes"): real interpreters and
//! toolchains (pyenv's CPythons, rustup's toolchains, Node from the npm registry
//! installed into a toolchain directory kept under `target/`), and the jobs that
//! cannot be provided: errored, never passed, unless substitutes are asked for.

use crate::common::{Run, run, runway};
use std::path::PathBuf;

/// Where these tests keep installed Node versions and base virtualenvs between runs.
fn toolchains() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-toolchains")
}

fn rehearse(yml: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".travis.yml"), yml).unwrap();
    let mut c = runway();
    c.arg("run")
        .arg(dir.path())
        .args(["--branch", "master"])
        .args(extra)
        .env("RUNWAY_TOOLCHAINS", toolchains());
    run(&mut c)
}

/// The summary line of job `n`.
fn job_line(r: &Run, n: &str) -> String {
    let summary = r.stdout.split("── Summary").nth(1).unwrap_or("");
    summary
        .lines()
        .find(|l| l.starts_with(&format!("Job {n} ")))
        .unwrap_or_else(|| panic!("no summary line for {n}: {}", r.all()))
        .to_string()
}

#[test]
fn a_python_matrix_runs_each_job_on_its_version_and_one_not_here_is_errored() {
    let r = rehearse(
        "language: python\npython: [\"3.9\", \"3.12\", \"3.4\"]\nscript:\n\
         \x20 - python -c 'import os, sys; want = tuple(map(int, os.environ[\"TRAVIS_PYTHON_VERSION\"].split(\".\"))); assert sys.version_info[:2] == want, sys.version; print(\"RAN ON\", sys.version.split()[0])'\n\
         \x20 - test \"$VIRTUAL_ENV\" = \"$(python -c 'import sys; print(sys.prefix)')\"\n\
         \x20 - pip install --no-index --no-deps . 2>/dev/null || true\n",
        &[],
    );
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    assert!(job_line(&r, "1.1").contains("passed"), "{}", r.all());
    assert!(job_line(&r, "1.2").contains("passed"), "{}", r.all());
    assert!(r.stdout.contains("RAN ON 3.9."), "{}", r.all());
    assert!(r.stdout.contains("RAN ON 3.12."), "{}", r.all());
    // The log says what ran, as Travis's did.
    assert!(
        r.stdout.contains("$ python --version\nPython 3.9."),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("$ pip --version\npip "), "{}", r.all());
    let missing = job_line(&r, "1.3");
    assert!(
        missing.contains("errored") && missing.contains("python 3.4 is not installed here"),
        "{missing}"
    );
    assert!(
        r.stdout
            .contains("To provide it: install it (`pyenv install 3.4`"),
        "{}",
        r.all()
    );
    assert!(
        !r.stdout.contains("RAN ON 3.11"),
        "no job ran on the host's default: {}",
        r.all()
    );
}

#[test]
fn a_node_matrix_installs_each_version_from_the_registry_and_runs_on_it() {
    let r = rehearse(
        "language: node_js\nnode_js: [\"16.20.2\", \"18.20.4\"]\ninstall: true\nscript:\n\
         \x20 - node -e 'if (process.version !== \"v\" + process.env.TRAVIS_NODE_VERSION) process.exit(1); console.log(\"RAN ON\", process.version)'\n\
         \x20 - npm --version\n\
         \x20 - mkdir -p node_modules/.bin && printf '#!/bin/sh\\necho LOCAL-BIN\\n' > node_modules/.bin/mocha && chmod +x node_modules/.bin/mocha && mocha\n",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("RAN ON v16.20.2"), "{}", r.all());
    assert!(r.stdout.contains("RAN ON v18.20.4"), "{}", r.all());
    // ./node_modules/.bin is on PATH, as on Travis.
    assert!(r.stdout.contains("\nLOCAL-BIN\n"), "{}", r.all());
    // npm as that Node line shipped it: 8 for 16, 10 for 18.
    assert!(r.stdout.contains("$ npm --version\n8."), "{}", r.all());
    assert!(r.stdout.contains("$ npm --version\n10."), "{}", r.all());
    assert!(toolchains().join("node/18.20.4/bin/node").exists());
}

#[test]
fn a_rust_matrix_runs_each_toolchain() {
    let r = rehearse(
        "language: rust\nrust: [stable, nightly]\nscript:\n\
         \x20 - rustc --version\n\
         \x20 - \"if [ $TRAVIS_RUST_VERSION = nightly ]; then rustc --version | grep -q nightly; else ! rustc --version | grep -q nightly; fi\"\n\
         \x20 - echo \"TOOLCHAIN $RUSTUP_TOOLCHAIN\"\n",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("TOOLCHAIN stable"), "{}", r.all());
    assert!(r.stdout.contains("TOOLCHAIN nightly"), "{}", r.all());
    assert!(r.stdout.contains("-nightly ("), "{}", r.all());
}

#[test]
fn a_job_for_another_os_is_not_run_and_the_build_is_not_green() {
    let r = rehearse(
        "language: shell\nos: [linux, osx]\nscript: echo \"RAN ON $TRAVIS_OS_NAME\"\n",
        &[],
    );
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    assert!(r.stdout.contains("RAN ON linux"), "{}", r.all());
    assert!(!r.stdout.contains("RAN ON osx"), "{}", r.all());
    let osx = job_line(&r, "1.2");
    assert!(
        osx.contains("errored") && osx.contains("not run: needs an osx runner"),
        "{osx}"
    );
    assert!(
        r.stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("Build #1 errored"),
        "{}",
        r.all()
    );
    // `--os` rehearses what this machine can run, and says when nothing is for it.
    let yml = "language: shell\nos: [linux, osx]\nscript: echo \"RAN ON $TRAVIS_OS_NAME\"\n";
    let linux = rehearse(yml, &["--os", "linux"]);
    assert_eq!(linux.code, 0, "{}", linux.all());
    assert!(linux.stdout.contains("(1 job(s))"), "{}", linux.all());
    let windows = rehearse(yml, &["--os", "windows"]);
    assert_eq!(windows.code, runway::exit::USAGE, "{}", windows.all());
    assert!(
        windows
            .stderr
            .contains("no job is for os windows; the jobs are for linux, osx"),
        "{}",
        windows.all()
    );
}

#[test]
fn a_missing_jdk_errors_the_job_and_passes_on_a_substitute_only_when_asked_and_named() {
    let yml = "language: java\njdk: openjdk8\ninstall: true\nscript: java -version\nnotifications:\n  email:\n    recipients: [team@example.com]\n    on_success: always\n";
    let strict = rehearse(yml, &[]);
    assert_eq!(strict.code, runway::exit::ERRORED, "{}", strict.all());
    let line = job_line(&strict, "1.1");
    assert!(
        line.contains("jdk \"openjdk8\" is not installed here"),
        "{line}"
    );
    assert!(
        strict
            .stdout
            .contains("apt-get install openjdk-8-jdk-headless"),
        "{}",
        strict.all()
    );
    let substituted = rehearse(yml, &["--substitutes", "--show-mail"]);
    assert_eq!(substituted.code, 0, "{}", substituted.all());
    let line = job_line(&substituted, "1.1");
    assert!(
        line.contains("passed") && line.contains("on substitutes: jdk openjdk8 → "),
        "{line}"
    );
    assert!(
        substituted
            .stdout
            .contains("Substitute: jdk \"openjdk8\" is not installed here")
    );
    // The mail says so in its subject and beside the job.
    assert!(
        substituted
            .stdout
            .contains("[runway] Passed on substitutes: "),
        "{}",
        substituted.all()
    );
    assert!(
        substituted
            .stdout
            .contains("jdk: openjdk8 (on substitutes: jdk openjdk8 → "),
        "{}",
        substituted.all()
    );
    let last = substituted.stdout.lines().last().unwrap().to_string();
    assert!(
        last.starts_with("Build #1 passed on substitutes (not what .travis.yml asks for)"),
        "{last}"
    );
}

#[test]
fn services_and_apt_addons_are_the_jobs_own_and_gone_after() {
    // postgresql is on the machine (the test command installs it); redis-server and
    // hello are installed by the job itself, into its copy of the machine. Issue 28
    // (5): Travis's service took `psql -U postgres` with no password (peer
    // authentication refused it before).
    let pg = "postgres -D /var/lib/postgresql";
    let (pg_before, redis_before) = (
        crate::common::processes(pg),
        crate::common::processes("redis-server"),
    );
    let r = rehearse(
        "language: shell\naddons:\n  apt:\n    packages: [hello, redis-server]\nservices: [postgresql, redis-server]\nscript:\n\
         \x20 - psql -U postgres -tAc 'select 40 + 2'\n\
         \x20 - redis-cli ping\n\
         \x20 - hello\n",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("\n42\n"), "{}", r.all());
    assert!(r.stdout.contains("\nPONG\n"), "{}", r.all());
    assert!(r.stdout.contains("\nHello, world!\n"), "{}", r.all());
    // The services ended with the job (whatever else runs on the machine); the
    // packages were never on the host.
    crate::common::assert_no_new_process("redis-server", &redis_before);
    crate::common::assert_no_new_process(pg, &pg_before);
    assert!(!std::path::Path::new("/usr/bin/hello").exists());
    assert!(!std::path::Path::new("/usr/bin/redis-server").exists());

    // A service that is not installed errors the job with what installs it.
    let missing = rehearse(
        "language: shell\nservices: [memcached]\nscript: true\n",
        &[],
    );
    assert_eq!(missing.code, runway::exit::ERRORED, "{}", missing.all());
    assert!(
        missing
            .stdout
            .contains("runway: service memcached is not installed here: apt-get install memcached"),
        "{}",
        missing.all()
    );
    // On the bare host they would change the machine: refused.
    let bare = rehearse(
        "language: shell\nservices: [postgresql]\nscript: true\n",
        &["--sandbox", "none"],
    );
    assert_eq!(bare.code, runway::exit::ERRORED, "{}", bare.all());
    assert!(
        bare.stdout.contains("only inside a job sandbox"),
        "{}",
        bare.all()
    );
}

#[test]
fn lint_warns_about_addons_runway_does_not_provide() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(".travis.yml");
    std::fs::write(
        &f,
        "language: shell\naddons:\n  chrome: stable\n  apt:\n    packages: [hello]\n    sources: [ubuntu-toolchain-r-test]\njobs:\n  include:\n    - addons:\n        firefox: latest\n",
    )
    .unwrap();
    let r = run(runway().arg("lint").arg(&f));
    assert_eq!(r.code, 0, "warnings only: {}", r.all());
    for said in [
        ":3:3: warning: addons.chrome: runway does not provide the chrome addon",
        ":6:15: warning: addons.apt.sources: runway does not add Travis's source aliases",
        ":10:9: warning: jobs.include[0].addons.firefox: runway does not provide the firefox addon",
    ] {
        assert!(r.stdout.contains(said), "{said}: {}", r.all());
    }
    assert!(!r.stdout.contains("addons.apt.packages"), "{}", r.all());
}

#[test]
fn proxy_and_ca_settings_pass_through_and_nothing_else_of_runways_environment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".travis.yml"),
        "language: shell\nscript:\n  - echo \"proxy=$HTTPS_PROXY no=$no_proxy ca=$SSL_CERT_FILE other=${RUNWAY_TEST_PRIVATE:-unset}\"\n",
    )
    .unwrap();
    let r = run(runway()
        .arg("run")
        .arg(dir.path())
        .args(["--branch", "master"])
        .env("HTTPS_PROXY", "http://proxy.example:3128")
        .env("no_proxy", "localhost,127.0.0.1")
        .env("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
        .env("RUNWAY_TEST_PRIVATE", "do-not-pass"));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(
            "\nproxy=http://proxy.example:3128 no=localhost,127.0.0.1 ca=/etc/ssl/certs/ca-certificates.crt other=unset\n"
        ),
        "{}",
        r.all()
    );
}

/// six at the commit whose `.travis.yml` a team leaving Travis brought (fixtures/six,
/// MIT): every job on the Python it asks for (2.7 and 3.6 to 3.9 here), pytest 4.6.9
/// from PyPI; the versions this machine lacks are errored with what is missing, and
/// none passes on another Python.
#[test]
fn six_from_the_wild_runs_each_python_it_asks_for_and_errors_the_rest() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/six");
    let mut c = runway();
    c.args(["run", fixture, "--branch", "master"])
        .env("RUNWAY_TOOLCHAINS", toolchains());
    let r = run(&mut c);
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    for (job, version) in [
        ("1.1", "2.7"),
        ("1.3", "3.6"),
        ("1.4", "3.7"),
        ("1.5", "3.8"),
        ("1.6", "3.9"),
    ] {
        let line = job_line(&r, job);
        assert!(line.contains("passed"), "{line}\n{}", r.all());
        assert!(
            r.stdout.contains(&format!(" -- Python {version}.")),
            "{version}: {}",
            r.all()
        );
    }
    assert!(r.stdout.contains(" 198 passed, 2 skipped"), "{}", r.all());
    for (job, version) in [
        ("1.2", "3.5"),
        ("1.7", "nightly"),
        ("1.8", "pypy3"),
        ("1.11", "pypy"),
    ] {
        let line = job_line(&r, job);
        assert!(
            line.contains("errored")
                && line.contains(&format!("python {version} is not installed here")),
            "{line}"
        );
    }
    // Python 2.7's virtualenv came from the pinned virtualenv runway keeps.
    assert!(r.stdout.contains(" 195 passed, 5 skipped"), "{}", r.all());
    // The deploy stage does not run after a failed stage.
    assert!(job_line(&r, "1.12").contains("canceled"), "{}", r.all());
    assert!(
        r.stdout.contains("dist: focal asked; this machine is "),
        "{}",
        r.all()
    );
}

#[test]
fn a_language_runway_does_not_install_runs_only_on_the_version_asked() {
    // Perl is on every Debian machine; runway finds it on PATH at the version asked.
    let out = std::process::Command::new("perl")
        .args(["-e", "printf '%vd', $^V"])
        .output()
        .expect("perl runs");
    let full = String::from_utf8_lossy(&out.stdout).to_string();
    let have: String = full.split('.').take(2).collect::<Vec<_>>().join(".");
    let r = rehearse(
        &format!(
            "language: perl\nperl: [\"{have}\", \"5.8\"]\ninstall: true\nscript: perl -e 'print \"RAN ON \", $^V, \"\\\\n\"'\n"
        ),
        &[],
    );
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    assert!(job_line(&r, "1.1").contains("passed"), "{}", r.all());
    assert!(r.stdout.contains(&format!("RAN ON v{full}")), "{}", r.all());
    let old = job_line(&r, "1.2");
    assert!(
        old.contains("errored")
            && old.contains(&format!(
                "perl 5.8 is not installed here (the machine's perl is {full})"
            )),
        "{old}"
    );
}

/// A JDK the machine lacks is installed from `RUNWAY_JDK_SOURCE`, as Travis's
/// install-jdk fetched one: here a real JDK 17 archive made from the machine's own and
/// served as a file, with the machine's JDK directories out of sight.
#[test]
fn a_jdk_not_found_is_installed_from_the_configured_source_or_errored() {
    let jdk17 = std::fs::read_dir("/usr/lib/jvm")
        .expect("/usr/lib/jvm (the test command installs openjdk-17-jdk-headless)")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.join("bin/javac").exists()
                && !p.is_symlink()
                && p.file_name().unwrap().to_string_lossy().contains("17")
        })
        .expect("a JDK 17 under /usr/lib/jvm");
    let archives = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-jdk");
    let archive = archives.join("jdk-17.tar");
    if !archive.exists() {
        std::fs::create_dir_all(&archives).unwrap();
        let partial = archives.join("jdk-17.tar.partial");
        let made = std::process::Command::new("tar")
            .arg("-cf")
            .arg(&partial)
            .arg("-C")
            .arg(jdk17.parent().unwrap())
            .arg(jdk17.file_name().unwrap())
            .status()
            .unwrap();
        assert!(made.success());
        std::fs::rename(&partial, &archive).unwrap();
    }
    let toolchains = tempfile::tempdir().unwrap();
    let rehearse_jdk = |jdk: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".travis.yml"),
            format!("language: java\njdk: {jdk}\ninstall: true\nscript:\n  - java -version 2>&1 | head -1\n  - echo \"HOME IS $JAVA_HOME\"\n"),
        )
        .unwrap();
        run(runway()
            .arg("run")
            .arg(dir.path())
            .args(["--branch", "master"])
            .env("RUNWAY_TOOLCHAINS", toolchains.path())
            .env("RUNWAY_JDK_ROOTS", "/nonexistent")
            .env(
                "RUNWAY_JDK_SOURCE",
                format!("file://{}/jdk-{{major}}.tar", archives.display()),
            ))
    };
    let r = rehearse_jdk("openjdk17");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains(", installed by runway)"), "{}", r.all());
    assert!(r.stdout.contains(" version \"17."), "{}", r.all());
    let home = toolchains.path().join("jdk/jdk-17");
    assert!(
        r.stdout.contains(&format!("HOME IS {}", home.display())),
        "{}",
        r.all()
    );
    let none = rehearse_jdk("openjdk11");
    assert_eq!(none.code, runway::exit::ERRORED, "{}", none.all());
    let line = job_line(&none, "1.1");
    assert!(
        line.contains(
            "jdk \"openjdk11\" is not installed here (found: jdk-17) and could not be installed: "
        ),
        "{line}"
    );
}

/// An `addons.apt.sources` entry given as a `deb` line is added inside the job's
/// sandbox: here a real apt repository on loopback (a package built with dpkg-deb,
/// indexed by dpkg-scanpackages, served by Python's http.server).
#[test]
fn an_apt_source_line_is_added_and_its_package_installed_in_the_jobs_copy_only() {
    let repo = tempfile::tempdir().unwrap();
    let pkg = repo.path().join("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/bin")).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: runway-hello\nVersion: 1.0\nArchitecture: all\nMaintainer: runway tests <t@example.com>\nDescription: says hello from a loopback apt repository\n",
    )
    .unwrap();
    let bin = pkg.join("usr/bin/runway-hello");
    std::fs::write(&bin, "#!/bin/sh\necho HELLO FROM THE LOOPBACK REPOSITORY\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let www = repo.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let built = std::process::Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&pkg)
        .arg(www.join("runway-hello_1.0_all.deb"))
        .output()
        .expect("dpkg-deb runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let index = std::process::Command::new("dpkg-scanpackages")
        .args([".", "/dev/null"])
        .current_dir(&www)
        .output()
        .expect("dpkg-scanpackages runs (the test command installs dpkg-dev)");
    assert!(index.status.success());
    std::fs::write(www.join("Packages"), &index.stdout).unwrap();
    let port = crate::common::free_port();
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&www)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it accepts connections.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "http.server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = rehearse(
        &format!(
            "language: shell\naddons:\n  apt:\n    sources:\n      - sourceline: \"deb [trusted=yes] http://127.0.0.1:{port}/ ./\"\n    packages: [runway-hello]\nscript: runway-hello\n"
        ),
        &[],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("\nHELLO FROM THE LOOPBACK REPOSITORY\n"),
        "{}",
        r.all()
    );
    assert!(!std::path::Path::new("/usr/bin/runway-hello").exists());
    assert!(!std::path::Path::new("/etc/apt/sources.list.d/runway-1.list").exists());
}

/// A tmpfs mounted over a directory for as long as it lives.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// Under `/var/tmp`, on the disk of `/`, wherever the checkout is (below `/tmp`,
    /// where the jobs' workspaces are, mounts are carried into the sandbox).
    fn mount() -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("runway-test-tmpfs-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                "size=512m",
                "runway-test",
                dir.path().to_str().unwrap(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs (the tests run as root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// Issue 28 (4): a runtime announced was not checked. With runway's toolchain
/// directory on a filesystem the job's sandbox does not carry (a mount of its own: a
/// tmpfs here; an overlay or NFS would do the same), the log said `Runtime: python 3.12
/// (…), virtualenv …` and the job passed without that Python anywhere in its shell.
/// Now the job's shell must find `python` where the runtime put it, or the job is
/// errored saying where it finds it and how to provide it; on the bare host, where the
/// mount is seen, the same job passes.
#[test]
fn a_runtime_the_jobs_shell_does_not_find_where_it_was_set_up_errors_the_job() {
    let mount = Tmpfs::mount();
    let yml = "language: python\npython: \"3.12\"\nscript: echo the-script-ran\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".travis.yml"), yml).unwrap();
    let run_with = |extra: &[&str]| {
        let mut c = runway();
        c.arg("run")
            .arg(dir.path())
            .args(["--branch", "master"])
            .args(extra)
            .env("RUNWAY_TOOLCHAINS", mount.0.path());
        run(&mut c)
    };
    let r = run_with(&[]);
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    assert!(!r.stdout.contains("the-script-ran"), "{}", r.all());
    assert!(
        r.stdout
            .contains("but the job's shell does not find `python` at"),
        "{}",
        r.all()
    );
    assert!(job_line(&r, "1.1").contains("errored"), "{}", r.all());
    assert!(
        job_line(&r, "1.1").contains("is not what the job's shell runs as `python`"),
        "{}",
        r.all()
    );
    let bare = run_with(&["--sandbox", "none"]);
    assert_eq!(bare.code, 0, "{}", bare.all());
    assert!(bare.stdout.contains("the-script-ran"), "{}", bare.all());
}

/// Issue 28 (5): `node_js: 0.8` failed with "No such file or directory (os error 2)":
/// the registry's package of an old Node holds Node's own release tarball, not
/// `bin/`. That tarball is unpacked, with the npm it shipped.
#[test]
fn an_old_node_whose_package_holds_a_release_tarball_runs() {
    let r = rehearse(
        "language: node_js\nnode_js: \"0.8\"\ninstall: true\nscript:\n\
         \x20 - node -e 'console.log(\"RAN ON\", process.version)'\n\
         \x20 - npm --version\n",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("RAN ON v0.8.28"), "{}", r.all());
    assert!(r.stdout.contains("$ npm --version\n1."), "{}", r.all());
}

/// Issue 28 (5): `node_js: iojs` was refused as "not a Node version"; Travis ran
/// io.js, Node's fork of 2015 (`iojs` its newest, `iojs-v2` a line of it), with npm 2.
/// runway installs it from the registry's io.js packages; `node` runs it.
#[test]
fn iojs_runs_as_travis_ran_it() {
    let r = rehearse(
        "language: node_js\nnode_js: [iojs, \"iojs-v2\"]\ninstall: true\nscript:\n\
         \x20 - node -e 'console.log(\"RAN ON\", process.version, process.release && process.release.name)'\n\
         \x20 - npm --version\n\
         \x20 - echo \"asked for $TRAVIS_NODE_VERSION\"\n",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("RAN ON v3.3.1 io.js"), "{}", r.all());
    assert!(r.stdout.contains("RAN ON v2.4.0"), "{}", r.all());
    assert!(r.stdout.contains("$ npm --version\n2."), "{}", r.all());
    assert!(r.stdout.contains("asked for iojs-v2"), "{}", r.all());
    assert!(r.stdout.contains("Runtime: io.js 3.3.1"), "{}", r.all());
}

/// Issue 29: a Python job's `pip --version` line is read from pip's installed metadata
/// (running pip took a third of a second of every Python job's start); it says what
/// pip itself says in that job.
#[test]
fn the_pip_version_shown_is_what_pip_says() {
    let r = rehearse(
        "language: python\npython: \"3.12\"\nscript: echo \"REAL $(pip --version)\"\n",
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let shown = r
        .stdout
        .split("$ pip --version\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no pip line: {}", r.all()))
        .to_string();
    assert!(shown.starts_with("pip "), "{shown}");
    assert!(
        r.stdout.contains(&format!("REAL {shown}\n")),
        "shown {shown:?}, pip says otherwise: {}",
        r.all()
    );
}
