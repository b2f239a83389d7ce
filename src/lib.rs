//! runway: a self-hosted CI runner that speaks `.travis.yml`.
//!
//! A tour of the layout, in the order a build flows through it:
//! - [`cmd`]: the commands behind the command line: they parse, call and render;
//! - [`service`]: the build service every trigger calls (the CLI, the hook, the
//!   server's workers): a request in, events out through a reporter, the exit code back;
//! - [`config`]: `.travis.yml` text → normalised config + diagnostics (pure), and its
//!   typed views ([`config::views`]);
//! - [`event`]: what triggered a build (branch or tag, event type, commit);
//! - [`events`]: what happens in a build, as data, rendered for people and programs;
//! - [`options`]: the one options value of a build, shared by every layer;
//! - [`settings`]: repository settings, secret unless named public;
//! - [`plan`]: does the build run, which jobs, which deploys fire, who gets mail (pure);
//! - [`source`]: git: the current branch, HEAD's message, files at a commit;
//! - [`workspace`]: a job's fresh checkout, `$HOME` and scratch space;
//! - [`sandbox`]: the throwaway copy of the machine each job's shell runs in;
//! - [`runtime`]: the language versions, os and arch a job asks for, or what is missing;
//! - [`build`]: the jobs of a plan, stage by stage, and the build result;
//! - [`relay`]: the output of jobs running side by side, whole per job and live;
//! - [`job`]: one job in one persistent shell, its steps walked from a table;
//! - [`process`]: the persistent shell, process groups and orphans, bash quoting;
//! - [`inside`]: a job's files (caches, bundles) handled inside its sandbox;
//! - [`cache`]: directory caches (tar + zstd) and their store;
//! - [`deploy`]: deploy providers behind a trait, the dry run, the rehearsal;
//! - [`appspec`]: `appspec.yml` as the CodeDeploy agent reads it;
//! - [`store`]: build history, the queue and the workers' tasks (SQLite or PostgreSQL);
//! - [`notify`]: email: facts, text and SMTP;
//! - [`cancel`]: a build's cancel switch, which wakes whatever waits on the build;
//! - [`auth`]: sign-in (OpenID Connect), roles per repository, tokens of people's own;
//! - [`server`]: `runway serve`: webhooks, the durable queue, workers, web pages;
//! - [`agent`]: `runway worker`: an agent on another machine running the jobs a serve
//!   node compiled;
//! - [`protocol`]: what agents and serve nodes say to each other, versioned;
//! - [`runway_toml`]: the server's (and the hook's) `runway.toml`;
//! - [`exit`]: the documented exit codes;
//! - [`clock`]: time as runway stores and shows it;
//! - [`files`]: walking a directory tree (caches, uploads, bundles);
//! - [`mask`]: secrets replaced by `[secure]` in every form scripts print them;
//! - [`limits`]: Travis's limits (job time, silence, log size, jobs per build);
//! - [`interrupt`]: Ctrl-C and friends for builds run in the foreground;
//! - [`behind`]: what a one-shot run's finished jobs held, torn down after it exits.
//! - [`http`]: outgoing HTTP clients (ureq agents that resolve no IP address).
//! - [`lane`]: a thread kept to run work handed to it, one piece after another.
//! - [`spare`]: files made and removed once a job or a build, their inodes kept for the next.
pub(crate) mod agent;
pub(crate) mod appspec;
pub(crate) mod auth;
pub(crate) mod behind;
pub(crate) mod beneath;
pub mod build;
pub mod cache;
pub(crate) mod cancel;
pub(crate) mod clock;
pub mod cmd;
pub mod config;
pub(crate) mod deploy;
pub mod event;
pub(crate) mod events;
pub mod exit;
pub(crate) mod files;
pub(crate) mod forge;
pub(crate) mod http;
pub mod inside;
pub(crate) mod interrupt;
pub(crate) mod job;
pub(crate) mod lane;
pub(crate) mod limits;
pub(crate) mod mask;
pub(crate) mod notify;
pub(crate) mod options;
pub mod plan;
pub mod process;
pub(crate) mod protocol;
pub(crate) mod relay;
pub mod runtime;
pub(crate) mod runway_toml;
pub mod sandbox;
pub mod server;
pub(crate) mod service;
pub(crate) mod settings;
pub(crate) mod source;
pub(crate) mod spare;
pub mod store;
pub mod workspace;

/// An error with its sources, for connection failures.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(&format!(": {s}"));
        src = s.source();
    }
    out
}
