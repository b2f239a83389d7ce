//! Who may do what, and what secrets reach (issue 24): tried as an attacker holding a
//! little would, through the real binary.

use crate::common::{run, runway};

/// Decoded text of every part of a mail (quoted-printable and base64 undone), by
/// Python's own email parser.
fn mail_text(eml: &std::path::Path) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import email,sys\nm=email.message_from_binary_file(open(sys.argv[1],'rb'))\n\
             for p in m.walk():\n  b=p.get_payload(decode=True)\n  \
             sys.stdout.write(b.decode('utf-8','replace') if b else '')\n",
        )
        .arg(eml)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Secrets printed as bash's `printf %q` writes them (`\,`, `\'` after non-ASCII,
/// `$'…'`) are masked in the log and in the mail, whatever the mail's encoding.
#[test]
fn secrets_printed_with_printf_q_are_masked_in_the_log_and_the_mail() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("app");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join(".travis.yml"),
        "language: shell\nnotifications:\n  email: dev@example.com\nscript:\n\
         \x20 - printf 'a=%q\\n' \"$A\"; printf 'b=%q\\n' \"$B\"; printf 'c=%q\\n' \"$C\"; printf 'd=%q\\n' \"$D\"\n\
         \x20 - echo \"token=$B\"; false\n",
    )
    .unwrap();
    let mut c = runway();
    c.arg("run").arg(&repo).args(["--branch", "master"]);
    c.args([
        "--env",
        "A=pass,word9",
        "--env",
        "B=hunter2,secret",
        "--env",
        "C=café'babe42",
        "--env",
        "D=multi\tline'x9",
    ]);
    c.arg("--mail-dir").arg(dir.path().join("mail"));
    c.arg("--cache-dir").arg(dir.path().join("cache"));
    c.env("RUNWAY_STATE_DIR", dir.path().join("state"));
    let r = run(&mut c);
    assert_eq!(r.code, runway::exit::FAILED, "{}", r.all());
    for said in [
        "a=[secure]",
        "b=[secure]",
        "c=[secure]",
        "d=[secure]",
        "token=[secure]",
    ] {
        assert!(r.stdout.contains(said), "{said}: {}", r.all());
    }
    let mail = mail_text(&dir.path().join("mail/build-1.eml"));
    assert!(mail.contains("token=[secure]"), "{mail}");
    for piece in ["word9", "hunter2", "babe42", "line'x9", "line\\'x9"] {
        assert!(!r.all().contains(piece), "{piece} in the log: {}", r.all());
        assert!(!mail.contains(piece), "{piece} in the mail: {mail}");
    }
}
