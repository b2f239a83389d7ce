//! `runway hook install GIT_DIR` and `runway hook run`: builds on `git push` into a
//! (bare) repository, with the build's live output shown to the pusher, as Dokku shows
//! a deploy. Every updated branch or tag (not a deletion) gets a build of the pushed
//! commit with its commit range; the build is recorded, deploys for real and mails.

use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::run;
use super::{CmdError, RefArgs};
use crate::event::EventType;
use crate::exit;
use crate::runway_toml::{RepoConfig, ServerConfig};
use crate::service::{self, Controls, MailOptions, Options, Record, Request, TextReporter};
use crate::store::{self, NewBuild, Store};

/// `runway hook`: its subcommand.
#[derive(clap::Args)]
pub struct HookArgs {
    /// Install or run.
    #[command(subcommand)]
    pub action: HookAction,
}

/// `install` or `run`.
#[derive(clap::Subcommand)]
pub enum HookAction {
    /// Write hooks/post-receive into a (bare) repository.
    Install {
        /// The repository (its .git directory, or a bare repository).
        git_dir: PathBuf,
        /// Replace a post-receive hook runway did not write.
        #[arg(long)]
        force: bool,
        /// How it builds.
        #[command(flatten)]
        flags: HookFlags,
    },
    /// The post-receive entry point: reads "old new ref" lines on stdin.
    Run {
        /// The repository (default: $GIT_DIR, as git sets it for hooks).
        #[arg(long)]
        git_dir: Option<PathBuf>,
        /// How it builds.
        #[command(flatten)]
        flags: HookFlags,
    },
}

/// How the hook builds (the same flags for `install` and `run`).
#[derive(clap::Args)]
pub struct HookFlags {
    /// Repository settings (secret) for its builds, from a dotenv file.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Queue builds and return at once; `runway serve` runs them.
    #[arg(long)]
    pub detach: bool,
    /// The repository's name (owner/repo) as runway.toml knows it.
    #[arg(long)]
    pub repo: Option<String>,
    /// runway.toml: the repository's entry (by --repo, or by its url = this path)
    /// gives its name, settings, `detach = true` and the mail server.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where jobs run: `namespaces` or `none` (the bare host); runway.toml's
    /// `sandbox` when --config is given and this is not.
    #[arg(long, value_enum)]
    pub sandbox: Option<crate::sandbox::Mode>,
}

impl From<HookFlags> for HookOptions {
    fn from(f: HookFlags) -> Self {
        HookOptions {
            env_file: f.env_file,
            detach: f.detach,
            repo: f.repo,
            config: f.config,
            sandbox: f.sandbox,
            cancel: None,
        }
    }
}

/// Runs `runway hook …`.
pub fn command(args: HookArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, CmdError> {
    match args.action {
        HookAction::Install {
            git_dir,
            force,
            flags,
        } => install(&git_dir, &flags.into(), force, out),
        HookAction::Run { git_dir, flags } => {
            let dir = git_dir
                .or_else(|| std::env::var_os("GIT_DIR").map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from("."));
            let opts = HookOptions {
                cancel: Some(crate::interrupt::cancel_on_signals()),
                ..flags.into()
            };
            run_hook(&dir, &opts, &mut std::io::stdin().lock(), out, err)
        }
    }
}

/// Marks hooks runway wrote, so a foreign hook is never overwritten silently.
const MARKER: &str = "# installed by runway";

/// How the hook builds.
#[derive(Clone, Debug, Default)]
pub struct HookOptions {
    /// Settings for the builds (a dotenv file).
    pub env_file: Option<PathBuf>,
    /// Queue the build and return at once; `runway serve` runs it.
    pub detach: bool,
    /// The repository's name (`owner/repo`) as runway.toml knows it.
    pub repo: Option<String>,
    /// runway.toml: the repository's entry gives its name, settings, `detach`, and the
    /// mail server. Read at every push, so a change needs no reinstall.
    pub config: Option<PathBuf>,
    /// `--sandbox` (else runway.toml's `sandbox`, else namespaces).
    pub sandbox: Option<crate::sandbox::Mode>,
    /// Set to cancel the builds (the pusher pressed Ctrl-C).
    pub cancel: Option<crate::cancel::Cancel>,
}

/// The repository's entry in runway.toml (`--config`), found by `--repo` or by its path.
fn configured(
    git_dir: &Path,
    opts: &HookOptions,
) -> Result<Option<(ServerConfig, RepoConfig)>, CmdError> {
    let Some(path) = &opts.config else {
        return Ok(None);
    };
    let cfg = ServerConfig::load(path).map_err(CmdError::Usage)?;
    // A named database that is not set would build into this machine's own store.
    cfg.database_url()
        .map_err(|e| CmdError::Usage(format!("{}: {e}", path.display())))?;
    let repo = match &opts.repo {
        Some(name) => cfg.repo(name),
        None => cfg.repo_at(git_dir),
    };
    let Some(repo) = repo.cloned() else {
        let wanted = match &opts.repo {
            Some(name) => format!("name = \"{name}\""),
            None => format!("url = \"{}\"", git_dir.display()),
        };
        return Err(CmdError::Usage(format!(
            "{}: no [[repo]] has {wanted}",
            path.display()
        )));
    };
    Ok(Some((cfg, repo)))
}

/// Writes `GIT_DIR/hooks/post-receive` calling this runway binary.
pub fn install(
    git_dir: &Path,
    opts: &HookOptions,
    force: bool,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let env_file = opts.env_file.as_deref();
    let git_dir = git_dir
        .canonicalize()
        .map_err(|e| CmdError::Usage(format!("{}: {e}", git_dir.display())))?;
    let repo = git2::Repository::open(&git_dir).map_err(|e| {
        CmdError::Usage(format!(
            "{} is not a git repository: {}",
            git_dir.display(),
            e.message()
        ))
    })?;
    let hooks = repo.path().join("hooks");
    std::fs::create_dir_all(&hooks)?;
    let hook = hooks.join("post-receive");
    if let Ok(existing) = std::fs::read_to_string(&hook)
        && !existing.contains(MARKER)
        && !force
    {
        return Err(CmdError::Usage(format!(
            "{} exists and was not written by runway; move it away or use --force",
            hook.display()
        )));
    }
    let exe = std::env::current_exe()?;
    // The options both the hook's `hook run` and a reinstall take.
    let mut options = String::new();
    if let Some(f) = env_file {
        let f = f
            .canonicalize()
            .map_err(|e| CmdError::Usage(format!("{}: {e}", f.display())))?;
        options.push_str(&format!(
            " --env-file {}",
            crate::process::quote(&f.to_string_lossy())
        ));
    }
    if opts.detach {
        options.push_str(" --detach");
    }
    if let Some(r) = &opts.repo {
        options.push_str(&format!(" --repo {}", crate::process::quote(r)));
    }
    if opts.sandbox == Some(crate::sandbox::Mode::None) {
        options.push_str(" --sandbox none");
    }
    if let Some(config) = &opts.config {
        let config = config
            .canonicalize()
            .map_err(|e| CmdError::Usage(format!("{}: {e}", config.display())))?;
        // Checked now, so a mistake shows at install rather than at the first push.
        let opts = HookOptions {
            config: Some(config.clone()),
            ..opts.clone()
        };
        configured(&git_dir, &opts)?;
        options.push_str(&format!(
            " --config {}",
            crate::process::quote(&config.to_string_lossy())
        ));
    }
    let git_dir_q = crate::process::quote(&git_dir.to_string_lossy());
    let cmd = format!("exec \"$runway\" hook run --git-dir {git_dir_q}{options}");
    // The hook names the binary it was installed with; when that is gone (a `cargo
    // clean`, a moved checkout) the pusher is told, with the commands that mend it,
    // rather than the push building nothing in silence.
    let reinstall = format!("runway hook install {git_dir_q}{options}");
    let missing = format!(
        "if [ ! -x \"$runway\" ]; then\n  echo \"runway: nothing was built: the hook's runway binary is gone ($runway).\" >&2\n  cat >&2 <<'RUNWAY'\nrunway: install it on PATH (in a runway checkout: cargo install --locked --path .), then:\nrunway:   {reinstall}\nRUNWAY\n  exit 0\nfi"
    );
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n{MARKER}: every push builds with its .travis.yml\nrunway={}\n{missing}\n{cmd}\n",
            crate::process::quote(&exe.to_string_lossy())
        ),
    )?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    writeln!(out, "installed {}", hook.display())?;
    Ok(exit::PASSED)
}

/// Queues every pushed branch or tag and says where to follow it.
fn detach(
    git_dir: &Path,
    name: Option<String>,
    database_url: Option<String>,
    text: &str,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let repo = crate::source::Repo::open(git_dir)
        .ok_or_else(|| CmdError::Usage(format!("{} is not a git repository", git_dir.display())))?;
    let name = name.unwrap_or_else(|| repo.slug());
    // The store the server reads: runway.toml's PostgreSQL, else the embedded one.
    let mut st = Store::connect(&store::default_dir(), database_url.as_deref())?;
    for u in parse_updates(text) {
        if zero(&u.new) {
            continue;
        }
        let (branch, tag) = match (
            u.refname.strip_prefix("refs/heads/"),
            u.refname.strip_prefix("refs/tags/"),
        ) {
            (Some(b), _) => (Some(b.to_string()), None),
            (None, Some(t)) => (None, Some(t.to_string())),
            _ => continue,
        };
        let message = repo.commit(&u.new).map(|c| c.message).unwrap_or_default();
        let row = st.enqueue(&NewBuild {
            repo: name.clone(),
            branch,
            tag,
            commit: u.new.clone(),
            event: "push".into(),
            message,
            commit_range: crate::event::commit_range(&u.old, &u.new),
            pull_request: None,
            request: None,
            delivered_as: Vec::new(),
        })?;
        let url = std::env::var("RUNWAY_PUBLIC_URL")
            .map(|u| {
                format!(
                    ", or {}",
                    crate::notify::build_url(&u, &row.repo, row.number)
                )
            })
            .unwrap_or_default();
        writeln!(
            out,
            "runway: build #{} of {name} ({}) queued; runway serve runs it. Follow it: runway log -f {}{url}",
            row.number, u.refname, row.number
        )?;
    }
    Ok(exit::PASSED)
}

/// One line of post-receive input: `old new ref`.
#[derive(Debug, PartialEq, Eq)]
pub struct Update {
    /// The old sha (all zeros for a new ref).
    pub old: String,
    /// The new sha (all zeros for a deletion).
    pub new: String,
    /// `refs/heads/x` or `refs/tags/x`.
    pub refname: String,
}

fn zero(sha: &str) -> bool {
    sha.chars().all(|c| c == '0')
}

/// Parses post-receive input.
pub fn parse_updates(input: &str) -> Vec<Update> {
    input
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some(Update {
                old: parts.next()?.to_string(),
                new: parts.next()?.to_string(),
                refname: parts.next()?.to_string(),
            })
        })
        .collect()
}

/// The build service's request for one pushed ref: the env file's and the
/// repository's settings, runway.toml's sandbox (or `--sandbox`), deploys and mail for
/// real, recorded.
fn request(
    git_dir: &Path,
    refs: RefArgs,
    opts: &HookOptions,
    configured: Option<&(ServerConfig, RepoConfig)>,
) -> Result<Request, CmdError> {
    let mut settings = run::settings_from(opts.env_file.as_deref(), &[])?;
    let mut public = Vec::new();
    if let Some((_, r)) = &configured {
        settings.extend(r.settings());
        public = r.public.clone();
    }
    let mut sandbox = configured
        .as_ref()
        .map(|(c, r)| c.sandbox_args(Some(r)))
        .unwrap_or_default();
    if let Some(m) = opts.sandbox {
        sandbox.mode = m;
    }
    sandbox.hide.extend(opts.env_file.clone());
    Ok(Request {
        path: git_dir.to_path_buf(),
        refs,
        settings: settings.with_public(&public),
        options: Options {
            deploy: true,
            substitutes: configured.as_ref().is_some_and(|(c, _)| c.substitutes),
            sandbox,
            ..Options::default()
        },
        mail: MailOptions {
            send: true,
            smtp: configured.as_ref().and_then(|(c, r)| c.smtp_for(&r.name)),
            public_url: configured.as_ref().and_then(|(c, _)| c.public_url.clone()),
            ..MailOptions::default()
        },
        record: Record::New,
        state_dir: store::default_dir(),
        database_url: configured.and_then(|(c, _)| c.database_url().ok().flatten()),
        controls: Controls {
            cancel: opts.cancel.clone(),
            ..Controls::default()
        },
    })
}

/// The post-receive entry point: builds every updated branch or tag read from `input`.
/// Returns the worst exit code of the builds.
pub fn run_hook(
    git_dir: &Path,
    opts: &HookOptions,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, CmdError> {
    let mut text = String::new();
    input.read_to_string(&mut text)?;
    let configured = configured(git_dir, opts)?;
    let name = configured
        .as_ref()
        .map(|(_, r)| r.name.clone())
        .or_else(|| opts.repo.clone());
    if opts.detach || configured.as_ref().is_some_and(|(_, r)| r.detach) {
        let url = configured
            .as_ref()
            .and_then(|(c, _)| c.database_url().ok().flatten());
        return detach(git_dir, name, url, &text, out);
    }
    let mut worst = exit::PASSED;
    for u in parse_updates(&text) {
        if zero(&u.new) {
            continue; // a deletion builds nothing
        }
        let (branch, tag) = if let Some(b) = u.refname.strip_prefix("refs/heads/") {
            (Some(b.to_string()), None)
        } else if let Some(t) = u.refname.strip_prefix("refs/tags/") {
            (None, Some(t.to_string()))
        } else {
            continue;
        };
        let refs = RefArgs {
            branch,
            tag,
            event: EventType::Push,
            commit_message: None,
            commit: Some(u.new.clone()),
            commit_range: Some(crate::event::commit_range(&u.old, &u.new)),
            repo_slug: name.clone(),
            default_branch: configured
                .as_ref()
                .and_then(|(_, r)| r.default_branch.clone()),
            pull_request: None,
            request: None,
        };
        let request = request(git_dir, refs, opts, configured.as_ref())?;
        // The pusher reads this as `remote:` lines: folds and timers rendered for
        // people, not Travis's raw markers (half of all lines).
        let out: crate::build::SharedOut = std::sync::Arc::new(std::sync::Mutex::new(Box::new(
            crate::job::log::Readable::new(std::io::stdout()),
        )));
        let result =
            service::run(&request, &mut TextReporter::new(out, err)).map_err(CmdError::from);
        let code = match result {
            Ok(c) => c,
            Err(e) => {
                writeln!(err, "runway: {}: {e}", u.refname)?;
                e.code()
            }
        };
        worst = worst.max(code);
    }
    Ok(worst)
}
