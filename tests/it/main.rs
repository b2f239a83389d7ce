//! runway's integration tests, one binary (ripgrep's `tests/tests.rs`): each module
//! drives the real `runway` binary or a real server on loopback; `common` holds the
//! scaffolding they share (temp repositories, the test servers, an HTTP client).
//! One binary links the AWS SDK once instead of ten times: most of CI's build time
//! and disk.

mod common;

mod browser;
mod cli_lint_plan;
mod cli_run;
mod corpus;
mod deploy;
mod doors;
mod hook;
mod notify;
mod rehearse;
mod runtime;
mod sandbox;
mod semantics_lint;
mod semantics_plan;
mod server;
mod signin;
mod trust;
