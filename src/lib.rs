//! runway: a self-hosted CI runner that speaks `.travis.yml`.
//!
//! A tour of the layout, in the order a build flows through it:
//! - [`config`]: `.travis.yml` text → normalised config + diagnostics (pure);
//! - [`event`]: what triggered a build (branch or tag, event type, commit);
//! - [`plan`]: does the build run, which jobs, which deploys fire, who gets mail (pure);
//! - [`source`]: git: the current branch, HEAD's message, files at a commit;
//! - [`workspace`]: a job's fresh checkout, `$HOME` and scratch space;
//! - [`sandbox`]: the throwaway copy of the machine each job's shell runs in;
//! - [`runtime`]: the language versions, os and arch a job asks for, or what is missing;
//! - [`job`]: one job in one persistent shell, with Travis's phase rules;
//! - [`build`]: the jobs of a plan, stage by stage, and the build result;
//! - [`relay`]: the output of jobs running side by side, whole per job and live;
//! - [`cache`]: directory caches (tar + zstd) and their store;
//! - [`deploy`]: deploy providers and the dry run;
//! - [`appspec`]: `appspec.yml` as the CodeDeploy agent reads it;
//! - [`store`]: build history (SQLite);
//! - [`notify`]: email: when, what, and SMTP;
//! - [`server`]: `runway serve`: webhooks, the durable queue, workers, web pages;
//! - [`runway_toml`]: the server's (and the hook's) `runway.toml`;
//! - [`cmd`]: the commands behind the command line;
//! - [`exit`]: the documented exit codes;
//! - [`mask`]: secrets replaced by `[secure]` in every form scripts print them;
//! - [`limits`]: Travis's limits (job time, silence, log size, jobs per build);
//! - [`interrupt`]: Ctrl-C and friends for builds run in the foreground.
pub mod appspec;
pub mod build;
pub mod cache;
pub mod cmd;
pub mod config;
pub mod deploy;
pub mod event;
pub mod exit;
pub mod interrupt;
pub mod job;
pub mod limits;
pub mod mask;
pub mod notify;
pub mod plan;
pub mod relay;
pub mod runtime;
pub mod runway_toml;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod settings;
pub mod source;
pub mod store;
pub mod workspace;
