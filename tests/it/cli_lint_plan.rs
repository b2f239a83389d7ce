//! `runway lint` and `runway plan` as a user runs them: the real binary on real files
//! and real git repositories in temp directories.

use crate::common::{bare_clone, git, repo_with, run, runway};

#[test]
fn lint_valid_file_exits_0_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(".travis.yml");
    std::fs::write(&f, "language: java\njdk: openjdk8\nsudo: false\n").unwrap();
    let r = run(runway().arg("lint").arg(&f));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(":3:1: warning: sudo: deprecated key"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("valid: 0 error(s), 1 warning(s)"),
        "{}",
        r.all()
    );
    assert!(
        !r.stdout.contains('\x1b'),
        "no colours when not on a terminal"
    );
}

/// `lint --json` for programs (editors, CI annotations): the same diagnostics, placed,
/// with the same exit code.
#[test]
fn lint_json_lists_placed_diagnostics_and_keeps_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(".travis.yml");
    std::fs::write(&f, "language: java\ndeploy:\n  provider: s4\nfoo: 1\n").unwrap();
    let r = run(runway().args(["lint", "--json"]).arg(&f));
    assert_eq!(r.code, 1, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["valid"], false);
    assert_eq!(v["file"], f.display().to_string());
    let d = v["diagnostics"].as_array().unwrap();
    assert!(
        d.iter().any(|d| d["level"] == "error"
            && d["line"] == 3
            && d["col"] == 13
            && d["path"] == "deploy.provider"
            && d["code"] == "unknown_value"),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|d| d["level"] == "warning" && d["line"] == 4 && d["code"] == "unknown_key"),
        "{d:#?}"
    );
    std::fs::write(&f, "language: java\n").unwrap();
    let r = run(runway().args(["lint", "--json"]).arg(&f));
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["valid"], true);
}

#[test]
fn lint_errors_exit_1_with_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".travis.yml"),
        "language: java\ndeploy:\n  provider: s4\nbarnches:\n  only: master\n",
    )
    .unwrap();
    let r = run(runway().arg("lint").current_dir(dir.path()));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains(".travis.yml:3:13: error: deploy.provider: unknown provider \"s4\""),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains(".travis.yml:4:1: warning: barnches: unknown key \"barnches\"; did you mean \"branches\"?"), "{}", r.all());
}

#[test]
fn lint_missing_file_is_a_usage_error() {
    let r = run(runway().args(["lint", "/nonexistent/.travis.yml"]));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("cannot read /nonexistent/.travis.yml"),
        "{}",
        r.all()
    );
}

#[test]
fn lint_invalid_yaml_points_at_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yml");
    std::fs::write(&f, "script:\n  - a\n b: [\n").unwrap();
    let r = run(runway().arg("lint").arg(&f));
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("error: invalid YAML"), "{}", r.all());
}

#[test]
fn plan_plain_directory_needs_a_branch() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".travis.yml"), "language: java\n").unwrap();
    let r = run(runway().arg("plan").arg(dir.path()));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("give --branch B or --tag T"),
        "{}",
        r.all()
    );
    let r = run(runway()
        .arg("plan")
        .arg(dir.path())
        .args(["--branch", "master"]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.starts_with("Build runs:"), "{}", r.all());
}

/// §4's 200-job limit through the command line: `plan` and `run` exit 2 (invalid
/// configuration) and point at the key to change; `run` starts no job.
#[test]
fn plan_and_run_refuse_a_build_of_more_than_200_jobs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".travis.yml"),
        "language: python\npython: [\"3.8\", \"3.9\", \"3.10\", \"3.11\", \"3.12\"]\nenv:\n  matrix:\n    - A=1\n    - A=2\nscript: echo RAN\nos: [linux, osx, windows, freebsd, linux-ppc64le]\narch: [amd64, arm64, ppc64le, s390x, arm64-graviton2]\n",
    )
    .unwrap();
    for cmd in ["plan", "run"] {
        let r = run(runway()
            .arg(cmd)
            .arg(dir.path())
            .args(["--branch", "master"]));
        assert_eq!(r.code, 2, "{cmd}: {}", r.all());
        assert!(
            r.stderr.contains(".travis.yml:8:6: error: the build has 250 jobs (os 5 × arch 5 × python 5 × env 2); Travis limits a build to 200 jobs"),
            "{cmd}: {}",
            r.all()
        );
        assert!(!r.stdout.contains("RAN"), "{}", r.all());
    }
}

#[test]
fn plan_json_has_the_promised_shape_for_the_fixture() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/springboot-webservice"
    );
    let r = run(runway().args(["plan", fixture, "--branch", "master", "--json"]));
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v["build"]["runs"], true);
    let job = &v["jobs"][0];
    assert_eq!(job["number"], "1.1");
    assert_eq!(job["stage"], "test");
    assert_eq!(job["matrix"]["jdk"], "openjdk17");
    assert_eq!(job["allow_failure"], false);
    assert!(job["name"].is_null());
    assert_eq!(job["deploys"][0]["provider"], "s3");
    assert_eq!(job["deploys"][0]["fires"], true);
    assert_eq!(job["deploys"][1]["provider"], "codedeploy");
    let email = &v["notifications"]["email"];
    assert_eq!(email["recipients"][0], "team@example.com");
    assert_eq!(email["on_success"], "change");
    assert_eq!(email["on_failure"], "always");

    let dev = run(runway().args(["plan", fixture, "--branch", "dev", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&dev.stdout).expect("JSON");
    assert_eq!(v["build"]["runs"], false);
    assert_eq!(
        v["build"]["reason"],
        "branch \"dev\" is not in branches.only (master)"
    );
    assert_eq!(v["jobs"].as_array().unwrap().len(), 0);
}

#[test]
fn plan_git_repo_defaults_to_current_branch_and_head_message() {
    let dir = tempfile::tempdir().unwrap();
    let yml = "language: java\nbranches:\n  only: [main]\ndeploy:\n  provider: s3\n  bucket: b\n  on: main\n";
    let repo = repo_with(
        &dir.path().join("app"),
        "main",
        &[(".travis.yml", yml)],
        "first",
    );
    let r = run(runway().arg("plan").arg(&repo).arg("--json"));
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["build"]["runs"], true);
    assert_eq!(v["jobs"][0]["deploys"][0]["fires"], true);
    // No recipients configured: the commit's author and committer.
    let to: Vec<&str> = v["notifications"]["email"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert_eq!(to, ["ada@example.com", "cy@example.com"]);

    git(
        &repo,
        &["commit", "-q", "--allow-empty", "-m", "docs only [skip ci]"],
    );
    let r = run(runway().arg("plan").arg(&repo));
    assert!(
        r.stdout
            .contains("does not run: the commit message contains [skip ci]"),
        "{}",
        r.all()
    );
    let r = run(runway()
        .arg("plan")
        .arg(&repo)
        .args(["--commit-message", "real change"]));
    assert!(r.stdout.starts_with("Build runs"), "{}", r.all());

    git(&repo, &["checkout", "-q", "-b", "feature"]);
    git(
        &repo,
        &["commit", "-q", "--allow-empty", "-m", "feature work"],
    );
    let r = run(runway().arg("plan").arg(&repo));
    assert!(
        r.stdout
            .contains("branch \"feature\" is not in branches.only"),
        "{}",
        r.all()
    );
}

#[test]
fn plan_bare_repository_reads_the_config_at_head() {
    let dir = tempfile::tempdir().unwrap();
    let work = repo_with(
        &dir.path().join("work"),
        "master",
        &[(
            ".travis.yml",
            "language: java\njdk: [openjdk8, openjdk11]\n",
        )],
        "c1",
    );
    let bare = bare_clone(&work, &dir.path().join("app.git"));
    let r = run(runway().arg("plan").arg(&bare).arg("--json"));
    assert_eq!(r.code, 0, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(v["jobs"][1]["matrix"]["jdk"], "openjdk11");
}

#[test]
fn plan_tag_and_event_options() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".travis.yml"),
        "language: java\ndeploy:\n  provider: s3\n  bucket: b\n  on:\n    tags: true\n",
    )
    .unwrap();
    let r = run(runway()
        .arg("plan")
        .arg(dir.path())
        .args(["--tag", "v1.2", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["jobs"][0]["deploys"][0]["fires"], true, "{}", r.all());
    let r = run(runway().arg("plan").arg(dir.path()).args([
        "--branch",
        "master",
        "--event",
        "pull_request",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        v["jobs"][0]["deploys"][0]["reason"],
        "the current build is a pull request"
    );
    let bad = run(runway()
        .arg("plan")
        .arg(dir.path())
        .args(["--branch", "m", "--event", "nope"]));
    assert_eq!(bad.code, 2, "{}", bad.all());
}

/// Issue 10: what a pushed file can do to `lint`, `plan` and `run`. Each is refused the
/// same way by all three (exit 2 for a file that cannot be read or is past a limit, with
/// `FILE:LINE:COL`), never a crash, a hang or unbounded memory.
fn dir_with(name: &str, bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), bytes).unwrap();
    dir
}

fn lint_plan_run(dir: &std::path::Path) -> [crate::common::Run; 3] {
    let f = dir.join(".travis.yml");
    [
        run(runway().arg("lint").arg(&f)),
        run(runway().arg("plan").arg(dir).args(["--branch", "master"])),
        run(runway().arg("run").arg(dir).args(["--branch", "master"])),
    ]
}

#[test]
fn input_that_is_not_text_is_refused_at_its_place_by_lint_plan_and_run() {
    // Invalid UTF-8 on line 3, column 9 (after "  - echo").
    let d = dir_with(
        ".travis.yml",
        b"language: shell\nscript:\n  - echo \xff\xfe\n",
    );
    for (i, r) in lint_plan_run(d.path()).iter().enumerate() {
        assert_eq!(r.code, 2, "command {i}: {}", r.all());
        assert!(
            r.all()
                .contains(".travis.yml:3:10: error: invalid UTF-8 (byte 0xFF)"),
            "command {i}: {}",
            r.all()
        );
        assert!(!r.all().contains("Build runs"), "{}", r.all());
    }
    // Random binary (NUL bytes) is refused too, never planned as "Build runs".
    let d = dir_with(".travis.yml", b"language: shell\n\x00\x01\x02binary");
    for r in lint_plan_run(d.path()) {
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.all().contains(".travis.yml:2:1: error: a NUL byte"),
            "{}",
            r.all()
        );
    }
    // A link to /dev/zero is read up to the size limit, not for ever.
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", d.path().join(".travis.yml")).unwrap();
    for r in lint_plan_run(d.path()) {
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.all()
                .contains(".travis.yml:1:1: error: the file is larger than 1 MiB"),
            "{}",
            r.all()
        );
    }
}

#[test]
fn nesting_and_alias_bombs_are_refused_with_their_limits() {
    // 20,000 parentheses, 100,000 NOTs, 200,000 `!`s in an `if:`: once a stack overflow.
    for cond in [
        format!(
            "{}branch = master{}",
            "(".repeat(20_000),
            ")".repeat(20_000)
        ),
        "not ".repeat(100_000) + "branch = master",
        format!("'{}branch = master'", "!".repeat(200_000)),
    ] {
        let d = dir_with(
            ".travis.yml",
            format!("language: shell\nif: {cond}\n").as_bytes(),
        );
        for r in lint_plan_run(d.path()) {
            assert!(matches!(r.code, 1 | 2), "{}", r.all());
            assert!(
                r.all().contains(".travis.yml:2:5: error: if: condition")
                    && r.all().contains("nesting deeper than 64 levels"),
                "{}",
                &r.all()[..r.all().len().min(2000)]
            );
            assert!(
                r.all().len() < 5_000,
                "the condition is quoted, not repeated whole"
            );
        }
    }
    // 20,000 flat ORs are fine: a flat list.
    let ors = vec!["branch = dev"; 20_000].join(" OR ") + " OR branch = master";
    let d = dir_with(
        ".travis.yml",
        format!("language: shell\nif: {ors}\n").as_bytes(),
    );
    let r = run(runway()
        .arg("plan")
        .arg(d.path())
        .args(["--branch", "master"]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.starts_with("Build runs"), "{}", r.stdout);
    // YAML nested 65 deep.
    let deep = format!(
        "language: shell\nx: {}1{}\n",
        "[".repeat(65),
        "]".repeat(65)
    );
    let d = dir_with(".travis.yml", deep.as_bytes());
    for r in lint_plan_run(d.path()) {
        assert!(
            r.all().contains("nesting deeper than 64 levels"),
            "{}",
            r.all()
        );
    }
    // A 900 KB string aliased 10×10×10×10 (about 9 GB once expanded).
    let bomb = format!(
        "language: shell\na: &a [\"{}\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
        "x".repeat(900_000)
    );
    let d = dir_with(".travis.yml", bomb.as_bytes());
    for r in lint_plan_run(d.path()) {
        assert_eq!(r.code, 2, "{}", r.all());
        assert!(
            r.all()
                .contains("error: the document expands to more than 16 MiB of text"),
            "{}",
            r.all()
        );
    }
}

#[test]
fn fifty_thousand_keys_or_include_entries_are_read_and_refused_at_the_key() {
    let keys: String = (0..50_000).map(|i| format!("k{i}: v\n")).collect();
    let d = dir_with(".travis.yml", format!("language: shell\n{keys}").as_bytes());
    let r = run(runway().arg("lint").arg(d.path().join(".travis.yml")));
    assert_eq!(r.code, 0, "{}", &r.stdout[r.stdout.len() - 200..]);
    assert!(r.stdout.ends_with("valid: 0 error(s), 50000 warning(s)\n"));
    let inc: String = (0..50_000).map(|i| format!("    - env: A={i}\n")).collect();
    let d = dir_with(
        ".travis.yml",
        format!("language: shell\njobs:\n  include:\n{inc}").as_bytes(),
    );
    let r = run(runway()
        .arg("plan")
        .arg(d.path())
        .args(["--branch", "master"]));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr
            .contains(".travis.yml:3:3: error: the build has 50000 jobs (jobs.include 50000)"),
        "{}",
        r.stderr
    );
}

#[test]
fn durations_out_of_range_exit_2_with_the_range() {
    let d = dir_with(".travis.yml", b"language: shell\nscript: true\n");
    for t in ["99999999999999999999", "3000000000000000h", "0"] {
        let r = run(runway()
            .arg("run")
            .arg(d.path())
            .args(["--branch", "master", "--timeout", t]));
        assert_eq!(r.code, 2, "{t}: {}", r.all());
        assert!(
            r.stderr.contains("durations go from 1ms to 168h"),
            "{}",
            r.stderr
        );
    }
}

/// issue 14: `runway plan` in a subdirectory of a work tree said ". is not a git
/// repository"; it plans the work tree it is in, as git commands do.
#[test]
fn plan_and_run_from_a_subdirectory_act_on_the_work_tree() {
    let dir = tempfile::tempdir().unwrap();
    let work = repo_with(
        &dir.path().join("w"),
        "feature",
        &[
            (
                ".travis.yml",
                "language: shell\nscript: test -f src/lib/marker\n",
            ),
            ("src/lib/marker", "x"),
        ],
        "first",
    );
    let sub = work.join("src/lib");
    let r = run(runway().arg("plan").current_dir(&sub));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("branch \"feature\""), "{}", r.all());
    let r = run(runway().arg("run").arg(".").current_dir(&sub));
    assert_eq!(r.code, 0, "the whole work tree is built: {}", r.all());
}
