//! Settings: the values a build is given from outside `.travis.yml` (runway.toml's
//! `[repo.env]`, `--env`, `--env-file`), in the order given, each secret unless it is
//! named public. Secrets are exported to jobs as `[secure]` in the log and masked
//! wherever their values appear ([`Settings::masker`]).

use crate::config::model::EnvVar;
use crate::mask::Masker;

/// One setting.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Setting {
    /// The variable's name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Masked in logs, pages and mails (the default).
    pub secret: bool,
}

/// A build's settings, in the order they are exported.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Settings {
    vars: Vec<Setting>,
}

impl Settings {
    /// Secret settings from these variables, in order.
    pub fn secret(vars: impl IntoIterator<Item = EnvVar>) -> Settings {
        Settings {
            vars: vars
                .into_iter()
                .map(|v| Setting {
                    name: v.name,
                    value: v.value,
                    secret: true,
                })
                .collect(),
        }
    }

    /// Adds secret settings after these.
    pub fn extend(&mut self, more: Settings) {
        self.vars.extend(more.vars);
    }

    /// Makes the settings with these names public (shown, not masked).
    pub fn with_public(mut self, names: &[String]) -> Settings {
        for v in &mut self.vars {
            if names.contains(&v.name) {
                v.secret = false;
            }
        }
        self
    }

    /// Only the settings that are not secret.
    pub fn public_only(mut self) -> Settings {
        self.vars.retain(|v| !v.secret);
        self
    }

    /// Each setting, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Setting> {
        self.vars.iter()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// The settings as variables (for `env()` in conditions and `$VAR` in deploy
    /// options), secret or not.
    pub fn vars(&self) -> Vec<EnvVar> {
        self.vars
            .iter()
            .map(|v| EnvVar {
                name: v.name.clone(),
                value: v.value.clone(),
            })
            .collect()
    }

    /// A masker hiding every secret value.
    pub fn masker(&self) -> Masker {
        Masker::new(
            self.vars
                .iter()
                .filter(|v| v.secret)
                .map(|v| v.value.as_str()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_secret_unless_named_public_and_only_secrets_are_masked() {
        let s = Settings::secret([
            EnvVar {
                name: "TOKEN".into(),
                value: "hunter22".into(),
            },
            EnvVar {
                name: "BUCKET".into(),
                value: "my-bucket".into(),
            },
        ])
        .with_public(&["BUCKET".into()]);
        assert_eq!(
            s.iter().map(|v| v.secret).collect::<Vec<_>>(),
            [true, false]
        );
        assert_eq!(
            s.masker().mask_all("hunter22 my-bucket"),
            "[secure] my-bucket"
        );
        assert_eq!(s.vars()[1].value, "my-bucket");
    }
}
