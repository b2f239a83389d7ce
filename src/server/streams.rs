//! Room for deliveries: long-lived streams (`GET /events`, a build's live log) have a cap
//! of their own, in all and per client address, well below `max_connections`, so that
//! webhooks, the API and workers always find a connection. A stream past either cap is
//! answered 503 with `Retry-After` and the connection closed; an admitted one holds its
//! [`Permit`] for as long as it streams.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The client's address, put on each request by the listener.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub IpAddr);

/// The streams open now, per client.
#[derive(Debug)]
pub struct Streams {
    total: usize,
    per_client: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a stream was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    /// Every stream the server allows is open.
    All(usize),
    /// This client has as many open as one client may.
    Client(usize),
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::All(n) => write!(f, "the server has {n} live streams open, its most"),
            Full::Client(n) => write!(f, "this address has {n} live streams open, its most"),
        }
    }
}

/// One admitted stream; its place is given back when dropped.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Streams>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Streams {
    /// A gate of `total` streams in all (a quarter of the connection cap unless
    /// runway.toml says), `per_client` for one address.
    pub fn new(total: usize, per_client: usize) -> Arc<Streams> {
        Arc::new(Streams {
            total: total.max(1),
            per_client: per_client.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The default caps for a server of `connections`: a quarter of them in all, and
    /// 8 per address (a few browser tabs), each at least 1.
    pub fn for_connections(connections: usize) -> Arc<Streams> {
        let total = (connections / 4).max(1);
        Streams::new(total, total.min(8))
    }

    /// A place for one more stream from `ip`, or why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Full> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let all: usize = open.values().sum();
        if all >= self.total {
            return Err(Full::All(self.total));
        }
        let mine = open.entry(ip).or_insert(0);
        if *mine >= self.per_client {
            return Err(Full::Client(self.per_client));
        }
        *mine += 1;
        Ok(Permit {
            gate: self.clone(),
            ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_capped_in_all_and_per_client_and_places_come_back() {
        let g = Streams::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = g.admit(a).unwrap();
        let _a2 = g.admit(a).unwrap();
        assert_eq!(g.admit(a).unwrap_err(), Full::Client(2));
        let _b1 = g.admit(b).unwrap();
        assert_eq!(g.admit(b).unwrap_err(), Full::All(3));
        drop(a1);
        assert!(g.admit(b).is_ok(), "a closed stream's place comes back");
        assert_eq!(Streams::for_connections(16).total, 4);
        assert_eq!(Streams::for_connections(512).per_client, 8);
    }
}
