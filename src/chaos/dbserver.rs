//! A private database server for a chaos run, so the fault schedule can
//! crash and restart it without touching a server other tests share:
//! PostgreSQL (`initdb` + `pg_ctl`, as the `postgres` user when run as
//! root) or MariaDB (`mariadb-install-db` + `mariadbd`), each in its own
//! temporary directory on its own loopback port. A crash is an immediate
//! stop (PostgreSQL's `-m immediate`, kill -9 of `mariadbd`): the server
//! recovers from its log on the next start, as after a power cut.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Which engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// PostgreSQL.
    Postgres,
    /// MariaDB.
    Mariadb,
}

impl std::str::FromStr for ServerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "postgres" | "postgresql" => Ok(ServerKind::Postgres),
            "mariadb" | "mysql" => Ok(ServerKind::Mariadb),
            other => Err(format!(
                "unknown database server `{other}` (postgres or mariadb)"
            )),
        }
    }
}

/// A running (or crashed) private server.
pub struct DbServer {
    kind: ServerKind,
    dir: PathBuf,
    port: u16,
    /// `mariadbd` (PostgreSQL runs detached under `pg_ctl`).
    child: Option<Child>,
    /// The URL of its scratch database.
    pub url: String,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// PostgreSQL's binaries: `pg_config --bindir`, else Debian's newest
/// `/usr/lib/postgresql/*/bin`.
pub(crate) fn pg_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// Whether this machine can run a private server of `kind` (for tests
/// that skip with a reason where it cannot).
pub fn available(kind: ServerKind) -> Result<(), String> {
    match kind {
        ServerKind::Postgres => pg_bindir()
            .map(|_| ())
            .ok_or_else(|| "no PostgreSQL binaries (initdb) on this machine".to_owned()),
        ServerKind::Mariadb => ["mariadb-install-db", "mariadbd"]
            .iter()
            .find(|b| which(b).is_none())
            .map_or(Ok(()), |b| Err(format!("no `{b}` on this machine"))),
    }
}

pub(crate) fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(bin))
        .find(|p| p.exists())
}

/// Runs `cmd` (as the `postgres` user when this process is root, since
/// PostgreSQL refuses to run as root); fails naming it and its output.
fn run_pg(bin: &Path, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {}: {}{}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl DbServer {
    /// Creates and starts a fresh server of `kind`.
    pub async fn start(kind: ServerKind) -> anyhow::Result<DbServer> {
        available(kind).map_err(anyhow::Error::msg)?;
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "baton-chaos-{}-{}-{port}",
            match kind {
                ServerKind::Postgres => "pg",
                ServerKind::Mariadb => "mariadb",
            },
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let url = match kind {
            ServerKind::Postgres => format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            ServerKind::Mariadb => format!("mysql://root@127.0.0.1:{port}/chaos"),
        };
        let mut server = DbServer {
            kind,
            dir,
            port,
            child: None,
            url,
        };
        match kind {
            ServerKind::Postgres => {
                if is_root() {
                    let ok = Command::new("chown")
                        .args(["postgres:", &server.dir.display().to_string()])
                        .status()?
                        .success();
                    if !ok {
                        bail!("chown postgres {}", server.dir.display());
                    }
                }
                let bin = pg_bindir().context("initdb")?;
                let data = server.dir.join("data").display().to_string();
                run_pg(
                    &bin.join("initdb"),
                    &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
                )?;
            }
            ServerKind::Mariadb => {
                let data = server.dir.join("data").display().to_string();
                let out = Command::new(which("mariadb-install-db").context("mariadb-install-db")?)
                    .args([
                        "--no-defaults",
                        &format!("--datadir={data}"),
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db",
                        "--user=root",
                    ])
                    .stdin(Stdio::null())
                    .output()?;
                if !out.status.success() {
                    bail!(
                        "mariadb-install-db: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        server.start_again().await?;
        if kind == ServerKind::Mariadb {
            let admin = format!("mysql://root@127.0.0.1:{port}/mysql");
            let db = sea_orm::Database::connect(admin.as_str()).await?;
            use sea_orm::ConnectionTrait;
            db.execute_unprepared("CREATE DATABASE chaos").await?;
            db.close().await?;
        }
        Ok(server)
    }

    /// Starts the server (again) and waits until it takes connections.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let data = self.dir.join("data").display().to_string();
        match self.kind {
            ServerKind::Postgres => {
                let bin = pg_bindir().context("pg_ctl")?;
                let opts = format!(
                    "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                    self.port,
                    self.dir.display()
                );
                let log = self.dir.join("log").display().to_string();
                run_pg(
                    &bin.join("pg_ctl"),
                    &[
                        "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start",
                    ],
                )?;
            }
            ServerKind::Mariadb => {
                let d = self.dir.display();
                let child = Command::new(which("mariadbd").context("mariadbd")?)
                    .args([
                        "--no-defaults".to_owned(),
                        format!("--datadir={data}"),
                        format!("--port={}", self.port),
                        "--bind-address=127.0.0.1".to_owned(),
                        format!("--socket={d}/sock"),
                        format!("--pid-file={d}/pid"),
                        format!("--log-error={d}/err.log"),
                        "--user=root".to_owned(),
                        "--skip-log-bin".to_owned(),
                        "--max-connections=300".to_owned(),
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting mariadbd")?;
                self.child = Some(child);
                let began = Instant::now();
                loop {
                    if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                        break;
                    }
                    if let Some(c) = self.child.as_mut() {
                        if let Ok(Some(status)) = c.try_wait() {
                            bail!("mariadbd exited at start ({status}); see {d}/err.log");
                        }
                    }
                    if began.elapsed() > Duration::from_secs(60) {
                        bail!("mariadbd did not listen within 60 s; see {d}/err.log");
                    }
                    actix_rt::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Ok(())
    }

    /// Crashes the server: every connection drops, nothing is flushed
    /// beyond what it already committed.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        match self.kind {
            ServerKind::Postgres => {
                let bin = pg_bindir().context("pg_ctl")?;
                let data = self.dir.join("data").display().to_string();
                run_pg(
                    &bin.join("pg_ctl"),
                    &["-D", &data, "-m", "immediate", "stop"],
                )
            }
            ServerKind::Mariadb => {
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                Ok(())
            }
        }
    }
}

impl Drop for DbServer {
    fn drop(&mut self) {
        let _ = self.crash();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
