//! docs/semantics.md §9 (validator messages) and the YAML rules of the config issue,
//! pinned on strings: each test is named after the rule it pins.

use runway::config::{self, diag::Level};

fn codes(yaml: &str) -> Vec<(Level, &'static str, String, usize, usize)> {
    config::load(yaml)
        .diagnostics
        .into_iter()
        .map(|d| (d.level, d.code, d.path, d.pos.line, d.pos.col))
        .collect()
}

fn has(yaml: &str, level: Level, code: &str, path: &str) -> (usize, usize) {
    let all = codes(yaml);
    all.iter()
        .find(|(l, c, p, _, _)| *l == level && *c == code && p == path)
        .map(|(_, _, _, line, col)| (*line, *col))
        .unwrap_or_else(|| panic!("no {level} {code} at {path} in {all:#?}"))
}

fn root(yaml: &str) -> config::Config {
    config::load(yaml).config
}

#[test]
fn s9_1_unknown_key_warns_with_position() {
    let pos = has(
        "language: java\nfoo: bar\n",
        Level::Warning,
        "unknown_key",
        "foo",
    );
    assert_eq!(pos, (2, 1));
}

#[test]
fn s9_2_typos_are_repaired_with_did_you_mean() {
    let y = "language: java\nbarnches:\n  only: [master]\nnotifications:\n  email:\n    on_sucess: never\n";
    has(y, Level::Warning, "find_key", "barnches");
    has(
        y,
        Level::Warning,
        "find_key",
        "notifications.email.on_sucess",
    );
    let c = root(y);
    assert!(c.get("branches").is_some(), "barnches is read as branches");
    let msg = config::load(y)
        .diagnostics
        .iter()
        .map(|d| d.message.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(msg.contains("did you mean \"branches\""), "{msg}");
}

#[test]
fn s9_3_hyphenated_keys_are_underscored() {
    let y =
        "before-install: echo hi\ndeploy:\n  provider: codedeploy\n  wait-until-deployed: true\n";
    has(y, Level::Info, "underscore_key", "before_install");
    has(
        y,
        Level::Info,
        "underscore_key",
        "deploy.wait_until_deployed",
    );
    let c = root(y);
    assert_eq!(
        c.get("before_install").unwrap().as_seq().unwrap()[0].as_str(),
        Some("echo hi")
    );
}

#[test]
fn s9_4_aliases_matrix_env_matrix_exclude_fast_failure() {
    let y =
        "matrix:\n  fast_failure: true\nenv:\n  matrix:\n    - A=1\nbranches:\n  exclude: [dev]\n";
    has(y, Level::Info, "alias_key", "jobs");
    has(y, Level::Info, "alias_key", "jobs.fast_finish");
    has(y, Level::Info, "alias_key", "env.jobs");
    has(y, Level::Info, "alias_key", "branches.except");
    let c = root(y);
    assert!(c.get("jobs").unwrap().get("fast_finish").is_some());
    assert!(c.get("env").unwrap().get("jobs").is_some());
    assert!(c.get("branches").unwrap().get("except").is_some());
}

#[test]
fn s9_4_alias_given_with_its_key_is_an_overwrite() {
    let y = "jobs:\n  fast_finish: true\nmatrix:\n  include:\n    - script: x\n";
    has(y, Level::Warning, "overwrite", "jobs");
}

#[test]
fn s9_5_deprecated_keys() {
    let y = "sudo: required\ndeploy:\n  provider: s3\n  bucket: b\n  skip_cleanup: true\n";
    has(y, Level::Warning, "deprecated_key", "sudo");
    has(y, Level::Warning, "deprecated_key", "deploy.skip_cleanup");
}

#[test]
fn s9_6_scalars_become_lists_and_branches_x_means_only() {
    let c = root("script: make\nos: linux\nbranches: master\n");
    assert_eq!(c.get("script").unwrap().as_seq().unwrap().len(), 1);
    assert_eq!(
        c.get("os").unwrap().as_seq().unwrap()[0].as_str(),
        Some("linux")
    );
    let only = c.get("branches").unwrap().get("only").unwrap();
    assert_eq!(only.as_seq().unwrap()[0].as_str(), Some("master"));
}

#[test]
fn s9_6_a_list_for_a_scalar_uses_the_first_value() {
    let y = "language: [java, python]\n";
    has(y, Level::Warning, "unexpected_seq", "language");
    assert_eq!(root(y).language(), "java");
}

#[test]
fn s9_6_a_map_for_a_string_is_dropped_with_an_error() {
    let y = "script:\n  - echo a: b\n";
    has(y, Level::Error, "invalid_type", "script");
}

#[test]
fn s9_7_unknown_values_of_enum_keys_and_downcasing() {
    has("os: windoze\n", Level::Error, "unknown_value", "os");
    // The message lists what a user can write, not Travis's internal test languages.
    let d = config::load("language: kotlin\n").diagnostics;
    let msg = &d
        .iter()
        .find(|d| d.code == "unknown_value")
        .unwrap()
        .message;
    assert!(msg.contains("rust, scala, shell"), "{msg}");
    assert!(!msg.contains("__connie__"), "{msg}");
    has("language: Java\n", Level::Info, "downcase", "language");
    assert_eq!(root("language: jvm\n").language(), "java");
}

#[test]
fn s9_8_invalid_condition_is_an_error() {
    let pos = has(
        "if: branch = $FOO\n",
        Level::Error,
        "invalid_condition",
        "if",
    );
    assert_eq!(pos, (1, 5));
    has(
        "jobs:\n  include:\n    - if: (branch = x\n      script: y\n",
        Level::Error,
        "invalid_condition",
        "jobs.include.if",
    );
}

#[test]
fn s9_9_plain_text_in_a_secret_field() {
    let y = "deploy:\n  provider: s3\n  bucket: b\n  secret_access_key: AKIAIOSFODNN7EXAMPLE\n";
    let pos = has(y, Level::Warning, "secure", "deploy.secret_access_key");
    assert_eq!(pos, (4, 22));
    // A reference to a setting is not plain text.
    let ok = "deploy:\n  provider: s3\n  bucket: b\n  secret_access_key: $AWS_SECRET\n";
    assert!(!codes(ok).iter().any(|c| c.1 == "secure"));
}

#[test]
fn s9_9_invalid_env_var() {
    has(
        "env:\n  - A=\"open\n",
        Level::Error,
        "invalid_env_var",
        "env.jobs",
    );
}

#[test]
fn s9_10_deploy_without_provider_and_unknown_provider() {
    has("deploy:\n  bucket: b\n", Level::Error, "required", "deploy");
    let pos = has(
        "deploy:\n  provider: s4\n",
        Level::Error,
        "unknown_value",
        "deploy.provider",
    );
    assert_eq!(pos, (2, 13));
    let diags = config::load("deploy:\n  provider: s4\n").diagnostics;
    let msg = diags
        .iter()
        .find(|d| d.level == Level::Error)
        .unwrap()
        .render(".travis.yml");
    assert!(
        msg.starts_with(".travis.yml:2:13: error: deploy.provider: unknown provider \"s4\""),
        "{msg}"
    );
}

#[test]
fn s9_10_language_specific_key_unsupported() {
    let y = "language: python\njdk: openjdk8\n";
    has(y, Level::Warning, "unsupported", "jdk");
    assert!(root(y).get("jdk").is_none());
}

#[test]
fn keys_in_the_wrong_place() {
    let y = "deploy:\n  provider: s3\n  bucket: b\n  wait_until_deployed: true\n";
    let d = config::load(y).diagnostics;
    let w = d
        .iter()
        .find(|d| d.code == "wrong_place")
        .expect("wrong_place");
    assert!(
        w.message.contains("s3 provider") && w.message.contains("codedeploy"),
        "{}",
        w.message
    );
    assert_eq!((w.pos.line, w.pos.col), (4, 3));
}

#[test]
fn yaml_on_stays_a_key_and_versions_keep_their_text() {
    let c = root(
        "language: python\npython: 3.10\ndeploy:\n  provider: s3\n  bucket: b\n  on:\n    branch: main\n",
    );
    assert_eq!(
        c.get("python").unwrap().as_seq().unwrap()[0].as_str(),
        Some("3.10")
    );
    let on = c.get("deploy").unwrap().as_seq().unwrap()[0]
        .get("on")
        .unwrap();
    assert!(on.get("branch").is_some());
}

#[test]
fn yaml_duplicate_key_last_wins() {
    let y = "script: a\nscript: b\n";
    has(y, Level::Warning, "duplicate_key", "script");
    assert_eq!(
        root(y).get("script").unwrap().as_seq().unwrap()[0].as_str(),
        Some("b")
    );
}

#[test]
fn yaml_anchors_aliases_merges_tabs_crlf_no_final_newline() {
    let y = "_base: &base\r\n  script: make\r\njobs:\r\n  include:\r\n    - <<: *base\r\n      name: one\r\n    - *base\r\nenv: A=\"x\ty\"";
    let l = config::load(y);
    assert!(!l.has_errors(), "{:#?}", l.diagnostics);
    let inc = l
        .config
        .get("jobs")
        .unwrap()
        .get("include")
        .unwrap()
        .as_seq()
        .unwrap();
    assert_eq!(inc.len(), 2);
    assert!(inc[0].get("script").is_some() && inc[1].get("script").is_some());
}

#[test]
fn bad_yaml_is_an_error_with_a_position_not_a_panic() {
    let l = config::load("script: [a, b\nfoo: : :\n");
    assert!(l.has_errors());
    assert!(l.diagnostics[0].pos.line >= 1);
    let deep = "a: ".to_string() + &"[".repeat(5000);
    assert!(config::load(&deep).has_errors());
    assert!(
        config::load("")
            .diagnostics
            .iter()
            .all(|d| d.level != Level::Error)
    );
    assert!(
        config::load("- a\n- b\n").has_errors(),
        "a list at the top is an error"
    );
}

#[test]
fn on_success_directly_under_notifications_is_explained() {
    let pos = has(
        "notifications:\n  on_success: never\n  email: a@x.org\n",
        Level::Info,
        "misplaced_key",
        "notifications.on_success",
    );
    assert_eq!(pos, (2, 3));
}

/// Issue 10: no recursion a file can drive past the stack of any thread. A server reads
/// configs on tokio's blocking threads (2 MiB stacks): the deepest file runway accepts
/// (64 levels, in every place that is walked recursively) is read and planned on a
/// thread with that stack, in this debug build.
#[test]
fn the_deepest_accepted_file_is_read_and_planned_on_a_2_mib_stack() {
    let nest = |inner: &str, open: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    let files = [
        format!(
            "language: shell\nenv:\n  global: {}\n",
            nest("1", "[", "]", 60)
        ),
        format!(
            "language: shell\ndeploy: {}\n",
            nest("x: 1", "{a: ", "}", 60)
        ),
        format!(
            "language: shell\njobs:\n  include: {}\n",
            nest("{script: true}", "[", "]", 60)
        ),
        format!(
            "language: shell\nif: {}\n",
            nest("branch = master", "(", ")", 64)
        ),
        format!(
            "language: shell\nscript: true\nx: &x {}\ny: [*x, *x, *x]\n",
            nest("1", "[", "]", 60)
        ),
    ];
    let worker = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            for f in &files {
                let loaded = config::load(f);
                let event = runway::event::BuildEvent {
                    branch: Some("master".into()),
                    ..Default::default()
                };
                let _ = runway::plan::plan(&loaded.config, &event, &Default::default());
            }
        })
        .unwrap();
    worker.join().expect("no stack overflow");
}

include!("../fixtures/travis-conditions/facts.rs");

/// issue 16: `if:` as travis-conditions v1 reads it. Every line of the oracle file is
/// what Travis's own parser and evaluator (travis-conditions at c5e8ab1, run by Ruby)
/// said of a condition: its own spec fixtures, every `if:` of the corpus, and a case for
/// each rule. runway must say the same: the same tree, the same value.
#[test]
fn travis_conditions_oracle() {
    use runway::config::condition;
    // The facts Travis's evaluator used for the oracle's values.
    let facts = oracle_facts();
    let table = include_str!("../fixtures/travis-conditions/oracle.tsv");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for line in table.lines().skip_while(|l| !l.contains('\t')) {
        let mut cols = line.rsplitn(3, '\t');
        let (value, parsed, cond) = (
            cols.next().unwrap(),
            cols.next().unwrap(),
            cols.next().unwrap(),
        );
        let (got_parse, got_value) = match condition::parse(cond) {
            Ok(e) => (
                format!("OK {}", e.sexp()),
                match e.eval(&facts) {
                    Ok(b) => b.to_string(),
                    Err(_) => "ERR".into(),
                },
            ),
            Err(_) => ("ERR".into(), "ERR".into()),
        };
        if got_parse != parsed || got_value != value {
            wrong.push(format!(
                "{cond:?}\n  travis: {parsed} → {value}\n  runway: {got_parse} → {got_value}"
            ));
        }
        checked += 1;
    }
    assert!(checked > 2000, "{checked}");
    assert!(
        wrong.is_empty(),
        "{} of {checked} differ:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
}
