//! Typed views of a `.travis.yml`: every key runway reads outside `config/`, by name,
//! from the root ([`Config`]), a job's config ([`JobKeys`]), a `deploy:` entry
//! ([`DeployKeys`], [`DeployOn`]) or a `notifications.email` entry ([`EmailEntry`]).
//! The tree is the canonical one `config::load` made (docs/semantics.md §2), so each
//! key has one spelling here; the rest of runway reads methods, not strings.

use super::Config;
use super::diag::Pos;
use super::model::{EnvVar, bool_of, env_list, is_deb_line, items, seq, str_of, strs};
use super::yaml::{Node, Value};

/// `branches:` of the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Branches {
    /// `only`: the branches (or `/regex/`es) built.
    pub only: Vec<String>,
    /// `except`: the branches never built.
    pub except: Vec<String>,
}

/// A stage declared under `stages:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageDecl {
    /// Its name.
    pub name: String,
    /// Its `if:`.
    pub condition: Option<String>,
}

/// `git:` of the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Git {
    /// `depth` (None: the default, or `false` for a full clone).
    pub depth: Option<i32>,
    /// `submodules` (default true).
    pub submodules: bool,
}

impl Config {
    /// `env.global`.
    pub fn global_env(&self) -> Vec<EnvVar> {
        env_list(self.get("env").and_then(|e| e.get("global")))
    }

    /// `env.jobs`: the env axis of the matrix.
    pub fn matrix_env(&self) -> Option<&Node> {
        self.get("env")?.get("jobs")
    }

    /// The node of an expansion key (`env` means `env.jobs`).
    pub fn expansion(&self, key: &str) -> Option<&Node> {
        if key == "env" {
            self.matrix_env()
        } else {
            self.get(key)
        }
    }

    /// `jobs.fast_finish`.
    pub fn fast_finish(&self) -> bool {
        bool_of(self.jobs().and_then(|j| j.get("fast_finish")), false)
    }

    fn jobs(&self) -> Option<&Node> {
        self.get("jobs")
    }

    /// Where `jobs.include` is written (its key).
    pub fn include_pos(&self) -> Option<Pos> {
        self.jobs()
            .and_then(|j| j.as_map())
            .and_then(|m| m.iter().find(|e| e.key == "include"))
            .map(|e| e.key_pos)
    }

    /// `jobs.include`.
    pub fn includes(&self) -> &[Node] {
        seq(self.jobs().and_then(|j| j.get("include")))
    }

    /// `jobs.exclude`.
    pub fn excludes(&self) -> &[Node] {
        seq(self.jobs().and_then(|j| j.get("exclude")))
    }

    /// `jobs.allow_failures`.
    pub fn allow_failures(&self) -> &[Node] {
        seq(self.jobs().and_then(|j| j.get("allow_failures")))
    }

    /// `branches:`, when given.
    pub fn branches(&self) -> Option<Branches> {
        let b = self.get("branches")?;
        Some(Branches {
            only: strs(b.get("only")),
            except: strs(b.get("except")),
        })
    }

    /// The root `if:`.
    pub fn condition(&self) -> Option<&str> {
        str_of(self.get("if"))
    }

    /// `stages:` as declared (entries without a name are left out).
    pub fn stages(&self) -> Vec<StageDecl> {
        seq(self.get("stages"))
            .iter()
            .filter_map(|s| {
                Some(StageDecl {
                    name: str_of(s.get("name"))?.to_string(),
                    condition: condition_of(s).map(str::to_string),
                })
            })
            .collect()
    }

    /// `notifications:`.
    pub fn notifications(&self) -> Notifications<'_> {
        Notifications(self.get("notifications"))
    }

    /// `git:`.
    pub fn git(&self) -> Git {
        let git = self.get("git");
        Git {
            depth: str_of(git.and_then(|g| g.get("depth"))).and_then(|d| d.parse().ok()),
            submodules: bool_of(git.and_then(|g| g.get("submodules")), true),
        }
    }
}

/// The `if:` of a rule (`jobs.exclude`, `jobs.allow_failures`) or a stage.
pub fn condition_of(rule: &Node) -> Option<&str> {
    str_of(rule.get("if"))
}

/// `notifications:` of the root.
#[derive(Clone, Copy, Debug)]
pub struct Notifications<'a>(Option<&'a Node>);

impl<'a> Notifications<'a> {
    /// `notifications.on_success` (every notifier's default).
    pub fn on_success(&self) -> Option<&'a str> {
        str_of(self.0.and_then(|n| n.get("on_success")))
    }

    /// `notifications.on_failure`.
    pub fn on_failure(&self) -> Option<&'a str> {
        str_of(self.0.and_then(|n| n.get("on_failure")))
    }

    /// The entries of `notifications.email` (a list, or one entry).
    pub fn email(&self) -> Vec<EmailEntry<'a>> {
        items(self.0.and_then(|n| n.get("email")))
            .into_iter()
            .map(EmailEntry)
            .collect()
    }
}

/// One entry of `notifications.email`: `false`, an address, or a map.
#[derive(Clone, Copy, Debug)]
pub struct EmailEntry<'a>(pub &'a Node);

impl<'a> EmailEntry<'a> {
    /// The addresses of a map's `recipients`.
    pub fn recipients(&self) -> Vec<&'a str> {
        seq(self.0.get("recipients"))
            .iter()
            .filter_map(|r| r.as_str())
            .collect()
    }

    /// `on_success`.
    pub fn on_success(&self) -> Option<&'a str> {
        str_of(self.0.get("on_success"))
    }

    /// `on_failure`.
    pub fn on_failure(&self) -> Option<&'a str> {
        str_of(self.0.get("on_failure"))
    }

    /// False with `enabled: false` or `disabled: true`.
    pub fn enabled(&self) -> bool {
        bool_of(self.0.get("enabled"), true) && !bool_of(self.0.get("disabled"), false)
    }

    /// `if:`.
    pub fn condition(&self) -> Option<&'a str> {
        condition_of(self.0)
    }
}

/// What `addons.apt` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Apt {
    /// Package names.
    pub packages: Vec<String>,
    /// Package sources to add first.
    pub sources: Vec<AptSource>,
}

/// One entry of `addons.apt.sources`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AptSource {
    /// One of Travis's safelisted aliases (`ubuntu-toolchain-r-test`): Ubuntu archives
    /// runway cannot map onto this machine.
    Alias(String),
    /// A `deb …` line, with the URL of its signing key.
    Line {
        /// `deb [trusted=yes] http://… ./`
        line: String,
        /// Where the key is (`key_url`).
        key_url: Option<String>,
    },
}

impl AptSource {
    /// As written, for messages.
    pub fn name(&self) -> &str {
        match self {
            AptSource::Alias(a) => a,
            AptSource::Line { line, .. } => line,
        }
    }
}

/// A job's `cache:`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheKeys {
    /// `cache: false`.
    pub off: bool,
    /// `npm:` (None when not given).
    pub npm: Option<bool>,
    /// `directories:`.
    pub directories: Vec<String>,
    /// `timeout:`, seconds.
    pub timeout: Option<u64>,
    /// The named caches turned on (`pip: true`, `[bundler, pip]`).
    pub named: Vec<String>,
}

/// A job's config (a root key or a matrix value, merged), by name.
#[derive(Clone, Copy, Debug)]
pub struct JobKeys<'a>(pub &'a Node);

impl<'a> JobKeys<'a> {
    fn text(&self, key: &str) -> Option<&'a str> {
        str_of(self.0.get(key))
    }

    /// `language` as written.
    pub fn language(&self) -> Option<&'a str> {
        self.text("language")
    }

    /// `os` as written (a job's matrix value wins where one exists).
    pub fn os(&self) -> Option<&'a str> {
        self.text("os")
    }

    /// `dist`.
    pub fn dist(&self) -> Option<&'a str> {
        self.text("dist")
    }

    /// `npm_args`.
    pub fn npm_args(&self) -> Option<&'a str> {
        self.text("npm_args")
    }

    /// `services`.
    pub fn services(&self) -> Vec<String> {
        strs(self.0.get("services"))
    }

    /// `before_deploy`.
    pub fn before_deploy(&self) -> Vec<String> {
        strs(self.0.get("before_deploy"))
    }

    /// `after_deploy`.
    pub fn after_deploy(&self) -> Vec<String> {
        strs(self.0.get("after_deploy"))
    }

    /// `cache:`, when given.
    pub fn cache(&self) -> Option<CacheKeys> {
        let c = self.0.get("cache")?;
        let mut keys = CacheKeys {
            off: matches!(c.value, Value::Scalar(_)) && c.as_bool() == Some(false),
            npm: c.get("npm").map(|n| bool_of(Some(n), true)),
            ..CacheKeys::default()
        };
        match &c.value {
            Value::Map(entries) => {
                for e in entries {
                    match e.key.as_str() {
                        "directories" => keys.directories.extend(strs(Some(&e.value))),
                        "timeout" => {
                            keys.timeout = str_of(Some(&e.value)).and_then(|t| t.parse().ok())
                        }
                        "edge" | "branch" => {}
                        name if bool_of(Some(&e.value), false) => keys.named.push(name.to_string()),
                        _ => {}
                    }
                }
            }
            Value::Seq(items) => keys
                .named
                .extend(items.iter().filter_map(|i| i.as_str().map(str::to_string))),
            _ => {}
        }
        Some(keys)
    }

    /// The names of the `addons` other than `apt` (runway provides only apt).
    pub fn other_addons(&self) -> Vec<&'a str> {
        self.0
            .get("addons")
            .and_then(|a| a.as_map())
            .unwrap_or_default()
            .iter()
            .filter(|e| e.key != "apt")
            .map(|e| e.key.as_str())
            .collect()
    }

    /// `addons.apt`: `apt: {packages: [...], sources: [...]}`, `apt: {packages: x}` or
    /// `apt: [pkgs]`.
    pub fn apt(&self) -> Apt {
        let Some(apt) = self.0.get("addons").and_then(|a| a.get("apt")) else {
            return Apt::default();
        };
        if apt.get("packages").is_none() && apt.get("sources").is_none() {
            return Apt {
                packages: strs(Some(apt)),
                sources: Vec::new(),
            };
        }
        let sources = seq(apt.get("sources"))
            .iter()
            .filter_map(|s| {
                let line = |l: &str, key: Option<&str>| AptSource::Line {
                    line: l.to_string(),
                    key_url: key.map(str::to_string),
                };
                if let Some(l) = str_of(s.get("sourceline")) {
                    return Some(line(l, str_of(s.get("key_url"))));
                }
                // A plain entry (normalised to `name:`): a deb line or an alias.
                let text = str_of(Some(s)).or_else(|| str_of(s.get("name")))?;
                Some(if is_deb_line(text) {
                    line(text, str_of(s.get("key_url")))
                } else {
                    AptSource::Alias(text.to_string())
                })
            })
            .collect();
        Apt {
            packages: strs(apt.get("packages")),
            sources,
        }
    }
}

/// One `deploy:` entry, by name.
#[derive(Clone, Copy, Debug)]
pub struct DeployKeys<'a>(pub &'a Node);

impl<'a> DeployKeys<'a> {
    fn text(&self, key: &str) -> Option<&'a str> {
        str_of(self.0.get(key))
    }

    /// `provider`.
    pub fn provider(&self) -> Option<&'a str> {
        self.text("provider")
    }

    /// `on:`.
    pub fn on(&self) -> DeployOn<'a> {
        DeployOn(self.0.get("on"))
    }

    /// `allow_failure`.
    pub fn allow_failure(&self) -> bool {
        bool_of(self.0.get("allow_failure"), false)
    }

    /// Whether the work tree is cleaned first: `cleanup: true`, or dpl v1's
    /// `skip_cleanup: false` (default: not cleaned).
    pub fn cleanup(&self) -> bool {
        self.0
            .get("cleanup")
            .map(|c| bool_of(Some(c), false))
            .or_else(|| self.0.get("skip_cleanup").map(|c| !bool_of(Some(c), true)))
            .unwrap_or(false)
    }

    /// `run`: commands after the deploy (heroku's, run on any provider here).
    pub fn run(&self) -> Vec<String> {
        strs(self.0.get("run"))
    }

    /// `key` (codedeploy's and s3's object key), as written.
    pub fn key(&self) -> Option<&'a str> {
        self.text("key")
    }

    /// `application` (codedeploy), as written.
    pub fn application(&self) -> Option<&'a str> {
        self.text("application")
    }

    /// `deployment_group` (codedeploy), as written.
    pub fn deployment_group(&self) -> Option<&'a str> {
        self.text("deployment_group")
    }

    /// True when `bucket` is given.
    pub fn has_bucket(&self) -> bool {
        self.0.get("bucket").is_some()
    }

    /// `wait_until_deployed` (codedeploy).
    pub fn wait_until_deployed(&self) -> bool {
        bool_of(self.0.get("wait_until_deployed"), false)
    }

    /// `dot_match` (s3).
    pub fn dot_match(&self) -> bool {
        bool_of(self.0.get("dot_match"), false)
    }
}

/// A deploy's `on:` conditions.
#[derive(Clone, Copy, Debug)]
pub struct DeployOn<'a>(Option<&'a Node>);

impl<'a> DeployOn<'a> {
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.0.and_then(|o| o.get(key))
    }

    /// `tags` (None when not given).
    pub fn tags(&self) -> Option<bool> {
        self.get("tags").map(|t| bool_of(Some(t), false))
    }

    /// `all_branches`.
    pub fn all_branches(&self) -> bool {
        bool_of(self.get("all_branches"), false)
    }

    /// `branch`: the branches deployed.
    pub fn branches(&self) -> Vec<String> {
        strs(self.get("branch"))
    }

    /// `repo`.
    pub fn repo(&self) -> Option<&'a str> {
        str_of(self.get("repo"))
    }

    /// `condition`: shell tests run in the job.
    pub fn conditions(&self) -> Vec<String> {
        strs(self.get("condition"))
    }

    /// The runtime the deploy requires (`on: {jdk: openjdk8}`): its first value.
    pub fn runtime(&self, key: &str) -> Option<String> {
        let want = self.get(key)?;
        Some(
            strs(Some(want))
                .into_iter()
                .next()
                .or_else(|| str_of(Some(want)).map(str::to_string))
                .unwrap_or_default(),
        )
    }
}

/// A job's runtime value as the matrix holds it: the first of a list.
pub fn first_value(node: &Node) -> Option<&str> {
    match &node.value {
        Value::Seq(items) => items.first().and_then(|i| i.as_str()),
        _ => node.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(yaml: &str) -> Config {
        crate::config::load_bytes(yaml.as_bytes()).config
    }

    #[test]
    fn views_read_the_keys_they_name() {
        let c = job(
            "language: python\ndist: jammy\nservices: [redis]\naddons:\n  apt:\n    packages: [zsh]\n    sources:\n      - sourceline: 'deb http://x ./'\n        key_url: http://k\n  chrome: stable\nbefore_deploy: make\ngit:\n  depth: 3\n  submodules: false\nbranches:\n  only: [main]\njobs:\n  fast_finish: true\n  exclude:\n    - python: '3.8'\n      if: branch = x\nnotifications:\n  on_success: never\n  email:\n    recipients: [a@example.com]\n    enabled: false\n",
        );
        let j = JobKeys(&c.root);
        assert_eq!(j.dist(), Some("jammy"));
        assert_eq!(j.services(), ["redis"]);
        assert_eq!(j.apt().packages, ["zsh"]);
        assert_eq!(
            j.apt().sources,
            [AptSource::Line {
                line: "deb http://x ./".into(),
                key_url: Some("http://k".into())
            }]
        );
        assert_eq!(j.other_addons(), ["chrome"]);
        assert_eq!(j.before_deploy(), ["make"]);
        assert_eq!(
            c.git(),
            Git {
                depth: Some(3),
                submodules: false
            }
        );
        assert_eq!(c.branches().unwrap().only, ["main"]);
        assert!(c.fast_finish());
        assert_eq!(condition_of(&c.excludes()[0]), Some("branch = x"));
        let n = c.notifications();
        assert_eq!(n.on_success(), Some("never"));
        let e = n.email();
        assert_eq!(e[0].recipients(), ["a@example.com"]);
        assert!(!e[0].enabled());
    }

    #[test]
    fn deploy_views_read_on_and_cleanup_in_both_spellings() {
        let c = job(
            "deploy:\n  provider: s3\n  skip_cleanup: false\n  on:\n    tags: true\n    condition: $X = 1\n    jdk: openjdk8\n",
        );
        let d = c.get("deploy").and_then(|d| d.as_seq()).map(|s| &s[0]);
        let d = DeployKeys(d.unwrap_or(&c.root));
        assert_eq!(d.provider(), Some("s3"));
        assert!(d.cleanup());
        assert_eq!(d.on().tags(), Some(true));
        assert_eq!(d.on().conditions(), ["$X = 1"]);
        assert_eq!(d.on().runtime("jdk").as_deref(), Some("openjdk8"));
        assert_eq!(d.on().runtime("python"), None);
    }
}
