//! The job lifecycle of docs/semantics.md §1, written as data: one row per phase
//! saying when it runs and what a failing command means. The runner reads only this.

/// The user phases of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `before_install`
    BeforeInstall,
    /// `install`
    Install,
    /// `before_script`
    BeforeScript,
    /// `script`
    Script,
    /// `before_cache`
    BeforeCache,
    /// `after_success`
    AfterSuccess,
    /// `after_failure`
    AfterFailure,
    /// `before_deploy` (run before each firing provider)
    BeforeDeploy,
    /// `after_deploy`
    AfterDeploy,
    /// `after_script`
    AfterScript,
}

/// What a non-zero exit of one command does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// The job is errored and stops at once: no after_* phases, no cache store.
    Stop,
    /// `TRAVIS_TEST_RESULT` becomes 1; later commands still run.
    Record,
    /// Nothing: the result does not change.
    Ignore,
}

/// When a phase runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunsWhen {
    /// Always, if the job got this far.
    Always,
    /// Only if `TRAVIS_TEST_RESULT` is 0.
    IfPassed,
    /// Only if `TRAVIS_TEST_RESULT` is not 0.
    IfFailed,
}

/// One row of the lifecycle table.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// The phase.
    pub phase: Phase,
    /// When it runs.
    pub runs: RunsWhen,
    /// What a failing command does.
    pub on_failure: OnFailure,
    /// Whether each command is folded (`install.1`); script commands are not.
    pub folded: bool,
}

/// The lifecycle, in order (cache store comes after `before_cache`; deploys come
/// after `after_success`, per provider: `before_deploy`, provider, `after_deploy`).
pub const LIFECYCLE: &[Rule] = &[
    row(
        Phase::BeforeInstall,
        RunsWhen::Always,
        OnFailure::Stop,
        true,
    ),
    row(Phase::Install, RunsWhen::Always, OnFailure::Stop, true),
    row(Phase::BeforeScript, RunsWhen::Always, OnFailure::Stop, true),
    row(Phase::Script, RunsWhen::Always, OnFailure::Record, false),
    row(
        Phase::BeforeCache,
        RunsWhen::Always,
        OnFailure::Ignore,
        true,
    ),
    row(
        Phase::AfterSuccess,
        RunsWhen::IfPassed,
        OnFailure::Ignore,
        true,
    ),
    row(
        Phase::BeforeDeploy,
        RunsWhen::IfPassed,
        OnFailure::Stop,
        true,
    ),
    row(
        Phase::AfterDeploy,
        RunsWhen::IfPassed,
        OnFailure::Ignore,
        true,
    ),
    row(
        Phase::AfterFailure,
        RunsWhen::IfFailed,
        OnFailure::Ignore,
        true,
    ),
    row(
        Phase::AfterScript,
        RunsWhen::Always,
        OnFailure::Ignore,
        true,
    ),
];

/// A step of a job once its shell and environment are set up: a phase of
/// [`LIFECYCLE`], or one of runway's own steps between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The phase's commands, when its rule says it runs.
    Phase(Phase),
    /// The cache fetched and unpacked.
    CacheFetch,
    /// The cache packed and stored.
    CacheStore,
    /// `TRAVIS_TEST_RESULT` exported for the phases after `script`.
    TestResult,
    /// Each firing provider: `before_deploy`, the provider, `after_deploy`.
    Deploy,
}

/// A job's steps, in order: the table the job runner walks (travis-build's stages).
pub const STEPS: &[Step] = &[
    Step::CacheFetch,
    Step::Phase(Phase::BeforeInstall),
    Step::Phase(Phase::Install),
    Step::Phase(Phase::BeforeScript),
    Step::Phase(Phase::Script),
    Step::Phase(Phase::BeforeCache),
    Step::CacheStore,
    Step::TestResult,
    Step::Phase(Phase::AfterSuccess),
    Step::Deploy,
    Step::Phase(Phase::AfterFailure),
    Step::Phase(Phase::AfterScript),
];

impl Step {
    /// When the step runs.
    pub fn runs(self) -> RunsWhen {
        match self {
            Step::Phase(p) => rule(p).runs,
            // As `before_deploy`, which opens each deploy.
            Step::Deploy => rule(Phase::BeforeDeploy).runs,
            Step::CacheFetch | Step::CacheStore | Step::TestResult => RunsWhen::Always,
        }
    }
}

const fn row(phase: Phase, runs: RunsWhen, on_failure: OnFailure, folded: bool) -> Rule {
    Rule {
        phase,
        runs,
        on_failure,
        folded,
    }
}

/// The row of a phase.
pub fn rule(phase: Phase) -> Rule {
    *LIFECYCLE
        .iter()
        .find(|r| r.phase == phase)
        .expect("every phase has a row")
}

impl Phase {
    /// Every phase, in the order a job runs them.
    pub const ALL: [Phase; 10] = [
        Phase::BeforeInstall,
        Phase::Install,
        Phase::BeforeScript,
        Phase::Script,
        Phase::BeforeCache,
        Phase::AfterSuccess,
        Phase::AfterFailure,
        Phase::BeforeDeploy,
        Phase::AfterDeploy,
        Phase::AfterScript,
    ];

    /// The `.travis.yml` key.
    pub fn key(self) -> &'static str {
        match self {
            Phase::BeforeInstall => "before_install",
            Phase::Install => "install",
            Phase::BeforeScript => "before_script",
            Phase::Script => "script",
            Phase::BeforeCache => "before_cache",
            Phase::AfterSuccess => "after_success",
            Phase::AfterFailure => "after_failure",
            Phase::BeforeDeploy => "before_deploy",
            Phase::AfterDeploy => "after_deploy",
            Phase::AfterScript => "after_script",
        }
    }
}
