//! A PostgreSQL high-availability cluster on loopback, deployed the way
//! Patroni is deployed in production: one `etcd` member as the DCS, two or
//! more PostgreSQL members each managed by its own `patroni` (own ports
//! and data directories, run as the `postgres` user), and HAProxy in TCP
//! mode routing to the member whose Patroni REST `/primary` answers 200.
//! Baton nodes connect to HAProxy only. For the database-failover tests
//! (issue 13): a switchover, and a kill -9 of the leader's Patroni and
//! postmaster.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::dbserver::{free_port, pg_bindir, which};

/// Whether this machine has what a Patroni cluster needs, or what is missing.
pub fn patroni_available() -> Result<(), String> {
    for bin in ["patroni", "patronictl", "etcd", "haproxy"] {
        if which(bin).is_none() {
            return Err(format!(
                "no `{bin}` on this machine (Debian: patroni, etcd-server, haproxy)"
            ));
        }
    }
    if pg_bindir().is_none() {
        return Err("no PostgreSQL server binaries (initdb)".into());
    }
    if postgres_ids().is_none() {
        return Err("no `postgres` user to run PostgreSQL as".into());
    }
    Ok(())
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// One PostgreSQL member and its Patroni.
struct Member {
    name: String,
    rest: u16,
    pg: u16,
    config: PathBuf,
    data: PathBuf,
    patroni: Option<Child>,
}

/// A running Patroni cluster behind HAProxy. Everything is killed and its
/// directory removed when dropped.
pub struct PatroniCluster {
    dir: PathBuf,
    etcd: Option<Child>,
    haproxy: Option<Child>,
    members: Vec<Member>,
    /// The URL Baton connects to: HAProxy, database `baton`.
    pub url: String,
}

/// `GET path` on a member's Patroni REST API: the status code, if it answered.
fn rest_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

async fn wait_for(
    what: &str,
    deadline: Duration,
    mut ok: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let began = Instant::now();
    while !ok() {
        if began.elapsed() > deadline {
            bail!("{what}: not within {deadline:?}");
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

impl PatroniCluster {
    /// Starts etcd, `members` PostgreSQL members under Patroni (the first
    /// bootstraps and leads; `synchronous`: Patroni's `synchronous_mode`;
    /// without it `maximum_lag_on_failover` is 64 MB, so that a replica
    /// left behind by [`stall_replication`](Self::stall_replication) is
    /// still promoted, as a lagging asynchronous replica is in production)
    /// and HAProxy, waits until the leader takes writes through HAProxy
    /// and every replica streams, and creates the database `baton`.
    pub async fn start(members: usize, synchronous: bool) -> anyhow::Result<PatroniCluster> {
        patroni_available().map_err(anyhow::Error::msg)?;
        let (uid, gid) = postgres_ids().context("the postgres user")?;
        let bin = pg_bindir().context("PostgreSQL binaries")?;
        let dir = std::env::temp_dir().join(format!(
            "baton-patroni-{}-{}",
            std::process::id(),
            free_port()?
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (etcd_client, etcd_peer, haproxy_port) = (free_port()?, free_port()?, free_port()?);
        let mut cluster = PatroniCluster {
            dir: dir.clone(),
            etcd: None,
            haproxy: None,
            members: Vec::new(),
            url: format!("postgres://postgres@127.0.0.1:{haproxy_port}/baton"),
        };
        let spawn_as_postgres = |cmd: &mut Command, log: &Path| -> anyhow::Result<Child> {
            let out = std::fs::File::create(log)?;
            let _ = Command::new("chown")
                .args(["postgres:", &log.display().to_string()])
                .status();
            Ok(cmd
                .uid(uid)
                .gid(gid)
                .env("HOME", &dir)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()?)
        };
        for i in 1..=members {
            let (rest, pg) = (free_port()?, free_port()?);
            let name = format!("m{i}");
            let data = dir.join(&name);
            let config = dir.join(format!("{name}.yml"));
            std::fs::write(
                &config,
                format!(
                    r#"scope: baton
name: {name}
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
etcd3:
  hosts: 127.0.0.1:{etcd_client}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    maximum_lag_on_failover: {max_lag}
    synchronous_mode: {synchronous}
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 200
        wal_log_hints: "on"
  initdb:
    - encoding: UTF8
  pg_hba:
    - host replication replicator 127.0.0.1/32 trust
    - host all all 127.0.0.1/32 trust
    - local all all trust
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {data}
  bin_dir: {bin}
  pgpass: {dir}/pgpass-{name}
  authentication:
    replication:
      username: replicator
      password: replicator
    superuser:
      username: postgres
      password: postgres
  parameters:
    unix_socket_directories: {dir}
"#,
                    data = data.display(),
                    bin = bin.display(),
                    max_lag = if synchronous { 1 << 20 } else { 64 << 20 },
                    dir = dir.display(),
                ),
            )?;
            cluster.members.push(Member {
                name,
                rest,
                pg,
                config,
                data,
                patroni: None,
            });
        }
        let ok = Command::new("chown")
            .args(["-R", "postgres:", &dir.display().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("chown postgres {}", dir.display());
        }

        let mut etcd = Command::new(which("etcd").context("etcd")?);
        etcd.args([
            "--name",
            "e1",
            "--data-dir",
            &dir.join("etcd").display().to_string(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{etcd_client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{etcd_client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-cluster",
            &format!("e1=http://127.0.0.1:{etcd_peer}"),
            "--log-level",
            "warn",
        ]);
        cluster.etcd = Some(spawn_as_postgres(&mut etcd, &dir.join("etcd.log"))?);
        wait_for("etcd listens", Duration::from_secs(30), || {
            listening(etcd_client)
        })
        .await?;

        for i in 0..cluster.members.len() {
            let m = &cluster.members[i];
            let mut patroni = Command::new(which("patroni").context("patroni")?);
            patroni.arg(&m.config);
            let child = spawn_as_postgres(&mut patroni, &dir.join(format!("{}.log", m.name)))?;
            cluster.members[i].patroni = Some(child);
            let m = &cluster.members[i];
            if i == 0 {
                wait_for("the first member leads", Duration::from_secs(90), || {
                    rest_status(m.rest, "/primary") == Some(200)
                })
                .await
                .with_context(|| format!("see {}", dir.join("m1.log").display()))?;
            }
        }
        for m in &cluster.members[1..] {
            wait_for(
                &format!("{} streams from the leader", m.name),
                Duration::from_secs(90),
                || rest_status(m.rest, "/replica") == Some(200),
            )
            .await
            .with_context(|| format!("see {}", dir.join(format!("{}.log", m.name)).display()))?;
        }
        if synchronous {
            wait_for("a synchronous standby", Duration::from_secs(60), || {
                cluster
                    .members
                    .iter()
                    .any(|m| rest_status(m.rest, "/sync") == Some(200))
            })
            .await?;
        }

        let mut cfg = format!(
            "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30m\n  timeout server 30m\n  timeout check 1s\n\
             listen primary\n  bind 127.0.0.1:{haproxy_port}\n  option httpchk GET /primary\n  http-check expect status 200\n\
             \x20 default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions\n"
        );
        for m in &cluster.members {
            cfg.push_str(&format!(
                "  server {} 127.0.0.1:{} maxconn 300 check port {}\n",
                m.name, m.pg, m.rest
            ));
        }
        let haproxy_cfg = dir.join("haproxy.cfg");
        std::fs::write(&haproxy_cfg, cfg)?;
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        cluster.haproxy = Some(
            Command::new(which("haproxy").context("haproxy")?)
                .args(["-f", &haproxy_cfg.display().to_string(), "-db"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
        );
        wait_for("HAProxy listens", Duration::from_secs(30), || {
            listening(haproxy_port)
        })
        .await?;
        let admin = format!("postgres://postgres@127.0.0.1:{haproxy_port}/postgres");
        let began = Instant::now();
        loop {
            // HAProxy counts every member up until its checks say
            // otherwise: until then a connection may reach a replica
            // (read-only); try again.
            let created = async {
                use sea_orm::ConnectionTrait as _;
                let db = sea_orm::Database::connect(admin.as_str()).await?;
                let r = db.execute_unprepared("CREATE DATABASE baton").await;
                db.close().await?;
                r.map(|_| ())
            }
            .await;
            match created {
                Ok(()) => break,
                Err(e) if began.elapsed() > Duration::from_secs(30) => {
                    bail!("creating the database through HAProxy: {e}")
                }
                Err(_) => actix_rt::time::sleep(Duration::from_millis(300)).await,
            }
        }
        // One connection reaching the leader does not mean the next will:
        // HAProxy balances over every member it still counts up. Wait until
        // twice as many fresh connections in a row as there are members
        // all reach a server out of recovery, so that a node started now
        // does not run its migrations on a read-only replica.
        let mut in_a_row = 0;
        while in_a_row < 2 * cluster.members.len() {
            let recovering = async {
                use sea_orm::ConnectionTrait as _;
                let db = sea_orm::Database::connect(admin.as_str()).await?;
                let row = db
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Postgres,
                        "SELECT pg_is_in_recovery()",
                    ))
                    .await;
                db.close().await?;
                match row? {
                    Some(r) => r.try_get_by_index::<bool>(0),
                    None => Ok(true),
                }
            }
            .await;
            match recovering {
                Ok(false) => in_a_row += 1,
                other => {
                    if began.elapsed() > Duration::from_secs(60) {
                        bail!("HAProxy still routes to a replica: {other:?}");
                    }
                    in_a_row = 0;
                    actix_rt::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(cluster)
    }

    /// The member that leads now (its REST `/primary` answers 200).
    pub fn leader(&self) -> Option<String> {
        self.members
            .iter()
            .find(|m| rest_status(m.rest, "/primary") == Some(200))
            .map(|m| m.name.clone())
    }

    /// Waits until some member leads and HAProxy routes to it; returns it.
    pub async fn wait_leader(&self, deadline: Duration) -> anyhow::Result<String> {
        let mut found = None;
        wait_for("a leader", deadline, || {
            found = self.leader();
            found.is_some()
        })
        .await?;
        Ok(found.unwrap_or_default())
    }

    /// Waits until a replica is the synchronous standby (with
    /// `synchronous_mode`, Patroni promotes no other on a failover: until
    /// then a dead leader stays dead).
    pub async fn wait_sync(&self, deadline: Duration) -> anyhow::Result<String> {
        let mut found = None;
        wait_for("a synchronous standby", deadline, || {
            found = self
                .members
                .iter()
                .find(|m| rest_status(m.rest, "/sync") == Some(200))
                .map(|m| m.name.clone());
            found.is_some()
        })
        .await?;
        Ok(found.unwrap_or_default())
    }

    /// `patronictl switchover` from the current leader to another member
    /// (Patroni demotes the leader cleanly, then promotes the candidate).
    pub async fn switchover(&self) -> anyhow::Result<(String, String)> {
        let leader = self.wait_leader(Duration::from_secs(60)).await?;
        let candidate = self
            .members
            .iter()
            .find(|m| m.name != leader)
            .context("a second member")?;
        let out = Command::new(which("patronictl").context("patronictl")?)
            .env("HOME", &self.dir)
            .arg("-c")
            .arg(&candidate.config)
            .args([
                "switchover",
                "--leader",
                &leader,
                "--candidate",
                &candidate.name,
                "--force",
            ])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "patronictl switchover: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok((leader, candidate.name.clone()))
    }

    /// Kills the leader's Patroni and its postmaster (and the postmaster's
    /// children) with SIGKILL, as a machine that dies; returns its name.
    /// Patroni's leader key expires after its `ttl` (10 s) and a replica
    /// is promoted.
    pub async fn kill_leader(&mut self) -> anyhow::Result<String> {
        let leader = self.wait_leader(Duration::from_secs(60)).await?;
        let m = self
            .members
            .iter_mut()
            .find(|m| m.name == leader)
            .context("the leader")?;
        if let Some(mut p) = m.patroni.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        kill_postmaster(&m.data);
        Ok(leader)
    }

    /// Stops the leader's WAL senders (SIGSTOP), as a replication link
    /// that stalls: from now on its replicas receive nothing more. With
    /// asynchronous replication the leader keeps committing; with
    /// `synchronous_mode` every commit waits for the synchronous standby
    /// and so never returns. Returns the stopped pids. Kill the leader to
    /// end it (SIGKILL takes stopped processes too).
    pub async fn stall_replication(&self) -> anyhow::Result<Vec<u32>> {
        use sea_orm::ConnectionTrait as _;
        let leader = self.wait_leader(Duration::from_secs(60)).await?;
        let url = self.member_url(&leader).context("the leader's url")?;
        let db = sea_orm::Database::connect(url.as_str()).await?;
        let rows = db
            .query_all_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT pid FROM pg_stat_replication",
            ))
            .await?;
        db.close().await?;
        let pids: Vec<u32> = rows
            .iter()
            .map(|r| r.try_get_by_index::<i32>(0).map(|p| p as u32))
            .collect::<Result<_, _>>()?;
        if pids.is_empty() {
            bail!("{leader} has no WAL sender to stall");
        }
        for pid in &pids {
            let ok = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status()?
                .success();
            if !ok {
                bail!("kill -STOP {pid} (a WAL sender of {leader})");
            }
        }
        Ok(pids)
    }

    /// Starts a killed member's Patroni again (it rejoins as a replica,
    /// rewinding if needed).
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let (uid, gid) = postgres_ids().context("the postgres user")?;
        let m = self
            .members
            .iter_mut()
            .find(|m| m.name == name)
            .context("member")?;
        if m.patroni.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        m.patroni = Some(
            Command::new(which("patroni").context("patroni")?)
                .arg(&m.config)
                .uid(uid)
                .gid(gid)
                .env("HOME", &self.dir)
                .current_dir(&self.dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
        );
        Ok(())
    }

    /// The member's PostgreSQL port, for direct reads (not through HAProxy).
    pub fn member_url(&self, name: &str) -> Option<String> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .map(|m| format!("postgres://postgres@127.0.0.1:{}/baton", m.pg))
    }

    /// The directory holding every log (`m1.log`, `haproxy.log`, ...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// SIGKILLs a data directory's postmaster and its children, if it still
/// runs. `postmaster.pid` outlives a postmaster killed with SIGKILL, and on
/// a busy machine its number soon belongs to another process (pids wrap at
/// 32,768 here): a stale file once had this kill a test runner's shell. So
/// the pid is killed only while it is a process whose working directory is
/// that data directory (a postmaster runs in its own).
fn kill_postmaster(data: &Path) {
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = text.lines().next().map(str::trim).filter(|p| !p.is_empty()) else {
        return;
    };
    if !runs_in(pid, data) {
        return;
    }
    // Its children first, while they are still its children: once it is
    // dead they belong to init, and a stopped one (`stall_replication`)
    // would never notice and stay behind. Frozen meanwhile, it forks no
    // new one.
    let _ = Command::new("kill").args(["-STOP", pid]).status();
    let _ = Command::new("pkill").args(["-9", "-P", pid]).status();
    let _ = Command::new("kill").args(["-9", pid]).status();
}

/// Whether process `pid` is alive with `dir` as its working directory.
fn runs_in(pid: &str, dir: &Path) -> bool {
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
        return false;
    };
    let want = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    cwd == want
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        if let Some(mut h) = self.haproxy.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        for m in &mut self.members {
            if let Some(mut p) = m.patroni.take() {
                let _ = p.kill();
                let _ = p.wait();
            }
            kill_postmaster(&m.data);
        }
        if let Some(mut e) = self.etcd.take() {
            let _ = e.kill();
            let _ = e.wait();
        }
        if std::env::var_os("BATON_KEEP_HA").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether this machine can run a Galera cluster, or what is missing.
pub fn galera_available() -> Result<(), String> {
    for bin in ["mariadbd", "mariadb-install-db", "rsync"] {
        if which(bin).is_none() {
            return Err(format!("no `{bin}` on this machine"));
        }
    }
    if !Path::new(GALERA).exists() {
        return Err(format!("no {GALERA} (Debian: galera-4)"));
    }
    if Command::new("id")
        .args(["-u", "mysql"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        return Err(
            "no `mysql` user to run mariadbd as (rsync state transfer refuses root)".into(),
        );
    }
    Ok(())
}

const GALERA: &str = "/usr/lib/galera/libgalera_smm.so";

/// One `mariadbd` member of a Galera cluster.
struct GaleraMember {
    port: u16,
    gcomm: u16,
    ist: u16,
    sst: u16,
    data: PathBuf,
    child: Option<Child>,
}

/// A MariaDB Galera cluster on loopback: `mariadbd` members with
/// `galera-4`, each on its own ports and data directory, `rsync` state
/// transfer, run as the `mysql` user. Killed and removed when dropped.
pub struct GaleraCluster {
    dir: PathBuf,
    members: Vec<GaleraMember>,
    /// `evs.suspect_timeout` as configured (Galera's default is 5 s).
    pub suspect_timeout: Duration,
}

impl GaleraCluster {
    /// Bootstraps the first member, joins the others, waits until all are
    /// `Synced`, and creates the database `baton`.
    pub async fn start(members: usize, suspect_timeout: Duration) -> anyhow::Result<GaleraCluster> {
        galera_available().map_err(anyhow::Error::msg)?;
        let dir = std::env::temp_dir().join(format!(
            "baton-galera-{}-{}",
            std::process::id(),
            free_port()?
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut cluster = GaleraCluster {
            dir: dir.clone(),
            members: Vec::new(),
            suspect_timeout,
        };
        for i in 1..=members {
            let data = dir.join(format!("g{i}"));
            let out = Command::new(which("mariadb-install-db").context("mariadb-install-db")?)
                .args([
                    "--no-defaults",
                    &format!("--datadir={}", data.display()),
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--user=mysql",
                ])
                .stdin(Stdio::null())
                .output()?;
            if !out.status.success() {
                bail!(
                    "mariadb-install-db: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            cluster.members.push(GaleraMember {
                port: free_port()?,
                gcomm: free_port()?,
                ist: free_port()?,
                sst: free_port()?,
                data,
                child: None,
            });
        }
        let ok = Command::new("chown")
            .args(["-R", "mysql:", &dir.display().to_string()])
            .status()?
            .success();
        if !ok {
            bail!("chown mysql {}", dir.display());
        }
        for i in 0..members {
            cluster.spawn(i, i == 0)?;
            let port = cluster.members[i].port;
            let url = format!("mysql://root@127.0.0.1:{port}/mysql");
            let began = Instant::now();
            loop {
                if let Ok(true) = synced(&url).await {
                    break;
                }
                if began.elapsed() > Duration::from_secs(120) {
                    bail!(
                        "member g{} not synced within 120 s; see {}",
                        i + 1,
                        dir.join(format!("g{}.err", i + 1)).display()
                    );
                }
                actix_rt::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let db =
            sea_orm::Database::connect(cluster.url(0).replace("/baton", "/mysql").as_str()).await?;
        use sea_orm::ConnectionTrait as _;
        db.execute_unprepared("CREATE DATABASE baton").await?;
        db.close().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, bootstrap: bool) -> anyhow::Result<()> {
        let peers: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.gcomm))
            .collect();
        let m = &self.members[i];
        let n = i + 1;
        let d = self.dir.display();
        let mut args = vec![
            "--no-defaults".to_owned(),
            format!("--datadir={}", m.data.display()),
            format!("--port={}", m.port),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={d}/g{n}.sock"),
            format!("--pid-file={d}/g{n}.pid"),
            format!("--log-error={d}/g{n}.err"),
            "--user=mysql".into(),
            "--max-connections=300".into(),
            "--binlog_format=ROW".into(),
            "--default_storage_engine=InnoDB".into(),
            "--innodb_autoinc_lock_mode=2".into(),
            "--wsrep_on=ON".into(),
            format!("--wsrep_provider={GALERA}"),
            "--wsrep_cluster_name=baton".into(),
            format!(
                "--wsrep_cluster_address=gcomm://{}",
                if bootstrap { String::new() } else { peers.join(",") }
            ),
            format!("--wsrep_node_address=127.0.0.1:{}", m.gcomm),
            format!("--wsrep_node_name=g{n}"),
            format!(
                "--wsrep_provider_options=gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};gcache.size=64M;evs.suspect_timeout=PT{}S",
                m.gcomm,
                m.ist,
                self.suspect_timeout.as_secs_f64()
            ),
            "--wsrep_sst_method=rsync".into(),
            format!("--wsrep_sst_receive_address=127.0.0.1:{}", m.sst),
        ];
        if bootstrap {
            args.push("--wsrep-new-cluster".into());
        }
        let child = Command::new(which("mariadbd").context("mariadbd")?)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mariadbd")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Member `i`'s URL (database `baton`).
    pub fn url(&self, i: usize) -> String {
        format!("mysql://root@127.0.0.1:{}/baton", self.members[i].port)
    }

    /// Kills member `i` with SIGKILL, as a machine that dies. The others
    /// stall writes until they evict it (`evs.suspect_timeout`).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again; it rejoins the running cluster (IST or SST).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.members[i].child.is_some() {
            return Ok(());
        }
        self.spawn(i, false)?;
        let url = format!("mysql://root@127.0.0.1:{}/mysql", self.members[i].port);
        let began = Instant::now();
        while !matches!(synced(&url).await, Ok(true)) {
            if began.elapsed() > Duration::from_secs(120) {
                bail!("member g{} did not rejoin within 120 s", i + 1);
            }
            actix_rt::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(())
    }

    /// The directory holding every member's error log (`g1.err`, ...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Whether the member at `url` is `Synced` (takes writes).
async fn synced(url: &str) -> anyhow::Result<bool> {
    use sea_orm::ConnectionTrait as _;
    let db = sea_orm::Database::connect(url).await?;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::MySql,
            "SHOW STATUS LIKE 'wsrep_local_state_comment'",
        ))
        .await?;
    let _ = db.close().await;
    Ok(row
        .and_then(|r| r.try_get_by_index::<String>(1).ok())
        .is_some_and(|v| v == "Synced"))
}

impl Drop for GaleraCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::env::var_os("BATON_KEEP_HA").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod pid_tests {
    use super::runs_in;

    /// Only a live process in that very directory counts: a stale pid
    /// file's number, reused by some other process, is left alone.
    #[test]
    fn a_pid_is_killed_only_while_it_runs_in_the_data_directory() {
        let me = std::process::id().to_string();
        let here = std::env::current_dir().expect("cwd");
        assert!(runs_in(&me, &here));
        let elsewhere = std::env::temp_dir().join(format!("not-a-data-dir-{me}"));
        std::fs::create_dir_all(&elsewhere).expect("dir");
        assert!(!runs_in(&me, &elsewhere));
        assert!(!runs_in("", &here));
        assert!(!runs_in("-1", &here));
        assert!(!runs_in("99999999", &here));
        let _ = std::fs::remove_dir(&elsewhere);
    }
}
