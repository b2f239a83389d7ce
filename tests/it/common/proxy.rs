//! A TCP relay on loopback between one client and a real server, which a test can cut
//! (every connection through it closed, new ones refused at once) and mend: one node's
//! way to its database lost while another's stays, as a network partition would do.
//! It can also hold the server's answers (each waits, whole, until released): a slow
//! S3 in front of moto.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Whether answers are held, and how many wait.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, usize)>,
    opened: Condvar,
}

impl Gate {
    /// Waits while the gate is held, counted among those waiting.
    fn pass(&self) {
        let mut st = self.state.lock().unwrap();
        if st.0 {
            st.1 += 1;
            while st.0 {
                st = self.opened.wait(st).unwrap();
            }
            st.1 -= 1;
        }
    }
}

/// The relay; it stops with the test process.
pub struct Proxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    gate: Arc<Gate>,
}

impl Proxy {
    /// Relays 127.0.0.1:`port` to 127.0.0.1:`to`.
    pub fn start(to: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let gate = Arc::new(Gate::default());
        let (is_cut, conns, answers) = (cut.clone(), open.clone(), gate.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                if is_cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                {
                    let mut held = conns.lock().unwrap();
                    held.push(client);
                    held.push(server);
                }
                for (i, (from, into)) in pairs.into_iter().enumerate() {
                    let (Ok(mut from), Ok(mut into)) = (from, into) else {
                        continue;
                    };
                    // The second pair carries the server's answers: through the gate.
                    let gate = (i == 1).then(|| answers.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            if let Some(g) = &gate {
                                g.pass();
                            }
                            if into.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = into.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            port,
            cut,
            open,
            gate,
        }
    }

    /// Holds every answer from the server until [`Proxy::release`].
    pub fn hold(&self) {
        self.gate.state.lock().unwrap().0 = true;
    }

    /// Lets the held answers (and those after) through.
    pub fn release(&self) {
        self.gate.state.lock().unwrap().0 = false;
        self.gate.opened.notify_all();
    }

    /// How many answers wait at the gate now.
    pub fn held(&self) -> usize {
        self.gate.state.lock().unwrap().1
    }

    /// Closes every connection through it and refuses new ones until [`Proxy::mend`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// `url` (`postgres://…@127.0.0.1:PORT/db`) through this relay.
    pub fn url(&self, url: &str, port: u16) -> String {
        url.replace(&format!(":{port}/"), &format!(":{}/", self.port))
    }
}
