//! The embedded backend: SQLite at `$RUNWAY_STATE_DIR/runway.db`, for one machine.
//!
//! For measuring what a build costs the store: with `RUNWAY_TRACE_SQL=FILE` in its
//! environment, a process appends each statement it runs (all but BEGIN, COMMIT and the
//! pragmas) to FILE, one line each (its process id, a tab, the statement's text; never
//! its arguments). `scripts/statements-per-build.py FILE` counts them per build. The
//! tests read the same trace to check that what a build asks finds its rows through an
//! index (`store::tests::a_builds_store_work_does_not_read_the_history`).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::tasks::Value;
use super::{Backend, BuildRow, JobRow, NewBuild, Status, StoreError, now};

/// What an intake looks up among a line of builds (a repository's branch, tag or pull
/// request): the previous build of it, and the older ones still waiting that a new one
/// cancels. By the line's every column, so that a branch's first build or a pull
/// request's does not read every build of its branch before it, and the waiting ones
/// by a partial index of the few that wait (measured, 200,000 builds on one branch:
/// 48 ms and 58 ms a lookup by `builds_by_branch`, 0.03 ms by these).
const LINE_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS builds_by_line ON builds (repo, branch, tag, pull_request);
CREATE INDEX IF NOT EXISTS builds_waiting ON builds (repo, branch, tag, pull_request)
  WHERE state IN ('queued', 'awaiting_approval');
";

/// The state of the last build that ended of a new build's line (by [`LINE_INDEXES`]).
pub(super) const PREVIOUS: &str = "SELECT state FROM builds WHERE repo = ?1 AND branch IS ?2
    AND tag IS ?3 AND pull_request IS ?4 AND finished_at IS NOT NULL ORDER BY id DESC LIMIT 1";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS builds (
  id INTEGER PRIMARY KEY,
  repo TEXT NOT NULL,
  number INTEGER NOT NULL,
  branch TEXT, tag TEXT,
  commit_sha TEXT NOT NULL,
  event TEXT NOT NULL,
  message TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  previous_state TEXT,
  commit_range TEXT NOT NULL DEFAULT '',
  reason TEXT,
  author TEXT NOT NULL DEFAULT '',
  mail TEXT NOT NULL DEFAULT '',
  UNIQUE (repo, number)
);
CREATE INDEX IF NOT EXISTS builds_by_repo ON builds (repo, id);
-- What a build and the pollers look up by state (the queue, the running builds of a
-- node) and by branch (the previous build of it, its badge, auto-cancel), without
-- reading every build of the past.
CREATE INDEX IF NOT EXISTS builds_by_state ON builds (state, id);
CREATE INDEX IF NOT EXISTS builds_by_branch ON builds (repo, branch, id);
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY,
  build_id INTEGER NOT NULL,
  sender TEXT NOT NULL,
  recipients TEXT NOT NULL,
  message BLOB NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at_ms INTEGER NOT NULL,
  last_error TEXT,
  state TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at_ms);
CREATE TABLE IF NOT EXISTS crons (
  repo TEXT NOT NULL,
  branch TEXT NOT NULL,
  period TEXT NOT NULL,
  next_at INTEGER NOT NULL,
  last_run INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (repo, branch, period)
);
CREATE TABLE IF NOT EXISTS job_attempts (
  build_id INTEGER NOT NULL,
  number TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  result TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  duration_ms INTEGER NOT NULL DEFAULT 0,
  log BLOB NOT NULL,
  line_times TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (build_id, number, attempt)
);
CREATE TABLE IF NOT EXISTS statuses (
  id INTEGER PRIMARY KEY,
  build_id INTEGER NOT NULL,
  phase TEXT NOT NULL,
  repo TEXT NOT NULL,
  url TEXT NOT NULL,
  body TEXT NOT NULL,
  sha TEXT NOT NULL,
  context TEXT NOT NULL,
  state TEXT NOT NULL,
  outcome TEXT NOT NULL DEFAULT 'pending',
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at_ms INTEGER NOT NULL DEFAULT 0,
  claimed_until_ms INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  UNIQUE (build_id, phase)
);
CREATE INDEX IF NOT EXISTS statuses_due ON statuses (outcome, id);
CREATE TABLE IF NOT EXISTS deliveries (
  key TEXT PRIMARY KEY,
  build_id INTEGER NOT NULL,
  at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_by_at ON deliveries (at);
CREATE TABLE IF NOT EXISTS jobs (
  build_id INTEGER NOT NULL REFERENCES builds(id),
  number TEXT NOT NULL,
  name TEXT,
  env TEXT NOT NULL,
  result TEXT NOT NULL,
  duration_ms INTEGER NOT NULL,
  log BLOB NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  stage TEXT NOT NULL DEFAULT '',
  deploys TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (build_id, number)
);
CREATE TABLE IF NOT EXISTS tasks (
  id INTEGER PRIMARY KEY,
  build_id INTEGER NOT NULL,
  number TEXT NOT NULL,
  needs TEXT NOT NULL,
  state TEXT NOT NULL,
  attempt INTEGER NOT NULL DEFAULT 1,
  worker TEXT,
  lease_until INTEGER NOT NULL DEFAULT 0,
  cancel INTEGER NOT NULL DEFAULT 0,
  outcome TEXT,
  created_at INTEGER NOT NULL,
  UNIQUE (build_id, number)
);
CREATE INDEX IF NOT EXISTS tasks_queued ON tasks (state, id);
CREATE TABLE IF NOT EXISTS task_chunks (
  task_id INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  seq INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (task_id, attempt, seq)
);
CREATE TABLE IF NOT EXISTS runway_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workers (
  name TEXT PRIMARY KEY,
  labels TEXT NOT NULL,
  seen_at INTEGER NOT NULL,
  task_id INTEGER,
  draining INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS revoked_workers (name TEXT PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS logins (
  state TEXT PRIMARY KEY,
  nonce TEXT NOT NULL,
  verifier TEXT NOT NULL,
  next TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  groups TEXT NOT NULL,
  csrf TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
  id INTEGER PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  owner TEXT NOT NULL,
  groups TEXT NOT NULL,
  name TEXT NOT NULL,
  repos TEXT NOT NULL,
  role TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  who TEXT NOT NULL,
  action TEXT NOT NULL,
  repo TEXT NOT NULL,
  build_id INTEGER,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_by_build ON audit (build_id);
";

impl rusqlite::types::FromSql for Status {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Status> {
        let name = v.as_str()?;
        Status::parse(name).map_err(|e| rusqlite::types::FromSqlError::Other(e.into()))
    }
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        id: r.get(0)?,
        repo: r.get(1)?,
        number: r.get::<_, i64>(2)? as u64,
        branch: r.get(3)?,
        tag: r.get(4)?,
        commit: r.get(5)?,
        event: r.get(6)?,
        state: r.get(7)?,
        started_at: r.get(8)?,
        finished_at: r.get(9)?,
        previous_state: r.get(10)?,
        commit_range: r.get(11)?,
        reason: r.get(12)?,
        message: r.get(13)?,
        author: r.get(14)?,
        mail: r.get(15)?,
        pull_request: super::pr_of(&r.get::<_, String>(16)?),
        request: super::request_of(&r.get::<_, String>(17)?),
        rerun: Some(r.get::<_, String>(18)?).filter(|r| !r.is_empty()),
    })
}

use super::COLUMNS;

/// How many prepared statements the connection keeps (the store has about a hundred).
const STATEMENTS_KEPT: usize = 256;

/// The SQLite store.
pub(in crate::store) struct Sqlite {
    conn: Connection,
}

/// The store files this process brought up to date, by device, inode and birth time:
/// a connection to one of them again needs neither the openers' lock nor the check of
/// its tables (each build a node follows opens one beyond those kept: with workers, up
/// to 256 builds at once; the lock, the check's statements and its write transaction
/// were most of the 0.35 ms each open cost). A file replaced meanwhile is another file
/// (an inode's number may come again, not its birth time): checked again. Where the
/// filesystem keeps no birth time, every open checks.
static UP_TO_DATE: std::sync::Mutex<Vec<FileId>> = std::sync::Mutex::new(Vec::new());

/// A file's device, inode and birth time.
type FileId = (u64, u64, std::time::SystemTime);

/// `path`'s [`FileId`], when it exists and has a birth time.
fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.created().ok()?))
}

/// Whether this process brought the file with `id` up to date.
fn up_to_date(id: Option<FileId>) -> bool {
    id.is_some_and(|id| {
        UP_TO_DATE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
    })
}

/// Every connection's settings: how it waits for another's lock, the statements it
/// keeps, the journal and how commits wait for the disk.
fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // Another connection's commit holds the lock (the server's, a build's, a hook's):
    // tried again soon after, for ten seconds.
    conn.busy_handler(Some(locked))?;
    // Every statement the server runs stays prepared (rusqlite keeps 16 by
    // default: fewer than a worker's job goes through, each then parsed anew).
    conn.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
    // Every commit synced to the disk, but those of writes that may be lost with the
    // power ([`Backend::execute_lazily`]): by [`committed`], once the commit has let
    // go of the store's write lock, not by SQLite while holding it (`NORMAL`).
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
    let log = WalSync::of(path);
    // SAFETY: `conn.handle()` is the open connection's own handle; the hook's data is
    // a `&'static WalSync` (never freed), valid whenever SQLite calls it. The hook
    // replaces SQLite's default one, whose checkpoints [`committed`] makes as it did.
    unsafe {
        rusqlite::ffi::sqlite3_wal_hook(
            conn.handle(),
            Some(committed),
            std::ptr::from_ref(log).cast_mut().cast(),
        );
    }
    Ok(())
}

/// The log's size in pages past which a commit checkpoints it into the database
/// (SQLite's default, which its own hook applied).
const CHECKPOINT_PAGES: std::ffi::c_int = 1000;

thread_local! {
    /// This thread's commits need not wait for the disk now ([`Sqlite::lazily`], a
    /// lazy group): a thread makes one store call at a time, on one connection.
    static LAZY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This thread's commits' syncs wait until [`Deferred::settle`] ([`defer_syncs`]).
    static DEFER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The log a deferred commit still waits for ([`committed`] under [`DEFER`]).
    static OWED: std::cell::Cell<Option<&'static WalSync>> = const { std::cell::Cell::new(None) };
}

/// This thread's commits that wait for the disk wait at [`Deferred::settle`] rather than
/// in their statements, so that a lock the caller holds around its store calls (a serve
/// node's one SQLite connection) is let go before the disk is waited for: held during
/// each sync, it queued every delivery, claim and report behind it.
pub(crate) fn defer_syncs() -> Deferred {
    Deferred(DEFER.replace(true), std::marker::PhantomData)
}

/// The syncs owed since [`defer_syncs`]: made by [`Deferred::settle`], or when dropped
/// (unwinding), as they would have been. Kept on its thread (what is owed is noted
/// there).
pub(crate) struct Deferred(bool, std::marker::PhantomData<*const ()>);

impl Deferred {
    /// Returns once the commits made since [`defer_syncs`] that wait for the disk are on
    /// it; a failed sync is an error (the commits stay, as a failed statement's did).
    pub(crate) fn settle(self) -> std::io::Result<()> {
        // Paid here, so that a failure is returned; the drop then finds nothing owed.
        pay_owed()
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let _ = pay_owed();
        DEFER.set(self.0);
    }
}

/// Syncs the log this thread's deferred commits wait for, if any.
fn pay_owed() -> std::io::Result<()> {
    match OWED.take() {
        Some(log) => log.sync(),
        None => Ok(()),
    }
}

/// SQLite's hook after each commit that wrote to the log, the write lock released:
/// checkpoints a long log, as SQLite's own hook did, and, unless the commit is a lazy
/// one, waits until the log is on the disk ([`WalSync::sync`]) before the commit's
/// statement returns (or, syncs deferred, at [`Deferred::settle`]); a sync that failed
/// fails that statement (the commit stays).
/// SQLite calls it when a step ends the commit: a write outside a transaction whose
/// rows are not all read (one row of a `RETURNING`) commits at its reset, unsynced,
/// so every write here reads its rows to the end ([`Backend::query`], the claim).
unsafe extern "C" fn committed(
    data: *mut std::ffi::c_void,
    db: *mut rusqlite::ffi::sqlite3,
    name: *const std::ffi::c_char,
    pages: std::ffi::c_int,
) -> std::ffi::c_int {
    if pages >= CHECKPOINT_PAGES {
        // SAFETY: the connection and database name SQLite passed this call, valid
        // during it; a checkpoint is allowed in this hook (SQLite's own makes one).
        unsafe { rusqlite::ffi::sqlite3_wal_checkpoint(db, name) };
    }
    if LAZY.get() {
        return rusqlite::ffi::SQLITE_OK;
    }
    // SAFETY: `data` is the `&'static WalSync` [`configure`] registered.
    let log: &'static WalSync = unsafe { &*data.cast::<WalSync>() };
    if DEFER.get() {
        // Owed until the caller settles; one owed to another store is paid now.
        return match OWED.replace(Some(log)) {
            Some(other) if !std::ptr::eq(other, log) => synced(other),
            _ => rusqlite::ffi::SQLITE_OK,
        };
    }
    synced(log)
}

/// `log` synced, as the hook answers it: a failure, or a panic (which must not unwind
/// into SQLite's C frames), fails the commit's statement.
fn synced(log: &WalSync) -> std::ffi::c_int {
    match std::panic::catch_unwind(|| log.sync()) {
        Ok(Ok(())) => rusqlite::ffi::SQLITE_OK,
        _ => rusqlite::ffi::SQLITE_IOERR_FSYNC,
    }
}

/// A store's log (`runway.db-wal`) synced to the disk for the commits that wait for
/// it, one sync for all those made before it started (group commit): SQLite's `FULL`
/// synced each commit's log while holding the store's one write lock, and a busy
/// node's deliveries and workers' reports queued behind each other's syncs.
struct WalSync {
    log: std::path::PathBuf,
    state: std::sync::Mutex<Synced>,
    done: std::sync::Condvar,
}

/// What [`WalSync`] has been asked and has done, by count of commits.
#[derive(Default)]
struct Synced {
    /// Commits that asked for a sync.
    asked: u64,
    /// Commits known on the disk: every one that asked before the last sync began.
    synced: u64,
    /// A sync is under way.
    syncing: bool,
    /// Syncs made (tests count them).
    made: u64,
}

impl WalSync {
    /// The one for the store at `path` in this process (kept for its life).
    fn of(path: &Path) -> &'static WalSync {
        static ALL: std::sync::Mutex<Vec<&'static WalSync>> = std::sync::Mutex::new(Vec::new());
        let log = std::path::PathBuf::from(format!("{}-wal", path.display()));
        let mut all = ALL.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = all.iter().find(|w| w.log == log) {
            return known;
        }
        let made: &'static WalSync = Box::leak(Box::new(WalSync {
            log,
            state: std::sync::Mutex::new(Synced::default()),
            done: std::sync::Condvar::new(),
        }));
        all.push(made);
        made
    }

    /// Returns once what was committed before the call is on the disk.
    fn sync(&self) -> std::io::Result<()> {
        self.sync_by(|| match std::fs::File::open(&self.log) {
            Ok(f) => f.sync_data(),
            // No log: the last connection's checkpoint moved it into the database
            // file, and synced that.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
    }

    /// [`WalSync::sync`], the disk's sync being `disk`: made by the first caller that
    /// finds none under way, for every caller so far; a caller that came during it
    /// waits for the next.
    fn sync_by(&self, disk: impl Fn() -> std::io::Result<()>) -> std::io::Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.asked += 1;
        let mine = s.asked;
        loop {
            if s.synced >= mine {
                return Ok(());
            }
            if s.syncing {
                s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.syncing = true;
            let upto = s.asked;
            drop(s);
            let synced = disk();
            s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.syncing = false;
            s.made += 1;
            if synced.is_ok() {
                s.synced = s.synced.max(upto);
            }
            self.done.notify_all();
            // A failed sync: each caller it was for tries its own.
            synced?;
        }
    }
}

impl Sqlite {
    /// Opens (and creates, and brings up to date) `DIR/runway.db`.
    pub fn open(dir: &Path) -> Result<Sqlite, StoreError> {
        let path = dir.join("runway.db");
        let known = file_id(&path);
        if up_to_date(known) {
            let conn = Connection::open(&path)?;
            // Still the file checked (not replaced between the look and the open).
            if file_id(&path) == known {
                configure(&conn, &path)?;
                return Ok(Sqlite { conn });
            }
        }
        // The store made and brought up to date by one opener at a time (a lock on a
        // file beside it, held while it opens): a server and a hook opening a new store
        // together each saw a column missing and both added it ("duplicate column
        // name"), or found it locked while the other set its journal mode.
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("runway.db.open-lock"))?;
        lock.lock()?;
        let conn = Connection::open(&path)?;
        configure(&conn, &path)?;
        conn.execute_batch("BEGIN IMMEDIATE;")?;
        let made = Sqlite::bring_up_to_date(&conn);
        match made {
            Ok(()) => conn.execute_batch("COMMIT;")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK;");
                return Err(e);
            }
        }
        if let Some(id) = file_id(&path) {
            let mut known = UP_TO_DATE.lock().unwrap_or_else(|p| p.into_inner());
            if !known.contains(&id) {
                known.push(id);
            }
        }
        Ok(Sqlite { conn })
    }

    /// The tables, and the columns stores made before them lack.
    fn bring_up_to_date(conn: &Connection) -> Result<(), StoreError> {
        conn.execute_batch(SCHEMA)?;
        // Stores made before these columns get them (empty for old rows).
        const TEXT: &str = "TEXT NOT NULL DEFAULT ''";
        for (table, column, kind) in [
            ("jobs", "reason", TEXT),
            ("builds", "author", TEXT),
            ("jobs", "stage", TEXT),
            ("jobs", "deploys", TEXT),
            ("builds", "mail", TEXT),
            ("builds", "node", TEXT),
            ("jobs", "log_ref", TEXT),
            ("builds", "lease_until", "INTEGER NOT NULL DEFAULT 0"),
            ("tasks", "secret", "TEXT NOT NULL DEFAULT ''"),
            ("tasks", "held_by", "TEXT NOT NULL DEFAULT ''"),
            ("tasks", "spec", "TEXT NOT NULL DEFAULT ''"),
            ("tasks", "instance", "TEXT NOT NULL DEFAULT ''"),
            ("builds", "jobs_started", "INTEGER NOT NULL DEFAULT 0"),
            ("builds", "pull_request", "INTEGER"),
            ("builds", "pr", "TEXT NOT NULL DEFAULT ''"),
            ("builds", "request", "TEXT NOT NULL DEFAULT ''"),
            ("builds", "cancel_requested", "INTEGER NOT NULL DEFAULT 0"),
            ("jobs", "line_times", "TEXT NOT NULL DEFAULT ''"),
            ("builds", "rerun", "TEXT NOT NULL DEFAULT ''"),
        ] {
            let has: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
                params![table, column],
                |r| r.get(0),
            )?;
            if !has {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind};"))?;
            }
        }
        // Made after the columns they index: stores made before those lack them.
        conn.execute_batch(LINE_INDEXES)?;
        Ok(())
    }
}

impl Sqlite {
    /// Runs `f` with commits that do not wait for the disk ([`committed`] syncs no log
    /// for them): what they wrote reaches it with the next commit that waits, or a
    /// checkpoint. Inside a transaction (a group) the statement is the transaction's,
    /// whose commit decides.
    fn lazily<T>(
        &mut self,
        f: impl FnOnce(&mut Sqlite) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if !self.conn.is_autocommit() {
            return f(self);
        }
        let _lazy = Lazy::now();
        f(self)
    }
}

/// This thread's commits are lazy ([`LAZY`]) while it lives; then as they were.
struct Lazy(bool);

impl Lazy {
    fn now() -> Lazy {
        Lazy(LAZY.replace(true))
    }
}

impl Drop for Lazy {
    fn drop(&mut self) {
        LAZY.set(self.0);
    }
}

/// How long a connection that found the store locked by another's write waits before
/// its try number `tries` (from 0), or `None`: it gives up ("database is locked"),
/// about ten seconds in. A write holds the lock for one commit (its log's sync is
/// made after, [`committed`]), and a serve node writes through its own connection and
/// each build's:
/// SQLite's own timeout waited 1, 2, 5, 10 ms… between tries. With it, a worker's
/// report (which waits for its commit) was answered 7.4 ms after it was sent on
/// average, with 4 workers; 5.0 ms with these waits (one bench round each).
fn lock_wait(tries: i32) -> Option<std::time::Duration> {
    use std::time::Duration;
    match tries {
        ..20 => Some(Duration::from_micros(50)),
        20..100 => Some(Duration::from_micros(250)),
        100..10_100 => Some(Duration::from_millis(1)),
        _ => None,
    }
}

/// SQLite's busy handler: waits as [`lock_wait`] says; false gives up.
fn locked(tries: i32) -> bool {
    match lock_wait(tries) {
        Some(wait) => {
            std::thread::sleep(wait);
            true
        }
        None => false,
    }
}

#[cfg(test)]
thread_local! {
    /// The statements this thread ran, while a test collects them ([`capture`]).
    static CAPTURED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// How many times the log of the store in `dir` was synced in this process (tests).
#[cfg(test)]
pub(crate) fn syncs(dir: &Path) -> u64 {
    WalSync::of(&dir.join("runway.db"))
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .made
}

/// The statements SQLite stores run on this thread during `f` (tests).
#[cfg(test)]
pub(super) fn capture(f: impl FnOnce()) -> Vec<String> {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    f();
    CAPTURED.with(|c| c.borrow_mut().take().unwrap_or_default())
}

/// Appends `sql` to `RUNWAY_TRACE_SQL`'s file, when it names one (read once).
fn trace(sql: &str) {
    static TRACE: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> =
        std::sync::OnceLock::new();
    let file = TRACE.get_or_init(|| {
        let path = std::env::var_os("RUNWAY_TRACE_SQL")?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .ok()?;
        Some(std::sync::Mutex::new(file))
    });
    #[cfg(test)]
    CAPTURED.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut() {
            v.push(sql.to_string());
        }
    });
    if let Some(file) = file {
        use std::io::Write;
        let one = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        let line = format!("{}\t{one}\n", std::process::id());
        let _ = file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(line.as_bytes());
    }
}

/// `sql` prepared on `conn` (kept prepared for its next use), traced.
fn cached<'c>(conn: &'c Connection, sql: &str) -> rusqlite::Result<rusqlite::CachedStatement<'c>> {
    trace(sql);
    conn.prepare_cached(sql)
}

/// `$1`… as SQLite numbers them (`?1`…).
pub(super) fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn bind(args: &[Value]) -> Vec<rusqlite::types::Value> {
    use rusqlite::types::Value as V;
    args.iter()
        .map(|a| match a {
            Value::Null => V::Null,
            Value::Int(i) => V::Integer(*i),
            Value::Text(t) => V::Text(t.clone()),
            Value::Bytes(b) => V::Blob(b.clone()),
        })
        .collect()
}

impl Backend for Sqlite {
    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        use rusqlite::types::ValueRef as V;
        let mut st = cached(&self.conn, &placeholders(sql))?;
        let n = st.column_count();
        let mut rows = st.query(rusqlite::params_from_iter(bind(args)))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            V::Null => Value::Null,
                            V::Integer(i) => Value::Int(i),
                            V::Real(f) => Value::Int(f as i64),
                            V::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                            V::Blob(b) => Value::Bytes(b.to_vec()),
                        })
                    })
                    .collect::<Result<_, rusqlite::Error>>()?,
            );
        }
        Ok(out)
    }

    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        let mut st = cached(&self.conn, &placeholders(sql))?;
        Ok(st.execute(rusqlite::params_from_iter(bind(args)))? as u64)
    }

    fn execute_lazily(&mut self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        self.lazily(|s| s.execute(sql, args))
    }

    fn query_lazily(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        self.lazily(|s| s.query(sql, args))
    }

    fn begin_group(&mut self, lazily: bool) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut st| st.execute([]))?;
        // The group's commit, at its end, is lazy.
        LAZY.set(lazily);
        Ok(())
    }

    fn end_group(&mut self, commit: bool) -> Result<(), StoreError> {
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        let ended = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut st| st.execute([]));
        if ended.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        LAZY.set(false);
        ended?;
        Ok(())
    }

    fn notify(&mut self, _payload: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn insert(&mut self, b: &NewBuild, state: Status) -> Result<BuildRow, StoreError> {
        let (pr_number, pr) = b.pr_columns();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let number: i64 = cached(
            &tx,
            "SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE repo = ?1",
        )?
        .query_row(params![b.repo], |r| r.get(0))?;
        let previous: Option<String> = cached(&tx, PREVIOUS)?
            .query_row(params![b.repo, b.branch, b.tag, pr_number], |r| r.get(0))
            .optional()?;
        cached(
            &tx,
            "INSERT INTO builds (repo, number, branch, tag, commit_sha, event, message, state, started_at,
                                 previous_state, commit_range, pull_request, pr, request)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![b.repo, number, b.branch, b.tag, b.commit, b.event, b.message, state.as_str(), now(), previous, b.commit_range, pr_number, pr, super::request_column(b.request.as_ref())],
        )?;
        let id = tx.last_insert_rowid();
        for key in b.delivery_keys() {
            cached(
                &tx,
                "INSERT INTO deliveries (key, build_id, at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET build_id = ?2, at = ?3",
            )?
            .execute(params![key, id, now()])?;
        }
        tx.commit()?;
        Ok(cached(
            &self.conn,
            &format!("SELECT {COLUMNS} FROM builds WHERE id = ?1"),
        )?
        .query_row(params![id], row)?)
    }

    fn claim(
        &mut self,
        queued_by: Option<i64>,
        holder: Option<(&str, i64)>,
    ) -> Result<Option<BuildRow>, StoreError> {
        // Committed without waiting for the disk: a claim the host's crash loses leaves
        // its build queued, to be run by the next start, where a kept one would have it
        // errored as interrupted. What the build records later (its end, a worker's
        // report) is synced at its commit, and with it every commit before.
        self.lazily(|s| {
            Ok(cached(
                &s.conn,
                &format!(
                    "UPDATE builds SET state = 'running', started_at = ?1,
                   node = COALESCE(?3, node), lease_until = COALESCE(?4, lease_until)
                 WHERE id = (SELECT id FROM builds WHERE state = 'queued'
                               AND (?2 IS NULL OR started_at <= ?2)
                             ORDER BY id LIMIT 1)
                 RETURNING {COLUMNS}"
                ),
            )?
            // Read to its end: the statement's last step commits (the first row's
            // reset would, without [`committed`] being called).
            .query_map(
                params![now(), queued_by, holder.map(|h| h.0), holder.map(|h| h.1)],
                row,
            )?
            .collect::<Result<Vec<_>, _>>()?
            .pop())
        })
    }

    fn mark_interrupted(&mut self, reason: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = self.conn.prepare(
            "UPDATE builds SET state = 'errored', finished_at = ?1, reason = ?2
             WHERE state = 'running' RETURNING repo, number",
        )?;
        let rows = st.query_map(params![now(), reason], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn restart(&mut self, id: i64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM jobs WHERE build_id = ?1", params![id])?;
        tx.execute("DELETE FROM statuses WHERE build_id = ?1", params![id])?;
        tx.execute(
            "UPDATE builds SET state = 'queued', finished_at = NULL, reason = NULL, jobs_started = 0, cancel_requested = 0, rerun = '' WHERE id = ?1",
            params![id],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn finish(
        &mut self,
        id: i64,
        state: Status,
        jobs: &[JobRow],
        held_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let ended = cached(
            &tx,
            "UPDATE builds SET state = ?1, finished_at = ?2 WHERE id = ?3
                   AND (?4 IS NULL OR (node = ?4 AND state = 'running'))",
        )?
        .execute(params![state.as_str(), now(), id, held_by])?;
        if ended == 0 && held_by.is_some() {
            return Ok(false);
        }
        for j in jobs {
            cached(
                &tx,
                "INSERT OR REPLACE INTO jobs (build_id, number, name, env, result, duration_ms, log, reason, stage, deploys, line_times)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                    id,
                    j.number,
                    j.name,
                    j.env,
                    j.result,
                    j.duration_ms as i64,
                    j.log,
                    j.reason,
                    j.stage,
                    j.deploys.join("\n"),
                    super::times_column(&j.times)
                ],
            )?;
        }
        // The workers' chunks are in the jobs' logs now.
        cached(&tx, super::tasks::DROP_CHUNKS)?.execute(params![id])?;
        tx.commit()?;
        Ok(true)
    }

    fn jobs(&mut self, build_id: i64) -> Result<Vec<JobRow>, StoreError> {
        let mut st = cached(
            &self.conn,
            "SELECT number, name, env, result, duration_ms, log, reason, stage, deploys, line_times FROM jobs WHERE build_id = ?1 ORDER BY rowid",
        )?;
        let rows = st.query_map(params![build_id], |r| {
            Ok(JobRow {
                number: r.get(0)?,
                name: r.get(1)?,
                env: r.get(2)?,
                result: r.get(3)?,
                duration_ms: r.get::<_, i64>(4)? as u64,
                log: r.get(5)?,
                reason: r.get(6)?,
                stage: r.get(7)?,
                deploys: r.get::<_, String>(8)?.lines().map(str::to_string).collect(),
                times: super::times_of(&r.get::<_, String>(9)?),
                worker: None,
                workers: Vec::new(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The jobs table of a store made before jobs had a reason (tests of older stores).
#[cfg(test)]
pub(in crate::store) const JOBS_BEFORE_REASON: &str =
    "CREATE TABLE jobs (build_id INTEGER NOT NULL, number TEXT NOT NULL, name TEXT,
   env TEXT NOT NULL, result TEXT NOT NULL, duration_ms INTEGER NOT NULL,
   log BLOB NOT NULL, PRIMARY KEY (build_id, number));";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_waiting_for_the_lock_tries_again_within_a_commits_time_for_ten_seconds() {
        let waits: Vec<std::time::Duration> = (0..).map_while(lock_wait).collect();
        let total: std::time::Duration = waits.iter().sum();
        assert!(
            waits[..20].iter().all(|w| w.as_micros() <= 100),
            "the first tries come within a commit's sync (0.2 ms): {:?}",
            &waits[..20]
        );
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "waits never shrink");
        assert!(
            (9.5..=11.0).contains(&total.as_secs_f64()),
            "given up after about ten seconds, as SQLite's busy timeout was: {total:?}"
        );
    }

    /// A store opened again is not checked again; one replaced by an older file (the
    /// same name, maybe the same inode number) is, and gains the column it lacks.
    #[test]
    fn a_store_is_checked_once_unless_its_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("runway.db");
        let first = Sqlite::open(dir.path()).unwrap();
        assert!(up_to_date(file_id(&db)), "checked once");
        let mut again = Sqlite::open(dir.path()).unwrap();
        assert_eq!(
            again.query("SELECT reason FROM jobs", &[]).unwrap().len(),
            0
        );
        drop((first, again));
        for f in ["runway.db", "runway.db-wal", "runway.db-shm"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(JOBS_BEFORE_REASON).unwrap();
        }
        assert!(!up_to_date(file_id(&db)), "another file");
        let mut older = Sqlite::open(dir.path()).unwrap();
        assert_eq!(
            older.query("SELECT reason FROM jobs", &[]).unwrap().len(),
            0,
            "brought up to date"
        );
    }

    /// Two connections to one store, one holding a write: the other's write waits and
    /// goes through once it is committed, well within the ten seconds.
    #[test]
    fn a_write_waits_for_anothers_commit_and_then_goes_through() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Sqlite::open(dir.path()).unwrap();
        let mut b = Sqlite::open(dir.path()).unwrap();
        a.begin_group(false).unwrap();
        a.execute(
            "INSERT INTO revoked_workers (name, at) VALUES ($1, 1)",
            &[Value::from("w1")],
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            tx.send(()).unwrap();
            b.execute(
                "INSERT INTO revoked_workers (name, at) VALUES ($1, 2)",
                &[Value::from("w2")],
            )
        });
        rx.recv().unwrap();
        // Not a timing: a pause so that the other write meets the lock (it waits in
        // the busy handler); what is asserted holds either way.
        std::thread::sleep(std::time::Duration::from_millis(30));
        a.end_group(true).unwrap();
        assert_eq!(writer.join().unwrap().unwrap(), 1);
        let names = a
            .query("SELECT name FROM revoked_workers ORDER BY name", &[])
            .unwrap();
        assert_eq!(names.len(), 2);
    }
}

#[cfg(test)]
mod sync_tests {
    use super::WalSync;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Commits that ask for a sync while one is under way are all covered by the next
    /// one: four commits, the first's sync held until the other three wait, make two
    /// syncs of the disk, and none returns before a sync begun after it asked ended.
    #[test]
    fn commits_waiting_during_a_sync_share_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let log = WalSync::of(&dir.path().join("runway.db"));
        let (began, first_began) = mpsc::channel::<()>();
        let (go, hold) = mpsc::channel::<()>();
        let hold = std::sync::Mutex::new(hold);
        let disks = std::sync::atomic::AtomicU64::new(0);
        let disk = || {
            disks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = began.send(());
            // The first sync is held until the test lets it go; later ones are not.
            let _ = hold.lock().unwrap().recv_timeout(Duration::from_secs(60));
            Ok(())
        };
        std::thread::scope(|s| {
            let first = s.spawn(|| log.sync_by(disk));
            first_began.recv().unwrap();
            let others: Vec<_> = (0..3).map(|_| s.spawn(|| log.sync_by(disk))).collect();
            // Each of the three waits for the sync under way, counted as asked.
            while log.state.lock().unwrap().asked < 4 {
                std::thread::yield_now();
            }
            go.send(()).unwrap();
            first.join().unwrap().unwrap();
            // The second sync, for the three, is let go as it begins.
            first_began.recv().unwrap();
            go.send(()).unwrap();
            for o in others {
                o.join().unwrap().unwrap();
            }
        });
        assert_eq!(disks.load(std::sync::atomic::Ordering::SeqCst), 2);
        let s = log.state.lock().unwrap();
        assert_eq!((s.asked, s.synced, s.made), (4, 4, 2));
    }

    /// A sync that failed fails its caller, and the commits it was for sync again.
    #[test]
    fn a_failed_sync_is_made_again_for_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let log = WalSync::of(&dir.path().join("runway.db"));
        let fail = std::sync::atomic::AtomicBool::new(true);
        let disk = || {
            if fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::other("the disk said no"));
            }
            Ok(())
        };
        assert!(log.sync_by(disk).is_err());
        assert!(log.sync_by(disk).is_ok());
        let s = log.state.lock().unwrap();
        assert_eq!((s.asked, s.synced, s.made), (2, 2, 2));
    }
}
