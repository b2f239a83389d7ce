//! runway's outgoing HTTP clients (a worker's calls to its serve nodes, a node's
//! statuses to a forge, sign-in's calls to an OpenID provider): one way to make their
//! `ureq` agents, whose calls to an IP address start no thread.
//!
//! With a timeout set, ureq resolves every call's host on a thread of its own (so that
//! a slow DNS server cannot outlast the timeout), even when the call goes on a
//! connection kept open and even when the host is an IP address: a thread started and
//! ended for each of a worker's calls, ~60 µs of CPU here and a shootdown of the
//! process's TLB on its exit. [`literal_addr`] decides (pure) when there is nothing to
//! resolve; anything else is resolved as ureq does.

use std::net::{IpAddr, SocketAddr};

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// An agent made with `config` whose calls to an IP address are not resolved.
pub fn agent(config: ureq::config::Config) -> ureq::Agent {
    ureq::Agent::with_parts(
        config,
        DefaultConnector::default(),
        Literal(DefaultResolver::default()),
    )
}

/// The address a URL's host names when it is an IP address (`[::1]` for IPv6, as a
/// URL writes it), with its port or its scheme's; `None` for a name to resolve.
pub fn literal_addr(scheme: Option<&str>, host: &str, port: Option<u16>) -> Option<SocketAddr> {
    let ip: IpAddr = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()?;
    let port = port.or(match scheme? {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some(SocketAddr::new(ip, port))
}

/// ureq's resolver, but an IP address is taken as it is, on the caller's thread.
#[derive(Debug)]
struct Literal<R>(R);

impl<R: Resolver> Resolver for Literal<R> {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addr = uri
            .authority()
            .and_then(|a| literal_addr(uri.scheme_str(), a.host(), a.port_u16()));
        match addr {
            Some(addr) => {
                let mut out = self.empty();
                out.push(addr);
                Ok(out)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn an_ip_address_is_its_own_resolution_and_a_name_is_not() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            literal_addr(Some("http"), "127.0.0.1", Some(8080)),
            Some(at("127.0.0.1:8080"))
        );
        assert_eq!(
            literal_addr(Some("https"), "10.1.2.3", None),
            Some(at("10.1.2.3:443"))
        );
        assert_eq!(
            literal_addr(Some("http"), "[::1]", None),
            Some(at("[::1]:80"))
        );
        assert_eq!(literal_addr(Some("http"), "localhost", Some(80)), None);
        assert_eq!(literal_addr(Some("http"), "runway.example", None), None);
        assert_eq!(
            literal_addr(Some("ftp"), "127.0.0.1", None),
            None,
            "no port known"
        );
        assert_eq!(
            literal_addr(Some("http"), "127.1", Some(1)),
            None,
            "not a full address"
        );
    }

    /// A resolver that counts its calls (and resolves as ureq does).
    #[derive(Debug, Default)]
    struct Counted(Arc<AtomicUsize>, DefaultResolver);

    impl Resolver for Counted {
        fn resolve(
            &self,
            uri: &ureq::http::Uri,
            config: &ureq::config::Config,
            timeout: NextTimeout,
        ) -> Result<ResolvedSocketAddrs, ureq::Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.resolve(uri, config, timeout)
        }
    }

    /// A call to a server on an IP address (with a timeout, as runway's agents have)
    /// reaches it without ureq's resolver, whose thread it would otherwise start; a
    /// call by name still goes through it.
    #[test]
    fn a_call_to_an_ip_address_skips_the_resolver_and_a_name_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
            )
            .unwrap();
        });
        let calls = Arc::new(AtomicUsize::new(0));
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            DefaultConnector::default(),
            Literal(Counted(calls.clone(), DefaultResolver::default())),
        );
        let body = agent
            .get(&format!("http://127.0.0.1:{port}/"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        server.join().unwrap();
        assert_eq!(body, "ok");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "an IP address is not resolved"
        );
        // Port 1: nothing listens there; the name is resolved all the same.
        let _ = agent.get("http://localhost:1/").call();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a name is resolved as ureq does"
        );
    }
}
