//! A TCP proxy on loopback between one node and its database, for cutting
//! and stalling the connection: `cut` drops every connection and refuses
//! new ones; `stall` drops them and holds new ones unanswered (a database
//! host gone silent); `freeze` keeps every connection open but forwards
//! nothing, new ones held unanswered too (a network partition: reads hang,
//! nothing is reset); `restore` lets traffic through again (frozen
//! connections are then dropped). Used by the chaos checker and by the
//! tests.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A proxy in front of one database server. See the module documentation.
#[derive(Debug)]
pub struct TcpProxy {
    /// The database URL that goes through the proxy.
    pub url: String,
    open: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl TcpProxy {
    /// Starts a proxy for the server of `db_url` (`scheme://[user@]host:port/db`)
    /// on its own thread; [`TcpProxy::url`] is `db_url` through it.
    pub async fn start(db_url: &str) -> std::io::Result<TcpProxy> {
        let bad = || std::io::Error::other(format!("not a server database URL: {db_url}"));
        let (scheme, rest) = db_url.split_once("://").ok_or_else(bad)?;
        let (userinfo, hostpath) = rest
            .rsplit_once('@')
            .map(|(u, h)| (format!("{u}@"), h))
            .unwrap_or((String::new(), rest));
        let (hostport, path) = hostpath.split_once('/').ok_or_else(bad)?;
        let upstream = hostport.to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(true));
        let silent = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(AtomicU64::new(0));
        let frozen = Arc::new(AtomicBool::new(false));
        let (o, s, g, f) = (
            open.clone(),
            silent.clone(),
            generation.clone(),
            frozen.clone(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !o.load(Ordering::SeqCst) {
                        if s.load(Ordering::SeqCst) {
                            // Hold the connection without a word until restored.
                            let o = o.clone();
                            tokio::spawn(async move {
                                while !o.load(Ordering::SeqCst) {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                                drop(inbound);
                            });
                        }
                        continue;
                    }
                    let (o, g, f, upstream) = (o.clone(), g.clone(), f.clone(), upstream.clone());
                    tokio::spawn(async move {
                        let mut inbound = inbound;
                        let born = g.load(Ordering::SeqCst);
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await
                        else {
                            return;
                        };
                        let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                        let watch = async {
                            while !f.load(Ordering::SeqCst)
                                && o.load(Ordering::SeqCst)
                                && g.load(Ordering::SeqCst) == born
                            {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        };
                        tokio::select! { _ = copy => {}, _ = watch => {} }
                        // Frozen: both sockets stay open, silent, until restored.
                        while f.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    });
                }
            });
        });
        Ok(TcpProxy {
            url: format!("{scheme}://{userinfo}{addr}/{path}"),
            open,
            silent,
            frozen,
            generation,
        })
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.close(false);
    }

    /// Drops every connection and holds new ones unanswered.
    pub fn stall(&self) {
        self.close(true);
    }

    fn close(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
        self.open.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Keeps every connection open but forwards nothing (new ones are
    /// held unanswered): what a network partition looks like.
    pub fn freeze(&self) {
        self.silent.store(true, Ordering::SeqCst);
        self.frozen.store(true, Ordering::SeqCst);
        self.open.store(false, Ordering::SeqCst);
    }

    /// Lets traffic through again.
    pub fn restore(&self) {
        self.frozen.store(false, Ordering::SeqCst);
        self.open.store(true, Ordering::SeqCst);
    }
}
