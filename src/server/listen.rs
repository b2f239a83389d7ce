//! Accepting connections so that no client can hold the server: HTTP/1 with a deadline
//! for each request's headers (`header_timeout_secs`; an idle keep-alive connection is
//! cut off by the same clock), and a cap on connections (`max_connections`, kept under
//! the process's open-file limit). At the cap, the oldest connection that has not yet
//! sent a whole request is closed to make room, so slow clients (one header line every
//! few seconds) never keep a webhook sender out. Bodies are read under their own
//! deadline by the handlers (`body_timeout_secs`, see `intake`).
//!
//! On shutdown the listener stops accepting and every connection is asked to finish
//! gracefully (an answer in flight is completed; a live log ends with its build).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// How connections are limited.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The most connections served at once.
    pub max_connections: usize,
    /// The deadline for a request's headers.
    pub header_timeout: Duration,
}

impl Limits {
    /// The cap actually used: `max_connections`, but at most half the open-file limit
    /// (the rest is for the store, git, jobs and logs), and at least 8.
    pub fn cap(&self) -> usize {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        let files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
        } else {
            1024
        };
        self.max_connections.min(files / 2).max(8)
    }
}

/// One open connection: whether it has sent a whole request, and how to close it.
struct Open {
    requested: Arc<AtomicBool>,
    close: Arc<Notify>,
}

/// The connections, oldest first (ids grow).
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Open>,
}

impl Table {
    /// Makes room for one more under `cap`: closes the oldest connection still without a
    /// request. False when every connection is busy with a request.
    fn make_room(&mut self, cap: usize) -> bool {
        if self.open.len() < cap {
            return true;
        }
        let idle = self
            .open
            .iter()
            .find(|(_, c)| !c.requested.load(Ordering::SeqCst))
            .map(|(id, _)| *id);
        match idle.and_then(|id| self.open.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the open
/// connections to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let cap = limits.cap();
    let table = Arc::new(Mutex::new(Table::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors or a reset before accept: the cap keeps this rare;
                // give the listener a moment rather than spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let requested = Arc::new(AtomicBool::new(false));
        let close = Arc::new(Notify::new());
        let id = {
            let mut t = table.lock().expect("connections");
            if !t.make_room(cap) {
                // Every connection is in a request: this one waits its turn closed.
                continue;
            }
            t.next += 1;
            let id = t.next;
            t.open.insert(
                id,
                Open {
                    requested: requested.clone(),
                    close: close.clone(),
                },
            );
            id
        };
        while tasks.try_join_next().is_some() {}
        let (app, table, mut stop) = (app.clone(), table.clone(), stop_rx.clone());
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                requested.store(true, Ordering::SeqCst);
                req.extensions_mut().insert(super::streams::Peer(peer.ip()));
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = close.notified() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            table.lock().expect("connections").open.remove(&id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_connection_without_a_request_makes_room() {
        let mut t = Table::default();
        let open = |requested: bool| Open {
            requested: Arc::new(AtomicBool::new(requested)),
            close: Arc::new(Notify::new()),
        };
        t.open.insert(1, open(true));
        t.open.insert(2, open(false));
        t.open.insert(3, open(false));
        assert!(t.make_room(4), "under the cap");
        assert!(t.make_room(3));
        assert_eq!(t.open.keys().copied().collect::<Vec<_>>(), [1, 3]);
        t.open.insert(4, open(true));
        t.open.insert(5, open(true));
        assert!(t.make_room(3));
        assert_eq!(t.open.keys().copied().collect::<Vec<_>>(), [1, 4, 5]);
        assert!(!t.make_room(3), "every connection is in a request");
    }

    #[test]
    fn the_cap_stays_under_the_open_file_limit() {
        let l = Limits {
            max_connections: usize::MAX,
            header_timeout: Duration::from_secs(1),
        };
        assert!(l.cap() < usize::MAX && l.cap() >= 8);
    }
}
