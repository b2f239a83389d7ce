//! runway: a self-hosted CI runner that speaks `.travis.yml`.
//!
//! A tour of the layout, in the order a build flows through it:
//! - [`config`]: `.travis.yml` text → normalised config + diagnostics (pure);
//! - [`event`]: what triggered a build (branch or tag, event type, commit);
//! - [`plan`]: does the build run, which jobs, which deploys fire, who gets mail (pure);
//! - [`source`]: git: the current branch, HEAD's message, files at a commit;
//! - [`exit`]: the documented exit codes.
pub mod cmd;
pub mod config;
pub mod event;
pub mod exit;
pub mod plan;
pub mod source;
