//! A real SMTP server (aiosmtpd, pinned) on a free loopback port that keeps what it
//! receives in a Maildir; stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command};

use super::moto::python;

/// One received message, decoded by Python's email package from the bytes received.
#[derive(Debug, serde::Deserialize)]
pub struct Mail {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A running SMTP server.
pub struct Smtp {
    child: Child,
    dir: tempfile::TempDir,
    /// The port.
    pub port: u16,
}

impl Smtp {
    /// Starts aiosmtpd with extra flags (`--auth u:p`, `--starttls`).
    pub fn start(flags: &[&str]) -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let started = super::spawn_announcing(
            Command::new(python())
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/servers/smtp_server.py"
                ))
                .arg(dir.path().join("maildir"))
                .args(flags),
            "PORT ",
            "aiosmtpd",
        );
        Smtp {
            child: started.child,
            dir,
            port: started.said.parse().unwrap(),
        }
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let maildir: PathBuf = self.dir.path().join("maildir");
        let code = r#"
import json, os, sys
from email import policy
from email.parser import BytesParser
root = sys.argv[1]
files = []
for sub in ("new", "cur"):
    d = os.path.join(root, sub)
    if os.path.isdir(d):
        files += [os.path.join(d, f) for f in os.listdir(d)]
out = []
for path in sorted(files, key=lambda p: (os.path.getmtime(p), os.path.basename(p))):
    with open(path, "rb") as f:
        m = BytesParser(policy=policy.default).parse(f)
    text = m.get_body(("plain",))
    html = m.get_body(("html",))
    out.append({"to": [a.strip() for a in str(m["X-RcptTo"]).split(",")], "subject": str(m["subject"]),
                "text": text.get_content() if text else "", "html": html.get_content() if html else ""})
print(json.dumps(out))
"#;
        if !maildir.join("new").exists() {
            return Vec::new();
        }
        let out = Command::new(python())
            .arg("-c")
            .arg(code)
            .arg(&maildir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
