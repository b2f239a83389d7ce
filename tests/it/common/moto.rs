//! A real moto server (S3 + CodeDeploy) on a free loopback port, started from the
//! pinned venv that scripts/test.sh installs, and stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command};

/// The Python with the pinned test servers.
pub fn python() -> PathBuf {
    let p = std::env::var_os("RUNWAY_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/target/pyenv/bin/python"
            ))
        });
    assert!(
        p.exists(),
        "the test servers are not installed: run `bash scripts/test.sh` (it installs moto[server]==5.2.5 into target/pyenv)"
    );
    p
}

/// A running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
}

impl Moto {
    /// Starts the harness (tests/servers/moto_server.py) on a free port.
    pub fn start() -> Moto {
        let started = super::spawn_announcing(
            Command::new(python())
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/servers/moto_server.py"
                ))
                .arg("0"),
            "PORT ",
            "moto",
        );
        Moto {
            child: started.child,
            url: format!("http://127.0.0.1:{}", started.said),
        }
    }

    /// Runs a boto3 snippet against this server; `s3` and `cd` clients (region
    /// `region`) are in scope; whatever it prints is returned.
    pub fn py(&self, region: &str, code: &str) -> String {
        let prelude = format!(
            "import boto3, json\nkw=dict(endpoint_url='{}', aws_access_key_id='testing', aws_secret_access_key='testing', region_name='{region}')\ns3=boto3.client('s3', **kw)\ncd=boto3.client('codedeploy', **kw)\n",
            self.url
        );
        let out = Command::new(python())
            .arg("-c")
            .arg(format!("{prelude}{code}"))
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "boto3 snippet failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Creates a bucket.
    pub fn bucket(&self, region: &str, name: &str) {
        let cfg = if region == "us-east-1" {
            String::new()
        } else {
            format!(", CreateBucketConfiguration={{'LocationConstraint':'{region}'}}")
        };
        self.py(region, &format!("s3.create_bucket(Bucket='{name}'{cfg})"));
    }

    /// Creates a CodeDeploy application with one deployment group.
    pub fn application(&self, region: &str, app: &str, group: &str) {
        self.py(
            region,
            &format!("cd.create_application(applicationName='{app}')\ncd.create_deployment_group(applicationName='{app}', deploymentGroupName='{group}', serviceRoleArn='arn:aws:iam::123456789012:role/cd')"),
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
