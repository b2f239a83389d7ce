//! Deploys for real (docs/semantics.md §6, §6a, §6b) against a real moto server on
//! loopback: the seed pipeline end to end, s3 options, and the faults a user meets.

use crate::common::moto::Moto;
use crate::common::{Run, run, runway};
use std::path::Path;

const REGION: &str = "ap-northeast-2";

/// Runs `runway run --deploy` on a directory with `files`, credentials as settings.
fn deploy(moto_url: &str, files: &[(&str, &str)], extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    run_in(dir.path(), moto_url, extra)
}

fn run_in(dir: &Path, moto_url: &str, extra: &[&str]) -> Run {
    let mut c = runway();
    c.arg("run")
        .arg(dir)
        .args(["--branch", "master", "--deploy"]);
    c.arg("--cache-dir")
        .arg(dir.join("../runway-deploy-test-cache"));
    c.args([
        "--env",
        "AWS_ACCESS_KEY=AKIAIOSFODNN7TESTING",
        "--env",
        "AWS_SECRET_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYTESTKEY",
    ]);
    c.arg("--env").arg(format!("AWS_ENDPOINT_URL={moto_url}"));
    c.env("RUNWAY_CODEDEPLOY_POLL", "0.1");
    c.args(extra);
    run(&mut c)
}

const CREDS: &str = "    access_key_id: $AWS_ACCESS_KEY\n    secret_access_key: $AWS_SECRET_KEY\n";

#[test]
fn s6_seed_pipeline_build_zip_upload_deploy_and_wait() {
    let moto = Moto::start();
    moto.bucket(REGION, "seed-bucket");
    moto.application(REGION, "seed-app", "seed-group");
    let yml = format!(
        "language: shell\nscript: echo build > app.jar\nbefore_deploy:\n  - mkdir -p staging deploy\n  - cp app.jar appspec.yml staging/\n  - (cd staging && zip -qr ../deploy/seed.zip .)\ndeploy:\n  - provider: s3\n{CREDS}    bucket: seed-bucket\n    region: {REGION}\n    local_dir: deploy\n    acl: private\n  - provider: codedeploy\n{CREDS}    bucket: seed-bucket\n    key: seed.zip\n    bundle_type: zip\n    application: seed-app\n    deployment_group: seed-group\n    region: {REGION}\n    wait_until_deployed: true\n"
    );
    let r = deploy(
        &moto.url,
        &[
            (".travis.yml", &yml),
            ("appspec.yml", "version: 0.0\nos: linux\n"),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("uploaded seed.zip ("), "{}", r.all());
    assert!(r.stdout.contains("s3: 1 file(s) uploaded"), "{}", r.all());
    assert!(r.stdout.contains("Deployment triggered: "), "{}", r.all());
    assert!(r.stdout.contains(": Succeeded"), "{}", r.all());
    for secret in ["AKIAIOSFODNN7TESTING", "wJalrXUtnFEMI"] {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "credentials leaked: {}",
            r.all()
        );
    }
    let head = moto.py(REGION, "h=s3.head_object(Bucket='seed-bucket', Key='seed.zip'); print(h['ContentType'], h['CacheControl'])");
    assert_eq!(head, "application/zip no-cache");
    let acl = moto.py(REGION, "a=s3.get_object_acl(Bucket='seed-bucket', Key='seed.zip'); print(sorted(g['Permission'] for g in a['Grants']))");
    assert_eq!(acl, "['FULL_CONTROL']", "private: only the owner");
    let rev = moto.py(
        REGION,
        "ds=cd.list_deployments(applicationName='seed-app', deploymentGroupName='seed-group')['deployments']\nd=cd.get_deployment(deploymentId=ds[0])['deploymentInfo']\nr=d['revision']['s3Location']\nprint(len(ds), d['status'], r['bucket'], r['key'], r['bundleType'], d['description'])",
    );
    assert_eq!(
        rev,
        "1 Succeeded seed-bucket seed.zip zip Deploy build 1 via runway"
    );
}

#[test]
fn s6a_s3_options_acl_types_cache_control_upload_dir_glob_dot_match_website() {
    let moto = Moto::start();
    moto.bucket("us-east-1", "site-bucket");
    let yml = format!(
        "language: shell\nscript: 'true'\ndeploy:\n  - provider: s3\n{CREDS}    bucket: site-bucket\n    local_dir: public\n    upload_dir: v1\n    glob: \"**/*.{{html,css,js}}\"\n    acl: public_read\n    default_text_charset: utf-8\n    cache_control:\n      - \"max-age=31536000: *.css,*.js\"\n      - \"no-store: *.html\"\n    index_document_suffix: index.html\n    storage_class: STANDARD_IA\n"
    );
    let r = deploy(
        &moto.url,
        &[
            (".travis.yml", &yml),
            ("public/index.html", "<h1>hi</h1>"),
            ("public/css/site.css", "body{}"),
            ("public/js/app.js", "x()"),
            ("public/notes.txt", "not in the glob"),
            ("public/.hidden.html", "dotfile"),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let keys = moto.py(
        "us-east-1",
        "print(sorted(o['Key'] for o in s3.list_objects_v2(Bucket='site-bucket')['Contents']))",
    );
    assert_eq!(keys, "['v1/css/site.css', 'v1/index.html', 'v1/js/app.js']");
    let h = moto.py("us-east-1", "h=s3.head_object(Bucket='site-bucket', Key='v1/index.html'); print(h['ContentType'], '|', h['CacheControl'], '|', h.get('StorageClass'))");
    assert_eq!(h, "text/html; charset=utf-8 | no-store | STANDARD_IA");
    let h = moto.py("us-east-1", "h=s3.head_object(Bucket='site-bucket', Key='v1/css/site.css'); print(h['ContentType'], '|', h['CacheControl'])");
    assert_eq!(h, "text/css; charset=utf-8 | max-age=31536000");
    let acl = moto.py("us-east-1", "a=s3.get_object_acl(Bucket='site-bucket', Key='v1/js/app.js'); print(sorted((g['Grantee'].get('URI','owner').split('/')[-1], g['Permission']) for g in a['Grants']))");
    assert!(acl.contains("('AllUsers', 'READ')"), "{acl}");
    let site = moto.py(
        "us-east-1",
        "print(s3.get_bucket_website(Bucket='site-bucket')['IndexDocument']['Suffix'])",
    );
    assert_eq!(site, "index.html");
}

#[test]
fn s6a_overwrite_false_skips_existing_and_large_files_go_multipart() {
    let moto = Moto::start();
    moto.bucket("us-east-1", "big-bucket");
    moto.py(
        "us-east-1",
        "s3.put_object(Bucket='big-bucket', Key='keep.txt', Body=b'remote')",
    );
    let yml = format!(
        "language: shell\nscript: head -c 20000000 /dev/urandom > out/big.bin\nbefore_script: mkdir -p out && echo local > out/keep.txt\ndeploy:\n  - provider: s3\n{CREDS}    bucket: big-bucket\n    local_dir: out\n    overwrite: false\n"
    );
    let r = deploy(&moto.url, &[(".travis.yml", &yml)], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("skipped keep.txt"), "{}", r.all());
    assert_eq!(
        moto.py(
            "us-east-1",
            "print(s3.get_object(Bucket='big-bucket', Key='keep.txt')['Body'].read().decode())"
        ),
        "remote"
    );
    let etag = moto.py("us-east-1", "h=s3.head_object(Bucket='big-bucket', Key='big.bin'); print(h['ETag'], h['ContentLength'])");
    assert!(
        etag.contains("-3\"") && etag.ends_with("20000000"),
        "multipart upload expected: {etag}"
    );
}

#[test]
fn faults_say_what_to_fix_and_error_the_job() {
    let moto = Moto::start();
    moto.bucket("us-east-1", "present-bucket");
    moto.application("us-east-1", "real-app", "real-group");
    let cases: Vec<(String, &str)> = vec![
        (
            format!("deploy:\n  - provider: s3\n{CREDS}    bucket: missing-bucket\n"),
            "the bucket missing-bucket does not exist",
        ),
        (
            format!("deploy:\n  - provider: s3\n{CREDS}    bucket: denied-bucket\n"),
            "access denied writing s3://denied-bucket/",
        ),
        (
            format!(
                "deploy:\n  - provider: codedeploy\n{CREDS}    bucket: present-bucket\n    key: nothing.zip\n    application: real-app\n    deployment_group: real-group\n"
            ),
            "the bundle s3://present-bucket/nothing.zip does not exist: upload it first",
        ),
        (
            format!(
                "deploy:\n  - provider: codedeploy\n{CREDS}    revision_type: github\n    application: no-such-app\n    deployment_group: g\n"
            ),
            "the CodeDeploy application \"no-such-app\" does not exist",
        ),
        (
            format!(
                "deploy:\n  - provider: codedeploy\n{CREDS}    revision_type: github\n    application: real-app\n    deployment_group: no-group\n"
            ),
            "the deployment group \"no-group\" does not exist",
        ),
        (
            format!(
                "deploy:\n  - provider: codedeploy\n{CREDS}    revision_type: github\n    application: denied-app\n    deployment_group: g\n"
            ),
            "access denied: give these credentials codedeploy:CreateDeployment",
        ),
        (
            format!(
                "deploy:\n  - provider: codedeploy\n{CREDS}    revision_type: github\n    application: real-app\n    deployment_group: real-group\n    description: this will FAIL\n    wait_until_deployed: true\n"
            ),
            "lifecycle event ValidateService failed: Script at specified location: health.sh",
        ),
    ];
    for (deploy_yml, message) in cases {
        let yml =
            format!("language: shell\nscript: 'true'\nbefore_deploy: echo x > x.txt\n{deploy_yml}");
        let r = deploy(&moto.url, &[(".travis.yml", &yml)], &[]);
        assert_eq!(r.code, 3, "{message}: {}", r.all());
        assert!(
            r.stdout.contains(message),
            "expected \"{message}\": {}",
            r.all()
        );
        assert!(
            r.stdout.contains("Failed to deploy with the"),
            "{}",
            r.all()
        );
    }
}

#[test]
fn server_down_is_errored_with_a_clear_message_and_allow_failure_keeps_the_job() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let yml = format!(
        "language: shell\nscript: 'true'\ndeploy:\n  - provider: s3\n{CREDS}    bucket: b-bucket\n"
    );
    let r = deploy(&url, &[(".travis.yml", &yml), ("f.txt", "x")], &[]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("could not reach S3"), "{}", r.all());
    let allowed = format!("{yml}    allow_failure: true\n");
    let r = deploy(&url, &[(".travis.yml", &allowed), ("f.txt", "x")], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("allow_failure: true; the job goes on"),
        "{}",
        r.all()
    );
}

#[test]
fn s6_skip_reasons_and_dry_run_without_deploy() {
    let moto = Moto::start();
    let yml = format!(
        "language: shell\nscript: 'true'\ndeploy:\n  - provider: s3\n{CREDS}    bucket: x-bucket\n    on:\n      branch: release\n  - provider: s3\n{CREDS}    bucket: y-bucket\n    on:\n      condition: $DEPLOY_NOW = yes\n"
    );
    let r = deploy(&moto.url, &[(".travis.yml", &yml)], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Skipping a deployment with the s3 provider because this branch is not permitted: master"), "{}", r.all());
    assert!(
        r.stdout.contains(
            "Skipping a deployment with the s3 provider because a custom condition was not met"
        ),
        "{}",
        r.all()
    );
    // Without --deploy nothing is uploaded: only what would happen.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".travis.yml"), format!("language: shell\nscript: 'true'\ndeploy:\n  - provider: s3\n{CREDS}    bucket: z-bucket\n")).unwrap();
    std::fs::write(dir.path().join("a.html"), "<p>").unwrap();
    let r = run(runway().arg("run").arg(dir.path()).args([
        "--branch",
        "master",
        "--cache-dir",
        dir.path().join("../c-dry").to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("would upload a.html (3 bytes, text/html) to s3://z-bucket/a.html"),
        "{}",
        r.all()
    );
    // issue 14: no "Skipping after_deploy" line when there is no after_deploy.
    assert!(!r.stdout.contains("Skipping after_deploy"), "{}", r.all());
}

#[test]
fn s6b_versioned_bundle_is_registered_and_s6a_encoding_expiry_encryption() {
    let moto = Moto::start();
    moto.bucket(REGION, "versioned-bucket");
    moto.py(REGION, "s3.put_bucket_versioning(Bucket='versioned-bucket', VersioningConfiguration={'Status':'Enabled'})");
    moto.application(REGION, "v-app", "v-group");
    let yml = format!(
        "language: shell\nscript: 'true'\nbefore_deploy:\n  - mkdir -p out && echo '{{}}' > out/app.json && gzip -c out/app.json > out/app.json.gz && rm out/app.json\n  - (cd out && tar -czf ../bundle.tgz app.json.gz)\n  - mv bundle.tgz out/\ndeploy:\n  - provider: s3\n{CREDS}    bucket: versioned-bucket\n    region: {REGION}\n    local_dir: out\n    detect_encoding: true\n    server_side_encryption: true\n    expires: \"2031-02-03 04:05:06 UTC: *.gz\"\n  - provider: codedeploy\n{CREDS}    bucket: versioned-bucket\n    key: bundle.tgz\n    application: v-app\n    deployment_group: v-group\n    region: {REGION}\n    file_exists_behavior: overwrite\n"
    );
    let r = deploy(&moto.url, &[(".travis.yml", &yml)], &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("registered the revision with application v-app"),
        "{}",
        r.all()
    );
    let h = moto.py(REGION, "h=s3.head_object(Bucket='versioned-bucket', Key='app.json.gz'); print(h.get('ContentEncoding'), h.get('ServerSideEncryption'), h['Expires'].year if 'Expires' in h else h.get('ExpiresString'))");
    assert_eq!(h, "gzip AES256 2031");
    let revs: serde_json::Value = serde_json::from_str(&moto.py(REGION, &format!("import urllib.request; print(urllib.request.urlopen('{}/_runway/revisions').read().decode())", moto.url))).unwrap();
    assert_eq!(
        revs[0]["revision"]["s3Location"]["bundleType"], "tgz",
        "{revs}"
    );
    assert!(
        revs[0]["revision"]["s3Location"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{revs}"
    );
    let d = moto.py(REGION, "ds=cd.list_deployments(applicationName='v-app', deploymentGroupName='v-group')['deployments']\nprint(cd.get_deployment(deploymentId=ds[0])['deploymentInfo']['fileExistsBehavior'])");
    assert_eq!(d, "OVERWRITE");
}

#[test]
fn a_deploy_option_whose_variable_is_unset_names_the_option_and_the_variable() {
    // Issue 10: `access_key_id: $AWS_ACCESS_KEY` with the variable unset fell through to
    // the SDK's instance-metadata chain ("failed to load IMDS session token"), three times.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".travis.yml"),
        "language: shell\nscript: true\ndeploy:\n  provider: s3\n    \n  access_key_id: $MISSING_AWS_KEY\n  secret_access_key: $ALSO_MISSING\n  bucket: b\n  region: ap-northeast-2\n  endpoint: http://127.0.0.1:9\n"
            .replace("    \n", ""),
    )
    .unwrap();
    let mut c = runway();
    c.arg("run")
        .arg(dir.path())
        .args(["--branch", "master", "--deploy"])
        .arg("--cache-dir")
        .arg(dir.path().join("../runway-unset-var-cache"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let r = run(&mut c);
    assert_eq!(r.code, 3, "{}", r.all());
    let said = "deploy option access_key_id is empty: it is \"$MISSING_AWS_KEY\" and MISSING_AWS_KEY is not set in the job's environment";
    let failed: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("Failed to deploy with the s3 provider: "))
        .collect();
    assert_eq!(failed.len(), 1, "{}", r.all());
    assert!(failed[0].contains(said), "{}", r.all());
    assert!(!r.all().contains("IMDS"), "{}", r.all());
}
