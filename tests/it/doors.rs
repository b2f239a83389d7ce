//! No doors (README "The job sandbox", "What runway does for a job"): runway, as the
//! host's root, never writes, reads, creates or uploads a path a job, its commit or its
//! bundle chose, outside that job's copy of the machine. Each test is one of the ways a
//! hostile repository tried it, through the real binary, and checks the host.

use crate::common::moto::Moto;
use crate::common::{Run, git, run, runway};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A project on disk with its own cache, state and `$HOME` for runway (whose
/// credentials jobs must never see).
struct Hostile {
    dir: tempfile::TempDir,
    cache: PathBuf,
    state: PathBuf,
    /// runway's own `$HOME`, outside `/tmp` (so the job's fresh `/tmp` is not what
    /// hides it), holding `.aws/credentials`.
    home: tempfile::TempDir,
}

const SECRET: &str = "aws_secret_access_key = HOSTSECRETdoNotLeak0123";

impl Hostile {
    fn new(yml: &str) -> Hostile {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".travis.yml"), yml).unwrap();
        let home = tempfile::tempdir_in("/var/tmp").unwrap();
        std::fs::create_dir_all(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            format!("[default]\n{SECRET}\n"),
        )
        .unwrap();
        Hostile {
            cache: dir.path().with_extension("cache"),
            state: dir.path().with_extension("state"),
            dir,
            home,
        }
    }

    fn creds(&self) -> PathBuf {
        self.home.path().join(".aws")
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut c = runway();
        c.arg("run").arg(self.dir.path());
        c.args(["--branch", "master"]);
        c.arg("--cache-dir").arg(&self.cache);
        c.env("RUNWAY_STATE_DIR", &self.state);
        c.env("HOME", self.home.path());
        // The job knows where runway's things are, as a hostile script would.
        c.arg("--env")
            .arg(format!("HOST_CREDS={}", self.creds().display()));
        c.args(extra);
        c
    }

    fn run(&self, extra: &[&str]) -> Run {
        run(&mut self.command(extra))
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cache);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Every stored cache's text (archives decompressed, and the files of versions kept as
/// directories), to look for what must not be in it.
fn archives_text(cache: &Path) -> String {
    let mut text = String::new();
    let files = crate::common::files_under(cache);
    assert!(!files.is_empty(), "no cache stored in {}", cache.display());
    for f in files {
        if !f.to_string_lossy().ends_with(".tar.zst") {
            if f.symlink_metadata().is_ok_and(|m| m.is_file()) {
                text.push_str(&String::from_utf8_lossy(&std::fs::read(&f).unwrap()));
            }
        } else {
            let out = Command::new("zstd")
                .args(["-dc", "-q"])
                .arg(&f)
                .output()
                .expect("zstd runs (apt-get install zstd)");
            text.push_str(&String::from_utf8_lossy(&out.stdout));
        }
    }
    text
}

/// 1. A step that replaces the file runway would write the next command into with a
///    link to a host path: runway sends commands down the shell's pipe, so there is no
///    such file, and nothing is written through the link.
#[test]
fn a_step_cannot_make_runway_write_the_next_command_onto_the_host() {
    let target = tempfile::tempdir_in("/var/tmp").unwrap();
    let p = Hostile::new(
        "language: shell\nscript:\n\
         \x20 - for i in $(seq 1 40); do ln -sfn \"$TARGET/cmd-$i\" \"$(dirname \"$HOME\")/runway/cmd-$i.sh\"; done; echo PLANTED\n\
         \x20 - echo SECOND-STEP-RAN\n",
    );
    let mut c = p.command(&[]);
    c.arg("--env")
        .arg(format!("TARGET={}", target.path().display()));
    let r = run(&mut c);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("PLANTED"), "{}", r.all());
    assert!(r.stdout.contains("\nSECOND-STEP-RAN"), "{}", r.all());
    let written = crate::common::files_under(target.path());
    assert!(written.is_empty(), "runway wrote on the host: {written:?}");
}

/// 2. A cached directory whose parent a later commit turns into a link to a host
///    directory: the restore follows the link in the job's copy of the machine, and the
///    host directory stays empty.
#[test]
fn a_cache_restored_through_a_linked_parent_lands_in_the_job_only() {
    let host_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let p = Hostile::new(
        "language: shell\ncache:\n  directories: [lnk/sub]\nscript:\n\
         \x20 - mkdir -p lnk/sub && echo cached > lnk/sub/file; ls -la lnk\n\
         \x20 - echo \"inside=$(cat lnk/sub/file 2>&1)\"\n",
    );
    let first = p.run(&[]);
    assert_eq!(first.code, 0, "{}", first.all());
    assert!(first.stdout.contains("stored 1 files"), "{}", first.all());
    // The next commit: `lnk` is a link to a directory of the host.
    std::os::unix::fs::symlink(host_dir.path(), p.dir.path().join("lnk")).unwrap();
    let second = p.run(&[]);
    assert_eq!(second.code, 0, "{}", second.all());
    assert!(
        second.stdout.contains("restored 1 files"),
        "{}",
        second.all()
    );
    // Restored as a mount, made by runway as root: still in the job's copy only.
    assert!(
        second.stdout.contains("mounted copy-on-write"),
        "{}",
        second.all()
    );
    // The job sees the file where its link leads, in its own copy...
    assert!(second.stdout.contains("inside=cached"), "{}", second.all());
    // ...and the host's directory was never written.
    let written = crate::common::files_under(host_dir.path());
    assert!(
        written.is_empty(),
        "the restore wrote on the host: {written:?}"
    );
}

/// 3. `before_cache` links a cached directory to runway's credentials: the archive is
///    made in the job's view, where they are hidden, and the next build prints nothing.
#[test]
fn a_cache_saved_through_a_link_archives_the_jobs_view_not_the_hosts() {
    let p = Hostile::new(
        "language: shell\ncache:\n  directories: [$HOME/loot]\nscript:\n\
         \x20 - echo \"loot=$(cat $HOME/loot/credentials 2>&1)\"\n\
         before_cache:\n\
         \x20 - rm -rf $HOME/loot; ln -s \"$HOST_CREDS\" $HOME/loot\n",
    );
    let first = p.run(&[]);
    assert_eq!(first.code, 0, "{}", first.all());
    let second = p.run(&[]);
    assert_eq!(second.code, 0, "{}", second.all());
    for r in [&first, &second] {
        assert!(!r.all().contains("HOSTSECRET"), "{}", r.all());
    }
    assert!(
        !archives_text(&p.cache).contains("HOSTSECRET"),
        "the host's credentials are in a cache archive"
    );
}

/// 4. Cache directories outside the job (absolute, or `..` out of the checkout): each
///    is the job's own copy; the host's paths are never made, archived or restored.
#[test]
fn cache_directories_outside_the_checkout_are_the_jobs_own_copies() {
    let abs = PathBuf::from(format!("/var/tmp/runway-door-abs-{}", std::process::id()));
    let rel_name = format!("runway-door-rel-{}", std::process::id());
    // build/<owner>/<repo> under the workspace, under the temp dir: four levels up is
    // the host's temp dir itself.
    let rel_host = std::env::temp_dir().join(&rel_name);
    let p = Hostile::new(&format!(
        "language: shell\ncache:\n  directories: [{abs}, ../../../../{rel_name}]\nscript:\n\
         \x20 - echo \"abs=$(cat {abs}/f 2>&1) rel=$(cat ../../../../{rel_name}/f 2>&1)\"\n\
         \x20 - echo one > {abs}/f && echo two > ../../../../{rel_name}/f\n",
        abs = abs.display()
    ));
    let first = p.run(&[]);
    assert_eq!(first.code, 0, "{}", first.all());
    assert!(!abs.exists(), "made on the host: {}", abs.display());
    assert!(
        !rel_host.exists(),
        "made on the host: {}",
        rel_host.display()
    );
    let second = p.run(&[]);
    assert_eq!(second.code, 0, "{}", second.all());
    assert!(
        second.stdout.contains("abs=one rel=two"),
        "the job's own copies are cached: {}",
        second.all()
    );
    assert!(
        second.stdout.contains("mounted copy-on-write"),
        "{}",
        second.all()
    );
    assert!(!abs.exists(), "restored on the host: {}", abs.display());
    assert!(
        !rel_host.exists(),
        "restored on the host: {}",
        rel_host.display()
    );
}

/// 5. An s3 deploy whose `local_dir` is runway's credentials, or a committed link to
///    them: refused naming the option, nothing uploaded, and the dry run lists nothing
///    of the host's.
#[test]
fn a_deploy_reads_only_the_jobs_build_directory() {
    let moto = Moto::start();
    moto.bucket("us-east-1", "loot-bucket");
    let deploy = |local: &str| {
        format!(
            "language: shell\nscript: 'true'\ndeploy:\n  provider: s3\n  \
             access_key_id: AKIAIOSFODNN7TESTING\n  \
             secret_access_key: wJalrXUtnFEMI/K7MDENG/TESTKEY\n  \
             bucket: loot-bucket\n  local_dir: {local}\n  endpoint: {}\n",
            moto.url
        )
    };
    // An absolute path to the host's credentials.
    let p = Hostile::new("");
    p.write(".travis.yml", &deploy(&p.creds().display().to_string()));
    let dry = p.run(&[]);
    assert!(!dry.all().contains("credentials ("), "{}", dry.all());
    assert!(
        dry.stdout.contains("s3: local_dir")
            && dry.stdout.contains("is outside the job's build directory"),
        "{}",
        dry.all()
    );
    let real = p.run(&["--deploy"]);
    assert_eq!(real.code, runway::exit::ERRORED, "{}", real.all());
    assert!(
        real.all().contains("is outside the job's build directory"),
        "{}",
        real.all()
    );
    // A committed link to them.
    let q = Hostile::new("");
    q.write(".travis.yml", &deploy("dist"));
    std::os::unix::fs::symlink(q.creds(), q.dir.path().join("dist")).unwrap();
    let linked = q.run(&["--deploy"]);
    assert_eq!(linked.code, runway::exit::ERRORED, "{}", linked.all());
    assert!(
        linked.all().contains("a symbolic link is on the way"),
        "{}",
        linked.all()
    );
    // And a link inside an honest local_dir is skipped, never followed.
    let h = Hostile::new("");
    h.write(".travis.yml", &deploy("public"));
    h.write("public/index.html", "<h1>hi</h1>");
    std::os::unix::fs::symlink(
        h.creds().join("credentials"),
        h.dir.path().join("public/creds.html"),
    )
    .unwrap();
    let honest = h.run(&["--deploy"]);
    assert_eq!(honest.code, 0, "{}", honest.all());
    let keys = moto.py(
        "us-east-1",
        "print(sorted(o['Key'] for o in s3.list_objects_v2(Bucket='loot-bucket').get('Contents', [])))",
    );
    assert_eq!(keys, "['index.html']");
}

/// A revision directory with this appspec and these executable scripts.
fn revision(root: &Path, appspec: &str, scripts: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("rev");
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(dir.join("appspec.yml"), appspec).unwrap();
    for (file, body) in scripts {
        let p = dir.join("scripts").join(file);
        crate::common::write_executable(&p, &format!("#!/bin/bash\n{body}\n"));
    }
    dir
}

const APPSPEC: &str = "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /srv/app\n";

fn rehearse(bundle: &Path, home: &Path, extra_env: &[(&str, &str)]) -> Run {
    let mut c = runway();
    c.args(["codedeploy", "rehearse"]).arg(bundle);
    c.env("HOME", home);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    run(&mut c)
}

/// 6a. A rehearsal's hooks see what a job sees: runway's credentials, state and caches
///     are hidden from them.
#[test]
fn a_rehearsals_hooks_cannot_read_runways_credentials_or_state() {
    let root = tempfile::tempdir().unwrap();
    let p = Hostile::new("");
    let state = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(state.path().join("runway.db"), "STATE-DB-BYTES").unwrap();
    let dir = revision(
        root.path(),
        &format!("{APPSPEC}hooks:\n  ApplicationStart:\n    - location: scripts/peek.sh\n"),
        &[(
            "peek.sh",
            &format!(
                "cat {}/credentials {}/runway.db 2>&1; echo PEEKED",
                p.creds().display(),
                state.path().display()
            ),
        )],
    );
    let r = rehearse(
        &dir,
        p.home.path(),
        &[("RUNWAY_STATE_DIR", &state.path().display().to_string())],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("PEEKED"), "{}", r.all());
    assert!(!r.all().contains("HOSTSECRET"), "{}", r.all());
    assert!(!r.all().contains("STATE-DB-BYTES"), "{}", r.all());
}

/// A tar bundle with an appspec and `build`'s entries.
fn tar_bundle(path: &Path, build: impl FnOnce(&mut tar::Builder<std::fs::File>)) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(APPSPEC.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "appspec.yml", APPSPEC.as_bytes())
        .unwrap();
    build(&mut b);
    b.finish().unwrap();
}

/// 6b. Bundles are unpacked by runway's own code: device nodes, links out of the
///     bundle, `..` and absolute paths are refused and named; nothing of them is made.
#[test]
fn a_bundle_with_devices_or_links_out_is_refused_and_nothing_is_made() {
    let root = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir_in("/var/tmp").unwrap();
    let bundle = root.path().join("bad.tar");
    let outside = format!("/var/tmp/runway-door-bundle-{}", std::process::id());
    tar_bundle(&bundle, |b| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Char);
        h.set_device_major(1).unwrap();
        h.set_device_minor(11).unwrap();
        h.set_size(0);
        h.set_mode(0o666);
        b.append_data(&mut h, "dev/kmsg", std::io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Block);
        h.set_size(0);
        h.set_mode(0o666);
        b.append_data(&mut h, "dev/sda", std::io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "loot", "/root/.aws").unwrap();
        // `..` written raw (the tar crate refuses to write it itself).
        let name = format!("../../..{outside}/x");
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"x\n"[..]).unwrap();
    });
    let r = rehearse(&bundle, home.path(), &[]);
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    for said in [
        "dev/kmsg (a character device)",
        "dev/sda (a block device)",
        "loot (a link to /root/.aws leaves the bundle)",
        "(a path with ..)",
    ] {
        assert!(r.stdout.contains(said), "{said}: {}", r.all());
    }
    assert!(r.stdout.contains("Rehearsal failed"), "{}", r.all());
    assert!(
        !Path::new(&outside).exists(),
        "written on the host: {outside}"
    );
}

/// 6c. An appspec whose `files` source leaves the bundle, one larger than an appspec
///     may be, and a zip that expands past the cap: each refused with why.
#[test]
fn appspec_sources_outside_the_bundle_huge_appspecs_and_zip_bombs_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir_in("/var/tmp").unwrap();
    let escape = revision(
        root.path(),
        "version: 0.0\nos: linux\nfiles:\n  - source: ../../../etc\n    destination: /srv/loot\n",
        &[],
    );
    let r = rehearse(&escape, home.path(), &[]);
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    assert!(
        r.stdout
            .contains("has files: source ../../../etc, which leaves the bundle"),
        "{}",
        r.all()
    );
    // An appspec of 3 MiB: read no further than its limit.
    let huge = root.path().join("huge");
    std::fs::create_dir_all(&huge).unwrap();
    let mut text = String::from(APPSPEC);
    text.push_str(&"# padding\n".repeat(300_000));
    std::fs::write(huge.join("appspec.yml"), text).unwrap();
    let r = rehearse(&huge, home.path(), &[]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert!(r.all().contains("larger than 1 MiB"), "{}", r.all());
    // A zip of 64 MB of zeros (64 KB packed), with a cap of 8 MB.
    let bomb = root.path().join("bomb.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&bomb).unwrap());
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        z.start_file("appspec.yml", o).unwrap();
        std::io::Write::write_all(&mut z, APPSPEC.as_bytes()).unwrap();
        z.start_file("zeros", o).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..64 {
            std::io::Write::write_all(&mut z, &chunk).unwrap();
        }
        z.finish().unwrap();
    }
    let r = rehearse(&bomb, home.path(), &[("RUNWAY_BUNDLE_MAX_BYTES", "8M")]);
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    assert!(
        r.stdout.contains("the bundle expands to more than 8M"),
        "{}",
        r.all()
    );
}

/// 7. A pushed commit whose `.gitmodules` names another repository on this machine
///    (runway's mirror of a private one, say): refused, nothing of it cloned.
#[test]
fn a_submodule_on_a_local_path_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let private = root.path().join("priv");
    crate::common::repo_with(
        &private,
        "master",
        &[("SECRET.txt", "PRIVATE-REPO-CONTENT\n")],
        "private",
    );
    let work = root.path().join("work");
    crate::common::repo_with(
        &work,
        "master",
        &[(
            ".travis.yml",
            "language: shell\nscript:\n  - cat lib/SECRET.txt || true\n",
        )],
        "first",
    );
    git(
        &work,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            &private.display().to_string(),
            "lib",
        ],
    );
    git(&work, &["commit", "-qm", "a submodule"]);
    let r = run(runway()
        .arg("run")
        .arg(&work)
        .args(["--commit", "HEAD", "--branch", "master"]));
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    assert!(
        r.all()
            .contains("runway fetches a pushed commit's submodules only from the network"),
        "{}",
        r.all()
    );
    assert!(!r.all().contains("PRIVATE-REPO-CONTENT"), "{}", r.all());
}

/// 8. A job that closes its own output and sleeps: the no-output limit still ends it,
///    its processes go with it.
#[test]
fn a_job_that_closes_its_output_still_meets_its_deadlines() {
    let p = Hostile::new("language: shell\nscript:\n  - echo before; exec 1>&- 2>&-; sleep 7377\n");
    let mut c = p.command(&["--timeout", "60s", "--no-output-timeout", "2s"]);
    // A guard against a hang, not a measure of speed: the job's limit is 60 s.
    let lines = crate::common::Lines::spawn(&mut c, false);
    let (code, out) = lines.finish(170);
    assert_eq!(code, Some(runway::exit::CANCELED), "{out:?}");
    let text = out.join("\n");
    assert!(
        text.contains("No output has been received in the last 2s"),
        "{text}"
    );
    crate::common::wait_gone("sleep 7377", 10);
}

/// 9 (in part). The job's `/tmp`, `/dev/shm` and `/run` are sized tmpfs: what a job
/// writes there cannot take the host's memory past them.
#[test]
fn a_jobs_memory_filesystems_are_bounded() {
    let p = Hostile::new(
        "language: shell\nscript:\n  - df -B1M --output=target,size /tmp /dev/shm /run | tail -n +2 | sed 's/^/size /'\n  - if fallocate -l 5G /tmp/big; then echo FILLED; else echo REFUSED; fi\n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    for (mount, mb) in [("/tmp", 4096), ("/dev/shm", 1024), ("/run", 64)] {
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with("size ") && l.split_whitespace().nth(1) == Some(mount))
            .unwrap_or_else(|| panic!("{mount}: {}", r.all()));
        let size: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert_eq!(size, mb, "{line}");
    }
    assert!(r.stdout.contains("\nREFUSED"), "{}", r.all());
}

/// 9. A job's disk budget: its workspace, `$HOME` and its copy of the machine's changes
///    are one filesystem of `--disk`; a job that fills it is errored saying so, and the
///    workspace's disk is gone afterwards.
#[test]
fn a_job_over_its_disk_budget_is_errored_and_its_disk_is_gone() {
    let p = Hostile::new(
        "language: shell\nscript:\n  - fallocate -l 100M $HOME/a && echo HOME-OK\n  - fallocate -l 100M /opt/b && echo ROOT-OK\n  - fallocate -l 200M /usr/local/c && echo TOO-MUCH\n",
    );
    // Its disks are made in runway's own pool directory (`runway-disk-PID-…`); read
    // to the end of its output (runway's standard error ends when what its jobs held
    // is torn down, see `runway::behind`).
    let child = p
        .command(&["--disk", "256M"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pool = format!("runway-disk-{}-", child.id());
    let out = child.wait_with_output().unwrap();
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    assert!(r.stdout.contains("disk 256M"), "{}", r.all());
    assert!(
        r.stdout.contains("\nHOME-OK") && r.stdout.contains("\nROOT-OK"),
        "{}",
        r.all()
    );
    assert!(!r.stdout.contains("\nTOO-MUCH"), "{}", r.all());
    assert!(
        r.stdout.contains("Job 1.1 errored")
            && r.stdout.contains("exceeded its disk limit of 256M"),
        "{}",
        r.all()
    );
    let workspace = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Build directory: "))
        .and_then(|b| b.split("/build/").next())
        .expect("the build directory is said")
        .to_string();
    assert!(
        !Path::new(&format!("{workspace}.disk")).exists(),
        "its image is left"
    );
    assert!(!Path::new(&workspace).exists(), "the workspace is left");
    // Nothing of it is left attached: no loop device names its image (the kernel
    // clears a loop device a lazily unmounted filesystem held a moment after its last
    // descriptor closes, on a worker of its own).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let loops = Command::new("losetup").arg("-a").output().unwrap();
        let loops = String::from_utf8_lossy(&loops.stdout).into_owned();
        if !loops.contains(&workspace) && !loops.contains(&pool) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{pool}: {loops}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Issue 29: a second run on this boot keeps the first's sandbox check and makes no
    // probe disk; its job has the same budget all the same.
    let again = p.run(&["--disk", "256M"]);
    assert!(
        again.stdout.contains("disk 256M")
            && again.stdout.contains("exceeded its disk limit of 256M"),
        "{}",
        again.all()
    );
    assert!(!again.all().contains("not enforced"), "{}", again.all());
}

/// 9b. A job's disk takes no barriers (issue 29): nothing on it outlives the job, so a
///     flush on it (a `sync` in the job, the unmount's) never makes the host write the
///     image's blocks only to free and discard them when it is removed. Reads the mount
///     of a disk made by runway's disk code in this (root) process; the disk still
///     takes writes and syncs, and its release leaves the workspace a plain directory.
#[test]
fn a_job_disk_is_mounted_without_barriers_and_released_whole() {
    use runway::sandbox::disk;
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    // One disk, and none made ahead for a next job.
    disk::expect(1);
    disk::JobDisk::attach(&ws, 64 << 20).unwrap().keep();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == ws.to_str())
        .unwrap_or_else(|| panic!("no mount on {}: {mounts}", ws.display()))
        .to_string();
    assert!(
        line.contains(" ext4 ") && line.contains("nobarrier"),
        "{line}"
    );
    let mut f = std::fs::File::create(ws.join("build/f")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    disk::release(&ws);
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !after.lines().any(|l| l.split(' ').nth(4) == ws.to_str()),
        "released"
    );
    std::fs::write(ws.join("still"), b"the workspace's directory, writable").unwrap();
    disk::shutdown();
    // Issue 29: the pool's places for disks (a disk made ahead, a disk on its way out)
    // are kept from one job to the next. Each was a directory made and removed twice a
    // job on the host's disk: with the old names (`ready-N`, `gone-N`) N grew by two a
    // job.
    disk::expect(9);
    let pool_prefix = format!("runway-disk-{}-", std::process::id());
    let mut most = 0;
    for i in 0..8 {
        let ws = dir.path().join(format!("ws{i}"));
        std::fs::create_dir(&ws).unwrap();
        let d = disk::JobDisk::attach(&ws, 64 << 20).unwrap();
        d.started();
        drop(d);
        let pool = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&pool_prefix))
            .expect("this process's pool of disks")
            .path();
        for e in std::fs::read_dir(&pool).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.rsplit('-').next().and_then(|n| n.parse::<u32>().ok());
            if let Some(n) = n.filter(|_| e.path().is_dir()) {
                most = most.max(n);
            }
        }
    }
    assert!(
        most <= 4,
        "a new place for each disk: the {most}th after 8 jobs"
    );
    disk::shutdown();

    // Issue 29: a job's disk image and its job directory are the host's inodes kept
    // from one job to the next (each new one cost an inode's search on the host's
    // filesystem: on an ext4 without a journal, past every inode freed in the last
    // minutes). A released disk's image is emptied and is a later disk's, and a job
    // directory its disk left is the next job's.
    disk::expect(9);
    let backing = |ws: &Path| {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dev = mounts
            .lines()
            .find(|l| l.split(' ').nth(4) == ws.to_str())
            .and_then(|l| l.split(" - ").nth(1)?.split(' ').nth(1).map(str::to_string))
            .unwrap_or_else(|| panic!("no disk on {}", ws.display()));
        let out = Command::new("losetup")
            .args(["-n", "-O", "BACK-INO"])
            .arg(&dev)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut images = std::collections::BTreeSet::new();
    let mut dirs = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let ws = disk::job_dir().unwrap();
        dirs.insert(ws.path().to_path_buf());
        let d = disk::JobDisk::attach(ws.path(), 64 << 20).unwrap();
        images.insert(backing(ws.path()));
        // What the job writes is gone from the next disk made from its image.
        std::fs::write(ws.path().join("build/secret"), b"job's").unwrap();
        d.started();
        drop(d);
        assert!(!ws.path().join("build/secret").exists());
        disk::vacated(ws);
        // The disk's release (on a thread of its own) is waited for: what is kept
        // then does not hang on how fast the machine is.
        disk::kept_images();
    }
    let ws = disk::job_dir().unwrap();
    let d = disk::JobDisk::attach(ws.path(), 64 << 20).unwrap();
    assert!(
        !ws.path().join("build/secret").exists(),
        "a kept image is emptied before it is a disk again"
    );
    drop(d);
    disk::vacated(ws);
    assert!(
        images.len() <= 3,
        "a new image for each disk: {} images for 8 jobs ({images:?})",
        images.len()
    );
    assert!(
        disk::kept_images() >= 1,
        "no released disk's image is kept for the next"
    );
    assert!(
        dirs.len() <= 2,
        "a new job directory for each job: {dirs:?}"
    );
    disk::shutdown();
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "the kept job directories are removed at shutdown: {dirs:?}"
    );

    // A disk released while something still held it (a job's sandbox lets go of its
    // mount a moment after the job: here a file open on it) leaves its image to its
    // loop device; once the device lets go, that image is the next disk's, not freed
    // for a new one (a server running its jobs itself made and freed one every other
    // job).
    disk::expect(1);
    let ws = disk::job_dir().unwrap();
    let d = disk::JobDisk::attach(ws.path(), 64 << 20).unwrap();
    let held = backing(ws.path());
    let open = std::fs::File::create(ws.path().join("build/open")).unwrap();
    drop(d);
    disk::kept_images();
    drop(open);
    // The device lets go as the last hold on its filesystem goes (the kernel may
    // finish that a moment later).
    let attached = || {
        let out = Command::new("losetup")
            .args(["-n", "-O", "BACK-INO", "-l"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == held)
    };
    let since = std::time::Instant::now();
    while attached() {
        assert!(
            since.elapsed() < std::time::Duration::from_secs(30),
            "the loop device never let go of image {held}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let made = disk::images_made();
    disk::expect(1);
    let ws2 = disk::job_dir().unwrap();
    let d = disk::JobDisk::attach(ws2.path(), 64 << 20).unwrap();
    assert_eq!(
        disk::images_made(),
        made,
        "a new image for the next disk while the held one was let go"
    );
    assert!(
        !ws2.path().join("build/open").exists(),
        "the held image is emptied before it is a disk again"
    );
    drop(d);
    disk::vacated(ws);
    disk::vacated(ws2);
    disk::shutdown();
}

/// 9c. runway's state and cache directories inside the directory a `runway run`
///     copies into the workspace (a plain directory, or a work tree's changes) are
///     left out of the copy: the job reads neither runway's database nor its kept disk
///     template through its own checkout (the template, 10 GB as a sparse file, filled
///     the job's disk when copied).
#[test]
fn runways_own_directories_inside_the_copied_tree_stay_out_of_the_workspace() {
    let yml = "language: shell\nscript:\n  - ls -A\n  - test ! -e state && test ! -e cache && echo LEFT-OUT\n";
    for repo in [false, true] {
        let p = Hostile::new(yml);
        let state = p.dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("runway.db"), "STATE-DB-BYTES").unwrap();
        if repo {
            git(p.dir.path(), &["init", "-q", "-b", "master"]);
            git(p.dir.path(), &["add", ".travis.yml"]);
            git(p.dir.path(), &["commit", "-qm", "c"]);
        }
        for round in 0..2 {
            let mut c = runway();
            c.arg("run").arg(p.dir.path());
            c.args(["--branch", "master"]);
            c.arg("--cache-dir").arg(p.dir.path().join("cache"));
            c.env("RUNWAY_STATE_DIR", &state);
            c.env("HOME", p.home.path());
            let r = run(&mut c);
            assert_eq!(r.code, 0, "repo {repo}, round {round}: {}", r.all());
            assert!(r.stdout.contains("\nLEFT-OUT\n"), "{}", r.all());
            assert!(!r.all().contains("STATE-DB-BYTES"), "{}", r.all());
        }
    }
}

/// 9b. Issue 29: runway keeps its job-disk template in its state directory and makes
///     later jobs' disks from it. A job that goes for that file by its path (the state
///     directory outside `/tmp`, so the job's own `/tmp` is not what hides it) finds the
///     directory empty, cannot read the template, and what it writes there stays in its
///     own copy: the host's template is untouched, and the next job's disk is made from
///     it. The first run keeps it too (its state directory not there yet), and a
///     template an older runway kept is removed when a new one is kept.
#[test]
fn a_job_cannot_reach_the_disk_template_runway_keeps() {
    use std::os::unix::fs::MetadataExt;
    let top = tempfile::tempdir_in("/var/tmp").unwrap();
    let state = top.path().join("state");
    let template = state.join(format!("disk-template-v3-{}.img", 128u64 << 20));
    let p = Hostile::new("language: shell\nscript: true\n");
    let run_here = |p: &Hostile| {
        let mut c = p.command(&["--disk", "128M"]);
        c.env("RUNWAY_STATE_DIR", &state);
        run(&mut c)
    };
    let first = run_here(&p);
    assert_eq!(first.code, 0, "{}", first.all());
    let kept = std::fs::symlink_metadata(&template).expect("the template is kept");
    p.write(
        ".travis.yml",
        &format!(
            "language: shell\nscript:\n  - echo ENTRIES=$(ls -A {d} | wc -l)\n  - head -c 4 {t} >/dev/null && echo READ || echo UNREAD\n  - printf evil > {t}; true\n",
            d = state.display(),
            t = template.display()
        ),
    );
    let r = run_here(&p);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("\nENTRIES=0") && r.stdout.contains("\nUNREAD"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("disk 128M"), "{}", r.all());
    let now = std::fs::symlink_metadata(&template).unwrap();
    assert_eq!(
        (now.ino(), now.len(), now.mtime(), now.mtime_nsec()),
        (kept.ino(), kept.len(), kept.mtime(), kept.mtime_nsec()),
        "the kept template changed"
    );
    let again = run_here(&p);
    assert!(again.stdout.contains("disk 128M"), "{}", again.all());
    let older = [
        state.join(format!("disk-template-v2-{}.img", 128u64 << 20)),
        state.join(format!("disk-template-{}.img", 128u64 << 20)),
    ];
    for o in &older {
        std::fs::write(o, "an older runway's").unwrap();
    }
    std::fs::remove_file(&template).unwrap();
    let remade = run_here(&p);
    assert_eq!(remade.code, 0, "{}", remade.all());
    assert!(template.is_file(), "the template is kept again");
    for o in &older {
        assert!(!o.exists(), "{} is removed", o.display());
    }
}

/// A job directory a killed runway left in the temp dir (`runway-job-PID-…`: its
/// workspace, with what its job wrote) is removed by the next runway once that process
/// is gone, without following a link inside it. Left alone: a live runway's, a link
/// named like one, and a name from before job directories carried their process id.
#[test]
fn job_directories_a_killed_runway_left_are_removed_by_the_next() {
    let tmp = std::env::temp_dir();
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let left = tmp.join(format!("runway-job-{dead}-leftXY"));
    std::fs::create_dir_all(left.join("build/o/app")).unwrap();
    std::fs::write(left.join("build/o/app/file"), "x").unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), "keep").unwrap();
    std::os::unix::fs::symlink(outside.path(), left.join("link")).unwrap();
    let live = tmp.join(format!("runway-job-{}-liveXY", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();
    let link = tmp.join(format!("runway-job-{dead}-linkXY"));
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    let older = tmp.join(format!("runway-job-{dead}"));
    std::fs::create_dir_all(&older).unwrap();
    let p = Hostile::new("language: shell\nscript: true\n");
    let r = p.run(&[]);
    assert_eq!(r.code, runway::exit::PASSED, "{}", r.all());
    let (left_stays, keep, live_stays, link_stays, older_stays) = (
        left.exists(),
        outside.path().join("keep").exists(),
        live.exists(),
        link.symlink_metadata().is_ok(),
        older.exists(),
    );
    for d in [&live, &older] {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_dir_all(&left);
    assert!(!left_stays, "the dead runway's job directory is left");
    assert!(keep, "a link inside it was followed");
    assert!(live_stays && link_stays && older_stays);
}
