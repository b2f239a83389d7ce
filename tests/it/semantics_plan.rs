//! docs/semantics.md §3 (branches, if), §4 (matrix, stages), §6 (deploy `on:`) and
//! §7 (email policy), pinned on strings through the pure planner.

use runway::config;
use runway::event::{BuildEvent, EventType, Person};
use runway::plan::{self, Frequency, Plan, Settings};

fn push(branch: &str) -> BuildEvent {
    BuildEvent {
        repo: "owner/app".into(),
        branch: Some(branch.into()),
        event: EventType::Push,
        commit_message: "a change".into(),
        author: Some(Person {
            name: "A".into(),
            email: "author@example.com".into(),
        }),
        committer: Some(Person {
            name: "C".into(),
            email: "committer@example.com".into(),
        }),
        ..BuildEvent::default()
    }
}

fn tag(name: &str) -> BuildEvent {
    BuildEvent {
        branch: None,
        tag: Some(name.into()),
        ..push("")
    }
}

fn plan_for(yaml: &str, event: &BuildEvent) -> Plan {
    let loaded = config::load(yaml);
    plan::plan(
        &loaded.config,
        event,
        &Settings {
            build_number: 7,
            ..Settings::default()
        },
    )
}

fn runs(yaml: &str, event: &BuildEvent) -> bool {
    plan_for(yaml, event).build.runs
}

fn matrix(p: &Plan) -> Vec<String> {
    p.jobs
        .iter()
        .map(|j| {
            let mut parts: Vec<String> = j.matrix.iter().map(|(k, v)| format!("{k}={v}")).collect();
            parts.extend(j.env.iter().map(|e| format!("{}={}", e.name, e.value)));
            parts.join(" ")
        })
        .collect()
}

// ---- §3 branches

#[test]
fn s3_branches_only_literal_and_regex() {
    let y = "branches:\n  only:\n    - master\n    - /^release\\/.*$/\n";
    assert!(runs(y, &push("master")));
    assert!(runs(y, &push("release/1.0")));
    let p = plan_for(y, &push("dev"));
    assert!(!p.build.runs);
    assert!(
        p.build.reason.contains("not in branches.only"),
        "{}",
        p.build.reason
    );
}

#[test]
fn s3_branches_scalar_means_only_and_regex_is_unanchored() {
    assert!(!runs("branches: master\n", &push("dev")));
    assert!(runs("branches:\n  only: [/feat/]\n", &push("my-feature")));
}

#[test]
fn s3_branches_except_and_both_lists() {
    let y = "branches:\n  except: [dev, /^tmp-/]\n";
    assert!(!runs(y, &push("dev")));
    assert!(!runs(y, &push("tmp-1")));
    assert!(runs(y, &push("master")));
    let both = "branches:\n  only: [/^feat/]\n  except: [feat-skip]\n";
    assert!(runs(both, &push("feat-a")));
    assert!(!runs(both, &push("feat-skip")));
}

#[test]
fn s3_tags_are_tested_by_tag_name() {
    let y = "branches:\n  only: [master]\n";
    let p = plan_for(y, &tag("v1.0"));
    assert!(!p.build.runs);
    assert!(
        p.build.reason.contains("tag \"v1.0\""),
        "{}",
        p.build.reason
    );
    assert!(runs(
        "branches:\n  only: [master, /^v\\d+/]\n",
        &tag("v1.0")
    ));
}

#[test]
fn s3_gh_pages_is_skipped_unless_listed() {
    assert!(!runs("language: java\n", &push("gh-pages")));
    assert!(!runs("branches:\n  except: [dev]\n", &push("gh_pages")));
    assert!(runs("branches:\n  only: [gh-pages]\n", &push("gh-pages")));
}

#[test]
fn s3_skip_ci_in_the_commit_message() {
    for msg in [
        "fix [skip ci]",
        "[ci skip] x",
        "[skip travis]",
        "[Travis CI skip]",
        "[skip travis-ci]",
        "[TRAVISCI SKIP]",
    ] {
        let mut e = push("master");
        e.commit_message = msg.into();
        let p = plan_for("language: java\n", &e);
        assert!(!p.build.runs, "{msg}");
        assert!(
            p.build.reason.contains("commit message"),
            "{}",
            p.build.reason
        );
    }
    let mut api = push("master");
    api.commit_message = "[skip ci]".into();
    api.event = EventType::Api;
    assert!(
        runs("language: java\n", &api),
        "api builds ignore [skip ci]"
    );
}

#[test]
fn s3_root_if() {
    let y = "if: branch = master AND type = push\n";
    assert!(runs(y, &push("master")));
    assert!(!runs(y, &push("dev")));
    let invalid = plan_for("if: branch = $X\n", &push("master"));
    assert!(!invalid.build.runs, "an invalid condition counts as false");
    assert!(
        invalid.build.reason.contains("invalid"),
        "{}",
        invalid.build.reason
    );
}

#[test]
fn s3_if_env_reads_global_env_and_settings() {
    let y = "env:\n  global:\n    - DEPLOY=yes\nif: env(DEPLOY) = yes AND env(TOKEN) IS present\n";
    let loaded = config::load(y);
    let settings = Settings {
        build_number: 1,
        env: runway::config::model::parse_env_string("TOKEN=s3cr3t").unwrap(),
    };
    assert!(plan::plan(&loaded.config, &push("x"), &settings).build.runs);
    assert!(
        !plan::plan(&loaded.config, &push("x"), &Settings::default())
            .build
            .runs
    );
}

// ---- §4 matrix

#[test]
fn s4_cartesian_product_env_last_and_numbers() {
    let y =
        "language: python\npython: [\"3.8\", \"3.10\"]\nos: [linux, osx]\nenv:\n  - A=1\n  - A=2\n";
    let p = plan_for(y, &push("master"));
    assert_eq!(
        matrix(&p),
        [
            "os=linux python=3.8 A=1",
            "os=linux python=3.8 A=2",
            "os=linux python=3.10 A=1",
            "os=linux python=3.10 A=2",
            "os=osx python=3.8 A=1",
            "os=osx python=3.8 A=2",
            "os=osx python=3.10 A=1",
            "os=osx python=3.10 A=2",
        ]
    );
    assert_eq!(p.jobs[0].number, "7.1");
    assert_eq!(p.jobs[7].number, "7.8");
}

#[test]
fn s4_every_expansion_key_jdk_node_rvm_go_rust() {
    let cases = [
        (
            "language: java\njdk: [openjdk8, openjdk11]\n",
            "jdk=openjdk8",
        ),
        (
            "language: node_js\nnode_js: [\"16\", \"18\"]\n",
            "node_js=16",
        ),
        ("language: ruby\nrvm: [\"2.7\", \"3.0\"]\n", "rvm=2.7"),
        ("language: go\ngo: [\"1.20\", \"1.21\"]\n", "go=1.20"),
        ("language: rust\nrust: [stable, nightly]\n", "rust=stable"),
        ("language: php\nphp: [\"7.0\", \"8.1\"]\n", "php=7.0"),
    ];
    for (y, first) in cases {
        let p = plan_for(y, &push("master"));
        assert_eq!(p.jobs.len(), 2, "{y}");
        assert_eq!(matrix(&p)[0], first, "{y}");
    }
}

#[test]
fn s4_env_string_is_one_job_env_list_is_one_job_each() {
    assert_eq!(plan_for("env: A=1 B=2\n", &push("m")).jobs.len(), 1);
    assert_eq!(
        plan_for("env:\n  - A=1 B=2\n  - A=3\n", &push("m"))
            .jobs
            .len(),
        2
    );
}

#[test]
fn s4_global_env_before_job_env() {
    let y = "env:\n  global:\n    - G=1\n  jobs:\n    - J=2\n";
    let p = plan_for(y, &push("m"));
    let names: Vec<&str> = p.jobs[0].env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["G", "J"]);
}

#[test]
fn s4_single_implicit_job_is_dropped_when_includes_exist() {
    let y = "language: java\njdk: openjdk8\njobs:\n  include:\n    - name: a\n    - name: b\n";
    let p = plan_for(y, &push("m"));
    assert_eq!(p.jobs.len(), 2);
    assert_eq!(p.jobs[0].name.as_deref(), Some("a"));
    // Includes inherit the first value of each root expansion key.
    assert_eq!(matrix(&p)[0], "jdk=openjdk8");
    // With two root values, the expanded jobs stay.
    let y2 = "language: java\njdk: [openjdk8, openjdk11]\njobs:\n  include:\n    - name: a\n";
    assert_eq!(plan_for(y2, &push("m")).jobs.len(), 3);
}

#[test]
fn s4_default_job_when_nothing_expands() {
    let p = plan_for("language: java\nscript: make\n", &push("m"));
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(p.jobs[0].stage, "test");
}

#[test]
fn s4_include_without_env_gets_the_first_env_jobs_entry() {
    let y = "env:\n  - A=1\n  - A=2\njobs:\n  include:\n    - name: inc\n";
    let p = plan_for(y, &push("m"));
    let inc = p
        .jobs
        .iter()
        .find(|j| j.name.as_deref() == Some("inc"))
        .unwrap();
    assert_eq!(inc.env[0].value, "1");
}

#[test]
fn s4_exclude_exact_match_env_minus_globals() {
    let y = "language: java\njdk: [openjdk8, openjdk11]\nenv:\n  global: [G=1]\n  jobs: [A=1, A=2]\njobs:\n  exclude:\n    - jdk: openjdk8\n      env: A=2\n";
    let p = plan_for(y, &push("m"));
    assert_eq!(
        matrix(&p),
        [
            "jdk=openjdk8 G=1 A=1",
            "jdk=openjdk11 G=1 A=1",
            "jdk=openjdk11 G=1 A=2"
        ]
    );
    // A partial env does not match.
    let partial = "env: [\"A=1 B=2\"]\njobs:\n  exclude:\n    - env: A=1\n";
    assert_eq!(plan_for(partial, &push("m")).jobs.len(), 1);
}

#[test]
fn s4_exclude_with_false_if_is_ignored() {
    let y = "language: java\njdk: [openjdk8, openjdk11]\njobs:\n  exclude:\n    - jdk: openjdk8\n      if: branch = release\n";
    assert_eq!(plan_for(y, &push("m")).jobs.len(), 2);
    assert_eq!(plan_for(y, &push("release")).jobs.len(), 1);
}

#[test]
fn s4_allow_failures_exact_match_and_include_flag() {
    let y = "language: java\njdk: [openjdk8, openjdk11]\njobs:\n  allow_failures:\n    - jdk: openjdk11\n  include:\n    - name: lint\n      allow_failure: true\n  fast_finish: true\n";
    let p = plan_for(y, &push("m"));
    let allowed: Vec<bool> = p.jobs.iter().map(|j| j.allow_failure).collect();
    assert_eq!(allowed, [false, true, true]);
    assert!(p.fast_finish);
    let alias = plan_for("jobs:\n  fast_failure: true\n", &push("m"));
    assert!(alias.fast_finish);
}

#[test]
fn s4_duplicate_jobs_are_dropped() {
    let y = "language: java\njdk: [openjdk8, openjdk8]\n";
    assert_eq!(plan_for(y, &push("m")).jobs.len(), 1);
}

#[test]
fn s4_include_if_drops_the_job() {
    let y =
        "jobs:\n  include:\n    - name: always\n    - name: on-master\n      if: branch = master\n";
    assert_eq!(plan_for(y, &push("master")).jobs.len(), 2);
    let p = plan_for(y, &push("dev"));
    assert_eq!(p.jobs.len(), 1);
    assert!(p.notes.iter().any(|n| n.contains("on-master")));
}

#[test]
fn s4_stages_order_inheritance_and_if() {
    let y = "stages:\n  - name: deploy\n    if: branch = master\n  - test\njobs:\n  include:\n    - stage: test\n      name: t1\n    - name: t2\n    - stage: deploy\n      name: d\n    - stage: Lint\n      name: l\n";
    let p = plan_for(y, &push("master"));
    assert_eq!(p.stages, ["deploy", "test", "Lint"]);
    let order: Vec<(&str, &str)> = p
        .jobs
        .iter()
        .map(|j| (j.stage.as_str(), j.name.as_deref().unwrap()))
        .collect();
    assert_eq!(
        order,
        [
            ("deploy", "d"),
            ("test", "t1"),
            ("test", "t2"),
            ("Lint", "l")
        ]
    );
    assert_eq!(p.jobs[0].number, "7.1");
    let dev = plan_for(y, &push("dev"));
    assert_eq!(
        dev.stages,
        ["test", "Lint"],
        "a stage whose if is false is dropped with its jobs"
    );
    assert_eq!(dev.jobs.len(), 3);
}

// ---- §6 deploy

const DEPLOY: &str = "deploy:\n  provider: s3\n  bucket: b\n";

fn fires(yaml: &str, event: &BuildEvent) -> (bool, String) {
    let p = plan_for(yaml, event);
    let d = &p.jobs[0].deploys[0];
    (d.fires, d.reason.clone())
}

#[test]
fn s6_default_branch_is_the_literal_master() {
    assert!(fires(DEPLOY, &push("master")).0);
    let (f, why) = fires(DEPLOY, &push("main"));
    assert!(!f);
    assert_eq!(why, "this branch is not permitted: main");
}

#[test]
fn s6_on_branch_list_and_string_form() {
    let y = format!("{DEPLOY}  on:\n    branch: [main, release]\n");
    assert!(fires(&y, &push("release")).0);
    assert!(!fires(&y, &push("master")).0);
    let s = format!("{DEPLOY}  on: main\n");
    assert!(fires(&s, &push("main")).0);
}

#[test]
fn s6_tags_and_all_branches() {
    let t = format!("{DEPLOY}  on:\n    tags: true\n");
    assert!(
        fires(&t, &tag("v1")).0,
        "tags: true disables the branch check"
    );
    assert_eq!(
        fires(&t, &push("master")),
        (false, "this is not a tagged commit".into())
    );
    assert!(
        !fires(DEPLOY, &tag("v1")).0,
        "default: branch master, and the tag is not master"
    );
    let all = format!("{DEPLOY}  on:\n    all_branches: true\n");
    assert!(fires(&all, &push("anything")).0);
    let no_tags = format!("{DEPLOY}  on:\n    all_branches: true\n    tags: false\n");
    assert!(!fires(&no_tags, &tag("v1")).0);
}

#[test]
fn s6_repo_condition_and_runtime() {
    let r = format!("{DEPLOY}  on:\n    repo: other/app\n");
    let (f, why) = fires(&r, &push("master"));
    assert!(!f && why.contains("deploy.on.repo"), "{why}");
    let c = format!("{DEPLOY}  on:\n    condition: $X = 1\n");
    let (f, why) = fires(&c, &push("master"));
    assert!(f && why.contains("[[ $X = 1 ]]"), "{why}");
    let jdk =
        format!("language: java\njdk: [openjdk8, openjdk11]\n{DEPLOY}  on:\n    jdk: openjdk11\n");
    let p = plan_for(&jdk, &push("master"));
    let f: Vec<bool> = p.jobs.iter().map(|j| j.deploys[0].fires).collect();
    assert_eq!(f, [false, true]);
}

#[test]
fn s6_never_on_pull_requests() {
    let mut pr = push("master");
    pr.event = EventType::PullRequest;
    pr.pull_request = Some(runway::event::PullRequest {
        number: 3,
        ..Default::default()
    });
    assert_eq!(
        fires(DEPLOY, &pr),
        (false, "the current build is a pull request".into())
    );
}

#[test]
fn s6_deploys_keep_their_order() {
    let y =
        "deploy:\n  - provider: s3\n    bucket: b\n  - provider: codedeploy\n    application: a\n";
    let p = plan_for(y, &push("master"));
    let names: Vec<&str> = p.jobs[0]
        .deploys
        .iter()
        .map(|d| d.provider.as_str())
        .collect();
    assert_eq!(names, ["s3", "codedeploy"]);
}

// ---- §7 email

#[test]
fn s7_default_recipients_are_author_and_committer_and_defaults() {
    let p = plan_for("language: java\n", &push("master"));
    let e = &p.notifications.email;
    assert!(e.enabled);
    assert_eq!(
        e.recipients,
        ["author@example.com", "committer@example.com"]
    );
    assert_eq!(
        (e.on_success, e.on_failure),
        (Frequency::Change, Frequency::Always)
    );
}

#[test]
fn s7_recipient_forms_replace_the_default_list() {
    let single = plan_for("notifications:\n  email: a@x.org\n", &push("m"));
    assert_eq!(single.notifications.email.recipients, ["a@x.org"]);
    let comma = plan_for(
        "notifications:\n  email: \"a@x.org, b@x.org\"\n",
        &push("m"),
    );
    assert_eq!(comma.notifications.email.recipients, ["a@x.org", "b@x.org"]);
    let list = plan_for(
        "notifications:\n  email:\n    - a@x.org\n    - b@x.org\n",
        &push("m"),
    );
    assert_eq!(list.notifications.email.recipients, ["a@x.org", "b@x.org"]);
    let map = plan_for(
        "notifications:\n  email:\n    recipients: [c@x.org]\n    on_success: never\n    on_failure: change\n",
        &push("m"),
    );
    let e = &map.notifications.email;
    assert_eq!(e.recipients, ["c@x.org"]);
    assert_eq!(
        (e.on_success, e.on_failure),
        (Frequency::Never, Frequency::Change)
    );
}

#[test]
fn s7_email_false_and_pull_requests() {
    assert!(
        !plan_for("notifications:\n  email: false\n", &push("m"))
            .notifications
            .email
            .enabled
    );
    let mut pr = push("m");
    pr.event = EventType::PullRequest;
    let e = plan_for("language: java\n", &pr).notifications.email;
    assert!(!e.enabled);
    assert!(e.reason.contains("pull request"));
}

#[test]
fn s7_fallback_to_notifications_level_on_success() {
    let y = "notifications:\n  on_success: always\n  email:\n    - a@x.org\n";
    assert_eq!(
        plan_for(y, &push("m")).notifications.email.on_success,
        Frequency::Always
    );
}

/// §4: "The docs limit a build to 200 jobs." A bigger build is an error that names the
/// place and what multiplied; a matrix of billions is refused before it is expanded,
/// and excludes that bring a large matrix under the limit are honoured.
#[test]
fn s4_a_build_is_limited_to_200_jobs() {
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("v{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let env: String = (0..201).map(|i| format!("  - N={i}\n")).collect();
    let p = plan_for(&format!("language: ruby\nenv:\n{env}"), &push("master"));
    let e = p.error.expect("201 jobs are refused");
    assert_eq!((e.line, e.col), (3, 5), "{}", e.message);
    assert_eq!(
        e.message,
        "the build has 201 jobs (env 201); Travis limits a build to 200 jobs"
    );
    assert!(!p.build.runs && p.jobs.is_empty());

    let huge = format!(
        "language: ruby\nrvm: [{0}]\ngemfile: [{0}]\njdk: [{0}]\nos: [linux, osx]\ndist: [{0}]\ncompiler: [{0}]\n",
        list(40)
    );
    let started = std::time::Instant::now();
    let e = plan_for(&huge, &push("master")).error.expect("refused");
    assert!(
        e.message
            .starts_with("the build has 5120000 jobs (os 2 × compiler 40 × "),
        "{}",
        e.message
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "never expanded"
    );

    let excludes: String = (1..10).map(|i| format!("    - rvm: v{i}\n")).collect();
    let p = plan_for(
        &format!(
            "language: ruby\nrvm: [{0}]\ngemfile: [{0}]\njdk: [{0}]\njobs:\n  exclude:\n{excludes}",
            list(10)
        ),
        &push("master"),
    );
    assert!(p.error.is_none(), "{:?}", p.error);
    assert_eq!(p.jobs.len(), 100);
}

/// issue 16: env items written as maps, as travis-yml reads them
/// (lib/travis/yml/schema/def/env.rb `EnvVar`: a map of names to str/num/bool/secure;
/// lib/travis/yml/doc/change/env_vars.rb: a map is one item; `Env` `prefix :jobs`;
/// spec/travis/yml/accept/env_spec.rb "given a map", "given a seq of maps", "as a map").
#[test]
fn env_items_written_as_maps_are_exported() {
    let jobs = |yaml: &str| -> Vec<Vec<(String, String)>> {
        let loaded = config::load(yaml);
        assert!(
            loaded.diagnostics.iter().all(|d| d.code != "unknown_key"),
            "{yaml}: {:?}",
            loaded.diagnostics
        );
        plan_for(yaml, &push("master"))
            .jobs
            .iter()
            .map(|j| {
                j.env
                    .iter()
                    .map(|e| (e.name.clone(), e.shell_value()))
                    .collect()
            })
            .collect()
    };
    let kv = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    // A map under env is one job's vars.
    assert_eq!(
        jobs("language: shell\nenv:\n  FOO: foo\n  BAR: \"b c\"\n"),
        [kv(&[("FOO", "foo"), ("BAR", "b c")])]
    );
    // A list of maps: one job per map.
    assert_eq!(
        jobs("language: shell\nenv:\n  - FOO: foo\n  - BAR: bar\n"),
        [kv(&[("FOO", "foo")]), kv(&[("BAR", "bar")])]
    );
    // global as a map or a list of maps, jobs (or matrix) as a map or a list.
    assert_eq!(
        jobs("language: shell\nenv:\n  global:\n    G: 1\n  matrix:\n    - X: 1\n    - X: 2\n"),
        [kv(&[("G", "1"), ("X", "1")]), kv(&[("G", "1"), ("X", "2")])]
    );
    assert_eq!(
        jobs(
            "language: shell\nenv:\n  global:\n    - G: 1\n    - H=2\n  jobs:\n    X: 1\n    Y: 2\n"
        ),
        [kv(&[("G", "1"), ("H", "2"), ("X", "1"), ("Y", "2")])]
    );
    // Misplaced keys that are no env var stay unknown (travis-yml keeps the prefixed
    // map only when it validates).
    let d = config::load("language: shell\nenv:\n  include:\n    - A: 1\n").diagnostics;
    assert!(d.iter().any(|d| d.path == "env.include"), "{d:?}");
}
