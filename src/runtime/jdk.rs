//! JDKs: `jdk:` mapped to an installed JDK (`/usr/lib/jvm`, `RUNWAY_JDK_DIRS`); a JDK
//! that is not installed errors the job (Travis installed it; runway says how to).

use std::path::PathBuf;

use super::{Context, Missing, Provider, Ready};
use crate::job::defaults;

/// The installed JDKs.
pub struct Jdk {
    roots: Vec<PathBuf>,
}

impl Jdk {
    /// Looks in `/usr/lib/jvm` and `RUNWAY_JDK_DIRS`.
    pub fn from_machine() -> Jdk {
        Jdk {
            roots: defaults::jdk_roots(),
        }
    }
}

impl Provider for Jdk {
    fn provide(&self, version: &str, _ctx: &Context) -> Result<Ready, Missing> {
        let jdk = version.trim();
        if jdk == "default" {
            return Ok(Ready {
                announce: vec!["java -Xmx32m -version".into()],
                what: "jdk: the machine's default java".into(),
                ..Ready::default()
            });
        }
        match defaults::find_jdk(jdk, &self.roots) {
            Some(home) => Ok(Ready {
                path: vec![home.join("bin")],
                env: vec![
                    ("JAVA_HOME".into(), home.display().to_string()),
                    ("TRAVIS_JDK_VERSION".into(), jdk.to_string()),
                ],
                announce: vec![
                    "java -Xmx32m -version".into(),
                    "javac -J-Xmx32m -version".into(),
                ],
                what: format!("jdk {jdk} ({})", home.display()),
            }),
            None => {
                let found = defaults::installed_jdks(&self.roots);
                let major = defaults::jdk_major(jdk)
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| jdk.to_string());
                Err(Missing {
                    what: format!(
                        "jdk \"{jdk}\" is not installed here (found: {})",
                        if found.is_empty() {
                            "none".into()
                        } else {
                            found.join(", ")
                        }
                    ),
                    how: format!(
                        "install a JDK {major} under /usr/lib/jvm (e.g. apt-get install openjdk-{major}-jdk-headless) or point RUNWAY_JDK_DIRS at one"
                    ),
                })
            }
        }
    }
}
