//! `TCP_NODELAY` on the connections to PostgreSQL and MySQL/MariaDB.
//!
//! sqlx 0.9.0 opens its TCP connections with Nagle's algorithm on (it had
//! turned it off before; sqlx issue 4335). A request that leaves in more
//! than one write (a statement with a large parameter, which TLS cuts into
//! 16 KB records) then holds its last segment until the server acknowledges
//! the first, and the server, still waiting for the rest of the request,
//! delays that acknowledgement: 40 ms on Linux. A group commit of 70
//! checkpoints took 48 ms instead of about 5 (measured: the server's own
//! statement time stayed under 7 ms).
//!
//! sqlx gives no hold on its socket, so each new connection's
//! `after_connect` turns the option on for every TCP socket of this
//! process whose peer is the database server's port: the new connection
//! among them (the others are this process's other database connections,
//! which have it already, or some other client's connection to a server
//! on that port, for which it is harmless: it only sends small writes at
//! once). Matching the port, not the address, needs no name lookup, which
//! could block or return another subset of addresses than sqlx connected
//! to. It reads `/proc/self/fd`, so it works on Linux only; elsewhere it
//! does nothing, and the node says so once. When sqlx sets the option
//! again itself, this finds it set.

/// Turns `TCP_NODELAY` on for this process's TCP sockets connected to a
/// peer on `port`; how many it changed.
pub(crate) fn set_on_sockets_to(port: u16) -> usize {
    let mut changed = 0;
    each_socket_to(port, |sock| {
        if sock.tcp_nodelay().is_ok_and(|on| !on) && sock.set_tcp_nodelay(true).is_ok() {
            changed += 1;
        }
    });
    changed
}

/// Whether this platform lets [`set_on_sockets_to`] find sqlx's sockets.
pub(crate) const SUPPORTED: bool = cfg!(target_os = "linux");

/// For each TCP socket of this process connected to a peer on `port`,
/// whether it has `TCP_NODELAY` (tests).
#[cfg(test)]
pub(crate) fn sockets_to(port: u16) -> Vec<bool> {
    let mut out = Vec::new();
    each_socket_to(port, |sock| out.push(sock.tcp_nodelay().unwrap_or(false)));
    out
}

/// Calls `f` with each TCP socket of this process whose peer is on
/// `port`.
#[cfg(target_os = "linux")]
fn each_socket_to(port: u16, mut f: impl FnMut(socket2::SockRef<'_>)) {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: the descriptor is only queried and given a socket option,
        // never read, written or closed. If another thread closes it and the
        // number is reused meanwhile, the calls reach that other descriptor:
        // a socket that is not connected to the server is left alone, and a
        // non-socket refuses them.
        #[allow(unsafe_code)]
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let to_server = sock
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|peer| peer.port() == port);
        if to_server {
            f(sock);
        }
    }
}

/// Off Linux there is no `/proc/self/fd`: nothing.
#[cfg(not(target_os = "linux"))]
fn each_socket_to(_port: u16, _f: impl FnMut(socket2::SockRef<'_>)) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use sea_orm::ConnectionTrait;

    /// Every connection of a pool to the server has `TCP_NODELAY`: without
    /// it a large statement waits 40 ms for a delayed acknowledgement.
    async fn every_connection_has_no_delay(var: &str) {
        let Ok(url) = std::env::var(var) else {
            eprintln!("skipped: {var} is not set (no server to connect to)");
            return;
        };
        let db = crate::db::Db::connect(&url, 4).await.expect("connect");
        // Four at once, so the pool opens several connections.
        let reads = (0..4).map(|_| {
            db.run(|c| async move {
                c.execute_unprepared("SELECT 1").await?;
                Ok(())
            })
        });
        for r in futures::future::join_all(reads).await {
            r.expect("read");
        }
        let (host, port) = crate::db::tcp_server_of(&url).expect("a TCP server");
        let sockets = super::sockets_to(port);
        assert!(!sockets.is_empty(), "no socket to {host}:{port} found");
        assert!(
            sockets.iter().all(|on| *on),
            "TCP_NODELAY per connection to {host}:{port}: {sockets:?}"
        );
        db.close().await;
    }

    #[test]
    fn postgres_connections_have_no_delay() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(every_connection_has_no_delay("BATON_TEST_POSTGRES_URL"));
    }

    #[test]
    fn mysql_connections_have_no_delay() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(every_connection_has_no_delay("BATON_TEST_MYSQL_URL"));
    }
}
