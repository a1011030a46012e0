//! A `baton serve` child process: started with an environment, found by
//! the address it prints, stopped by a signal. Used by `baton bench
//! failover` and by the crash and cluster tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A running `baton serve` process; killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    /// The child process.
    pub child: Child,
    /// Its HTTP base URL.
    pub url: String,
}

impl NodeProcess {
    /// Starts `exe serve` with `env` (on a free loopback port unless `env`
    /// sets `BATON_HTTP__LISTEN`) and waits until it listens. Its log lines
    /// are echoed to stderr when `echo` is set.
    pub fn spawn(exe: &Path, env: &[(&str, String)], echo: bool) -> std::io::Result<NodeProcess> {
        Self::spawn_with(exe, &[], env, echo)
    }

    /// [`NodeProcess::spawn`] with more arguments for `serve` (`--demo`).
    pub fn spawn_with(
        exe: &Path,
        args: &[&str],
        env: &[(&str, String)],
        echo: bool,
    ) -> std::io::Result<NodeProcess> {
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .args(args)
            .env("BATON_HTTP__LISTEN", "127.0.0.1:0")
            .env("BATON_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
                }
                if echo {
                    eprintln!("[baton] {line}");
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => Ok(NodeProcess { child, url }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait()?;
                Err(std::io::Error::other(format!(
                    "baton serve did not start listening ({status})"
                )))
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, ...).
    pub fn signal(&self, name: &str) -> bool {
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// SIGKILL, as a crash; waits for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as a planned stop; waits for the exit.
    pub fn terminate(&mut self) -> std::io::Result<ExitStatus> {
        self.signal("TERM");
        self.child.wait()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// libfaketime's multithreaded library (`libfaketimeMT.so.1`), wherever
/// this system's packages put it: `BATON_FAKETIME_LIB` if set, else
/// `<libdir>/faketime/` or `<libdir>/<multiarch triple>/faketime/` under
/// the usual library directories. `None` when it is not installed.
pub fn faketime_lib() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    const NAME: &str = "libfaketimeMT.so.1";
    if let Some(p) = std::env::var_os("BATON_FAKETIME_LIB") {
        let p = PathBuf::from(p);
        return p.exists().then_some(p);
    }
    for root in ["/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib", "/lib64"] {
        let direct = Path::new(root).join("faketime").join(NAME);
        if direct.exists() {
            return Some(direct);
        }
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("faketime").join(NAME))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        if let Some(p) = found.into_iter().next() {
            return Some(p);
        }
    }
    None
}
