//! A compiled job on the wire: what a serve node planned, in wire types of its own, so
//! a worker runs exactly the job the build page shows without reading `.travis.yml`
//! or planning. The job's merged config travels as a flat list of tokens (pre-order),
//! so its nesting costs no JSON nesting; reading it back is bounded in depth.

use serde::{Deserialize, Serialize};

use crate::build::CompiledJob;
use crate::config::diag::Pos;
use crate::config::model::EnvVar;
use crate::config::yaml::{Entry, MAX_DEPTH, Node, Scalar, Value};
use crate::event::{BuildEvent, EventType, Person};
use crate::plan::{DeployPlan, JobPlan};
use crate::workspace::GitOptions;

/// One job, planned, as the serve node sends it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// `BUILD.N`.
    pub number: String,
    /// `name:`.
    pub name: Option<String>,
    /// Its stage.
    pub stage: String,
    /// The expansion values that define it.
    pub matrix: Vec<(String, String)>,
    /// Its env vars (`NAME`, value as written), global ones first.
    pub env: Vec<(String, String)>,
    /// It may fail without failing the build.
    pub allow_failure: bool,
    /// Its deploys, in order.
    pub deploys: Vec<Deploy>,
    /// Its merged config.
    pub config: Vec<Token>,
    /// What triggered its build.
    pub event: Event,
    /// Its build's number.
    pub build_number: u64,
    /// The build's root `language:`.
    pub language: String,
    /// `git.depth`.
    pub git_depth: Option<i32>,
    /// `git.submodules`.
    pub git_submodules: bool,
    /// Its time limit, in milliseconds.
    pub timeout_ms: u64,
    /// Its limit without output, in milliseconds.
    pub no_output_timeout_ms: u64,
}

/// One deploy of the job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deploy {
    /// `s3`, `codedeploy`, …
    pub provider: String,
    /// It runs after a passing script.
    pub fires: bool,
    /// Why it fires or not.
    pub reason: String,
    /// Its options.
    pub config: Vec<Token>,
}

/// The trigger of the job's build.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// `owner/repo`.
    pub repo: String,
    /// The branch (the base, for a pull request).
    pub branch: Option<String>,
    /// The tag.
    pub tag: Option<String>,
    /// `push`, `pull_request`, `api`, `cron`.
    pub event: String,
    /// The commit.
    pub commit: String,
    /// Its message.
    pub commit_message: String,
    /// `TRAVIS_COMMIT_RANGE`.
    pub commit_range: String,
    /// Its author: name and email.
    pub author: Option<(String, String)>,
    /// Its committer: name and email.
    pub committer: Option<(String, String)>,
    /// The pull request: its number and head.
    pub pull_request: Option<crate::event::PullRequest>,
    /// The repository's default branch.
    pub default_branch: String,
}

/// One token of a config tree, in pre-order: a sequence's or a mapping's items follow
/// it; each mapping value is preceded by its `Key`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Token {
    /// `null`, at line and column.
    Null(usize, usize),
    /// A plain scalar.
    Plain(usize, usize, String),
    /// A quoted or block scalar.
    Quoted(usize, usize, String),
    /// A sequence of this many items.
    Seq(usize, usize, usize),
    /// A mapping of this many entries.
    Map(usize, usize, usize),
    /// A mapping's key.
    Key(usize, usize, String),
}

impl Job {
    /// The wire form of `c`.
    pub fn of(c: &CompiledJob) -> Job {
        let j = &c.job;
        let e = &c.event;
        let person = |p: &Option<Person>| p.as_ref().map(|p| (p.name.clone(), p.email.clone()));
        Job {
            number: j.number.clone(),
            name: j.name.clone(),
            stage: j.stage.clone(),
            matrix: j.matrix.clone(),
            env: j
                .env
                .iter()
                .map(|v| (v.name.clone(), v.value.clone()))
                .collect(),
            allow_failure: j.allow_failure,
            deploys: j
                .deploys
                .iter()
                .map(|d| Deploy {
                    provider: d.provider.clone(),
                    fires: d.fires,
                    reason: d.reason.clone(),
                    config: tokens(&d.config),
                })
                .collect(),
            config: tokens(&j.config),
            event: Event {
                repo: e.repo.clone(),
                branch: e.branch.clone(),
                tag: e.tag.clone(),
                event: e.event.as_str().to_string(),
                commit: e.commit.clone(),
                commit_message: e.commit_message.clone(),
                commit_range: e.commit_range.clone(),
                author: person(&e.author),
                committer: person(&e.committer),
                pull_request: e.pull_request.clone(),
                default_branch: e.default_branch.clone(),
            },
            build_number: c.build_number,
            language: c.language.clone(),
            git_depth: c.git.depth,
            git_submodules: c.git.submodules,
            timeout_ms: c.timeout.as_millis() as u64,
            no_output_timeout_ms: c.no_output_timeout.as_millis() as u64,
        }
    }

    /// The job to run, or what is wrong with what was sent.
    pub fn compiled(&self) -> Result<CompiledJob, String> {
        let e = &self.event;
        let person = |p: &Option<(String, String)>| {
            p.as_ref().map(|(name, email)| Person {
                name: name.clone(),
                email: email.clone(),
            })
        };
        let deploys = self
            .deploys
            .iter()
            .map(|d| {
                Ok(DeployPlan {
                    provider: d.provider.clone(),
                    fires: d.fires,
                    reason: d.reason.clone(),
                    config: tree(&d.config)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(CompiledJob {
            job: JobPlan {
                number: self.number.clone(),
                name: self.name.clone(),
                stage: self.stage.clone(),
                matrix: self.matrix.clone(),
                env: self
                    .env
                    .iter()
                    .map(|(name, value)| EnvVar {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                allow_failure: self.allow_failure,
                deploys,
                config: tree(&self.config)?,
            },
            event: BuildEvent {
                repo: e.repo.clone(),
                branch: e.branch.clone(),
                tag: e.tag.clone(),
                event: e.event.parse::<EventType>()?,
                commit: e.commit.clone(),
                commit_message: e.commit_message.clone(),
                commit_range: e.commit_range.clone(),
                author: person(&e.author),
                committer: person(&e.committer),
                pull_request: e.pull_request.clone(),
                default_branch: e.default_branch.clone(),
            },
            build_number: self.build_number,
            language: self.language.clone(),
            git: GitOptions {
                depth: self.git_depth,
                submodules: self.git_submodules,
            },
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            no_output_timeout: std::time::Duration::from_millis(self.no_output_timeout_ms),
        })
    }
}

/// `node` as tokens, in pre-order.
pub fn tokens(node: &Node) -> Vec<Token> {
    let mut out = Vec::new();
    push(node, &mut out);
    out
}

fn push(node: &Node, out: &mut Vec<Token>) {
    let Pos { line, col } = node.pos;
    match &node.value {
        Value::Null => out.push(Token::Null(line, col)),
        Value::Scalar(s) if s.quoted => out.push(Token::Quoted(line, col, s.text.clone())),
        Value::Scalar(s) => out.push(Token::Plain(line, col, s.text.clone())),
        Value::Seq(items) => {
            out.push(Token::Seq(line, col, items.len()));
            for i in items {
                push(i, out);
            }
        }
        Value::Map(entries) => {
            out.push(Token::Map(line, col, entries.len()));
            for e in entries {
                out.push(Token::Key(e.key_pos.line, e.key_pos.col, e.key.clone()));
                push(&e.value, out);
            }
        }
    }
}

/// The tree `tokens` spell: all of them, nested no deeper than the parser allows.
pub fn tree(tokens: &[Token]) -> Result<Node, String> {
    let mut rest = tokens.iter();
    let node = pull(&mut rest, 0)?;
    match rest.next() {
        None => Ok(node),
        Some(t) => Err(format!("the job's config has a token past its end: {t:?}")),
    }
}

fn pull(rest: &mut std::slice::Iter<'_, Token>, depth: usize) -> Result<Node, String> {
    if depth > 2 * MAX_DEPTH + 2 {
        return Err(format!(
            "the job's config nests deeper than {MAX_DEPTH} levels"
        ));
    }
    let at = |line, col| Pos { line, col };
    let scalar = |text: &str, quoted| {
        Value::Scalar(Scalar {
            text: text.to_string(),
            quoted,
        })
    };
    let Some(t) = rest.next() else {
        return Err("the job's config ends early".into());
    };
    let (pos, value) = match t {
        Token::Null(l, c) => (at(*l, *c), Value::Null),
        Token::Plain(l, c, s) => (at(*l, *c), scalar(s, false)),
        Token::Quoted(l, c, s) => (at(*l, *c), scalar(s, true)),
        Token::Seq(l, c, n) => {
            let mut items = Vec::with_capacity((*n).min(rest.len()));
            for _ in 0..*n {
                items.push(pull(rest, depth + 1)?);
            }
            (at(*l, *c), Value::Seq(items))
        }
        Token::Map(l, c, n) => {
            let mut entries = Vec::with_capacity((*n).min(rest.len()));
            for _ in 0..*n {
                let Some(Token::Key(kl, kc, key)) = rest.next() else {
                    return Err("the job's config has a mapping value without its key".into());
                };
                entries.push(Entry {
                    key: key.clone(),
                    key_pos: at(*kl, *kc),
                    value: pull(rest, depth + 1)?,
                });
            }
            (at(*l, *c), Value::Map(entries))
        }
        Token::Key(..) => return Err("the job's config has a key where a value belongs".into()),
    };
    Ok(Node { pos, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_goes_over_the_wire_and_back_whole() {
        let text = "language: python\npython: [\"3.12\", 3.11]\nenv:\n  global:\n    - A=1\nscript:\n  - 'echo hi'\n  - |\n    make\ndeploy: ~\n";
        let mut diags = crate::config::diag::Diagnostics::default();
        let node = crate::config::yaml::parse(text, &mut diags).unwrap();
        let back = tree(&tokens(&node)).unwrap();
        assert_eq!(back, node);
        let json = serde_json::to_string(&tokens(&node)).unwrap();
        let read: Vec<Token> = serde_json::from_str(&json).unwrap();
        assert_eq!(tree(&read).unwrap(), node);
    }

    #[test]
    fn a_tree_nested_past_the_limit_or_cut_short_is_refused() {
        let deep: Vec<Token> = (0..1000)
            .map(|_| Token::Seq(1, 1, 1))
            .chain([Token::Null(1, 1)])
            .collect();
        assert!(tree(&deep).unwrap_err().contains("deeper than"));
        assert!(
            tree(&[Token::Seq(1, 1, 2), Token::Null(1, 1)])
                .unwrap_err()
                .contains("ends early")
        );
        assert!(
            tree(&[Token::Map(1, 1, 1), Token::Null(1, 1)])
                .unwrap_err()
                .contains("without its key")
        );
        assert!(
            tree(&[Token::Null(1, 1), Token::Null(1, 1)])
                .unwrap_err()
                .contains("past its end")
        );
    }
}
