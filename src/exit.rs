//! The exit codes runway promises (design.md, "The command line").

/// The build passed, or there was nothing to build (branch filtered out); lint found no errors.
pub const PASSED: i32 = 0;
/// The build failed (a script command failed); lint found errors.
pub const FAILED: i32 = 1;
/// A usage error or an invalid configuration.
pub const USAGE: i32 = 2;
/// The build errored: a setup phase, a deploy, or runway itself failed.
pub const ERRORED: i32 = 3;
/// The build was canceled or timed out.
pub const CANCELED: i32 = 4;
