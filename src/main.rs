//! The `baton` command: `serve`, `migrate`, the client verbs, and `bench`.
//!
//! Exit codes: 0 success; 1 an execution waited for did not complete, or
//! any other failure; 2 a usage error (clap's, or a malformed value such
//! as `--input x`); 3 the server could not be reached or refused the
//! request.

mod operator;

/// The `baton` binary's allocator (an embedder keeps its own): glibc's
/// malloc keeps what each thread freed in that thread's arena, and a node
/// that parked 100,000 executions on PostgreSQL held 165 MB of which most
/// was freed memory; mimalloc returns it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use baton::bench::{self, BenchOptions};
use baton::client::{cluster_table, Client, ClientError};
use baton::{Config, Node};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "A clustered, durable workflow runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node until SIGINT/SIGTERM.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Import the example workflows (examples/workflows/, built into
        /// the binary) that are not stored yet.
        #[arg(long)]
        demo: bool,
    },
    /// Apply the schema migrations and exit.
    Migrate(MigrateArgs),
    /// Workflow definitions and executions (HTTP client).
    Workflow {
        #[command(subcommand)]
        command: WorkflowCommand,
    },
    /// Executions: search, show, logs, cancel, signal, answer, resume,
    /// delete (HTTP client).
    Execution {
        #[command(subcommand)]
        command: operator::ExecutionCommand,
    },
    /// The cluster (HTTP client).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Print a shell completion script: `baton completions bash >
    /// /etc/bash_completion.d/baton`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Run a cluster of real nodes under a generated workload and a seeded
    /// fault schedule; check the history (exit 1 on any violation).
    Chaos {
        /// Database URL (a scratch database); default: a fresh SQLite file.
        #[arg(long, conflicts_with = "server")]
        database_url: Option<String>,
        /// Run a private database server (`postgres` or `mariadb`) in a
        /// temporary directory on its own port, so database restarts can
        /// be among the faults.
        #[arg(long)]
        server: Option<baton::chaos::dbserver::ServerKind>,
        /// Reproduces a run; default: one drawn from the clock (printed).
        #[arg(long)]
        seed: Option<u64>,
        /// How many faults, drawn at random (unless a mix is given).
        #[arg(long, default_value_t = 20)]
        faults: usize,
        /// Exactly this many kill -9 (and restart); with the other mix options, replaces --faults.
        #[arg(long)]
        kills: Option<usize>,
        /// Exactly this many SIGSTOP past the failover timeout, then SIGCONT.
        #[arg(long)]
        pauses: Option<usize>,
        /// Exactly this many SIGTERM drains (and restart).
        #[arg(long)]
        terms: Option<usize>,
        /// Exactly this many connection cuts (servers only).
        #[arg(long)]
        cuts: Option<usize>,
        /// Exactly this many connection stalls (servers only).
        #[arg(long)]
        stalls: Option<usize>,
        /// Exactly this many database server crash-restarts (with --server only).
        #[arg(long)]
        db_restarts: Option<usize>,
        /// Run the last node with its wall clock this many seconds off (libfaketime).
        #[arg(long, allow_hyphen_values = true)]
        skew_secs: Option<i64>,
        /// How many workflows.
        #[arg(long, default_value_t = 60)]
        workflows: usize,
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// `cluster.active_nodes`.
        #[arg(long, default_value_t = 1)]
        active_nodes: u32,
        /// `cluster.heartbeat_interval_ms`.
        #[arg(long, default_value_t = 200)]
        interval_ms: u64,
        /// `cluster.failover_heartbeats`.
        #[arg(long, default_value_t = 5)]
        heartbeats: u32,
        /// Echo the nodes' log lines.
        #[arg(long)]
        echo: bool,
    },
    /// Measure checkpointed items per second and item latency
    /// (`baton bench failover` for the cluster benchmarks).
    Bench {
        #[command(subcommand)]
        scenario: Option<BenchScenario>,
        #[command(flatten)]
        args: BenchArgs,
    },
}

#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides http.listen.
    #[arg(long)]
    listen: Option<String>,
    /// Overrides database.url.
    #[arg(long)]
    database_url: Option<String>,
    /// Overrides node.id.
    #[arg(long)]
    node_id: Option<String>,
}

#[derive(Args)]
struct MigrateArgs {
    /// TOML configuration file (its `database.url` is used).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides database.url.
    #[arg(long)]
    database_url: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut overrides = Vec::new();
        if let Some(v) = &self.listen {
            overrides.push(("http.listen".to_owned(), format!("{v:?}")));
        }
        if let Some(v) = &self.database_url {
            overrides.push(("database.url".to_owned(), format!("{v:?}")));
        }
        if let Some(v) = &self.node_id {
            overrides.push(("node.id".to_owned(), format!("{v:?}")));
        }
        Ok(Config::load(
            self.config.as_deref(),
            std::env::vars(),
            &overrides,
        )?)
    }
}

#[derive(Args)]
struct ClientArgs {
    /// The node's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8280", env = "BATON_SERVER")]
    server: String,
    /// A bearer token.
    #[arg(long, env = "BATON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of CA certificates to trust for an `https://` server,
    /// besides the system's roots.
    #[arg(long, env = "BATON_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<Client> {
        match &self.ca_cert {
            None => Ok(Client::new(&self.server, self.token.clone())),
            Some(ca) => Client::with_ca(&self.server, self.token.clone(), ca)
                .map_err(|e| Usage(e.to_string()).into()),
        }
    }
}

/// A malformed value on the command line (exit 2).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The execution waited for did not complete (exit 1).
#[derive(Debug)]
struct Ended(String);

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Ended {}

/// The exit code of a failed command (see the module documentation).
fn exit_code(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.downcast_ref::<Usage>().is_some()) {
        2
    } else if e.chain().any(|c| c.downcast_ref::<ClientError>().is_some()) {
        3
    } else {
        1
    }
}

#[derive(Subcommand)]
enum WorkflowCommand {
    /// Import a definition file (JSON or YAML).
    Import {
        /// The definition file: `.json`, or `.yaml`/`.yml`.
        file: PathBuf,
        /// Replace the stored definition of the same id (a new version,
        /// through its ETag) instead of refusing with 409.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start an execution.
    Run {
        /// The workflow's id (`baton workflow list` shows them).
        id: String,
        /// An input, `name=value`; the value is read as JSON when it
        /// parses (`n=7` is a number, `ok=true` a boolean), else as text.
        #[arg(long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// An input whose value is always text (`--input-str code=042`).
        #[arg(long = "input-str", value_name = "NAME=VALUE")]
        text_inputs: Vec<String>,
        /// A caller-chosen execution id (repeating it starts nothing new).
        #[arg(long)]
        execution_id: Option<String>,
        #[command(flatten)]
        wait: operator::WaitArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List definitions.
    List {
        #[command(flatten)]
        output: operator::OutputArg,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Print the cluster's nodes as a table.
    Status {
        #[command(flatten)]
        output: operator::OutputArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print the recent cluster events (joins, failovers, fencings),
    /// newest first.
    Events {
        /// At most this many (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        #[command(flatten)]
        output: operator::OutputArg,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum BenchScenario {
    /// Park executions on signals (memory, delivery) and time many timers.
    Waits {
        /// Database URL (a scratch database); default: a fresh SQLite file.
        #[arg(long)]
        database_url: Option<String>,
        /// Executions parked on a signal.
        #[arg(long, default_value_t = 100_000)]
        parked: usize,
        /// Timers due at the same moment.
        #[arg(long, default_value_t = 10_000)]
        timers: usize,
        /// Executions written parked (half on a signal, half on a timer
        /// due in a day) straight into the database, then the node's CPU
        /// and memory measured over 10 s with nothing due; 0: skip.
        #[arg(long, default_value_t = 0)]
        idle_parked: usize,
        /// The node's `engine.max_running` (runs of new executions held at
        /// once); default: the configuration's default.
        #[arg(long)]
        max_running: Option<u32>,
        /// Deliver the parked executions' signals over HTTP from this many
        /// clients, each sending its share one after the other (0: all in
        /// one statement, the engine's wake and completion alone timed).
        #[arg(long, default_value_t = 0)]
        signal_clients: usize,
    },
    /// The database's own one-row commit rate, then Baton's benchmarks on
    /// the same database, as one table of ratios.
    Compare {
        /// Database URL (a scratch database: the bench writes to it);
        /// default: a fresh SQLite file.
        #[arg(long)]
        database_url: Option<String>,
        /// Workflows (of 5 tasks) per throughput run.
        #[arg(long, default_value_t = 3000)]
        workflows: u64,
        /// Executions parked on a signal for the waits measurements.
        #[arg(long, default_value_t = 20_000)]
        parked: usize,
        /// Timers due at the same moment.
        #[arg(long, default_value_t = 10_000)]
        timers: usize,
    },
    /// Time the execution search on a large table (a scratch database).
    Search {
        /// Database URL (a scratch database); default: a fresh SQLite file.
        #[arg(long)]
        database_url: Option<String>,
        /// Executions written before timing.
        #[arg(long, default_value_t = 100_000)]
        executions: usize,
        /// Timed requests per filter and page depth.
        #[arg(long, default_value_t = 50)]
        requests: usize,
    },
    /// Items per second with 1, then N active nodes of a local cluster of
    /// `baton serve` processes on one database, started over HTTP.
    Nodes {
        /// Database URL (a scratch database); default: a fresh SQLite file per run.
        #[arg(long)]
        database_url: Option<String>,
        /// Active node counts to run, one cluster each, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        nodes: Vec<u32>,
        /// Workflows (W) per run.
        #[arg(long, short = 'w', default_value_t = 3000)]
        workflows: u64,
        /// No-op task items per workflow (S).
        #[arg(long, short = 's', default_value_t = 5)]
        steps: u64,
        /// HTTP clients in all, spread evenly over the nodes.
        #[arg(long, short = 'c', default_value_t = 16)]
        clients: usize,
    },
    /// Kill -9 the active node of a local cluster again and again.
    Failover {
        /// Database URL (a scratch database); default: a fresh SQLite file.
        #[arg(long)]
        database_url: Option<String>,
        /// Heartbeat interval.
        #[arg(long, default_value_t = 200)]
        interval_ms: u64,
        /// Missed heartbeats before failover.
        #[arg(long, default_value_t = 5)]
        heartbeats: u32,
        /// How many kills.
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Interrupted executions for the rehydration measurement (0: skip).
        #[arg(long, default_value_t = 10_000)]
        rehydrate: usize,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// Database URL (a scratch database: the bench writes to it).
    #[arg(long, default_value = "sqlite:///tmp/baton-bench.db?mode=rwc")]
    database_url: String,
    /// Workflows (W).
    #[arg(long, short = 'w', default_value_t = 1000)]
    workflows: u64,
    /// No-op task items per workflow (S).
    #[arg(long, short = 's', default_value_t = 5)]
    steps: u64,
    /// Concurrent executions (C); with `--http`, concurrent HTTP clients.
    #[arg(long, short = 'c', default_value_t = 16)]
    concurrency: u64,
    /// Start the executions over HTTP from C clients (each POSTs its share
    /// one after the other) instead of C in flight through the supervisor.
    #[arg(long)]
    http: bool,
}

/// Logs to stderr: `BATON_LOG` (or `RUST_LOG`) filters; `BATON_LOG_FORMAT`
/// is `text` (the default) or `json` (one object per line); colour codes
/// only when stderr is a terminal.
fn init_tracing() -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let json = match std::env::var("BATON_LOG_FORMAT") {
        Err(_) => false,
        Ok(v) if v.eq_ignore_ascii_case("text") || v.is_empty() => false,
        Ok(v) if v.eq_ignore_ascii_case("json") => true,
        Ok(v) => bail!("BATON_LOG_FORMAT `{v}`: expected `text` or `json`"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

fn parse_inputs(pairs: &[String], text: &[String]) -> anyhow::Result<Value> {
    let mut map = serde_json::Map::new();
    for (p, as_text) in pairs
        .iter()
        .map(|p| (p, false))
        .chain(text.iter().map(|p| (p, true)))
    {
        let flag = if as_text { "--input-str" } else { "--input" };
        let Some((k, v)) = p.split_once('=') else {
            return Err(Usage(format!("{flag} `{p}`: expected NAME=VALUE")).into());
        };
        let value = if as_text {
            Value::String(v.to_owned())
        } else {
            serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()))
        };
        map.insert(k.to_owned(), value);
    }
    Ok(Value::Object(map))
}

/// A server's refusal of `--input` values, with the hint that a value read
/// as JSON (`who=42` is a number) can be sent as text with `--input-str`.
fn hint_inputs(e: anyhow::Error, inputs: &[String]) -> anyhow::Error {
    let text = e.to_string();
    let typed: Vec<&str> = inputs
        .iter()
        .filter_map(|p| p.split_once('='))
        .filter(|(k, v)| {
            serde_json::from_str::<Value>(v).is_ok_and(|j| !j.is_string())
                && text.contains(&format!("inputs.{k}: expected string"))
        })
        .map(|(k, _)| k)
        .collect();
    if typed.is_empty() {
        return e;
    }
    let names = typed.join(", ");
    e.context(format!(
        "--input reads a value as JSON when it parses, so {names} was not sent as text; \
         send it with --input-str NAME=VALUE (or quote it: --input {}='\"...\"')",
        typed[0]
    ))
}

/// An error and its causes, each once: a cause whose text its wrapper
/// already shows is not repeated.
fn report(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Writes to stdout; a reader that went away (`| head`) ends the command
/// quietly, as other Unix tools do, instead of a panic.
fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("baton: writing to stdout: {e}");
        std::process::exit(1);
    }
}

fn main() {
    let cli = Cli::parse();
    let result = actix_rt::System::new().block_on(run(cli));
    if let Err(e) = result {
        // The anyhow chain, each cause once (`{:#}` would print a cause
        // whose text its wrapper already includes a second time).
        eprintln!("baton: {}", report(&e));
        std::process::exit(exit_code(&e));
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, demo } => {
            let config = config.load()?;
            init_tracing()?;
            let node = Node::builder().config(config).start().await?;
            if node.url().is_empty() {
                eprintln!("baton: node {} running without an HTTP API", node.node_id());
            } else {
                eprintln!("baton: node {} listening on {}", node.node_id(), node.url());
            }
            if demo {
                for line in baton::demo::import_examples(&node).await {
                    eprintln!("baton: {line}");
                }
                eprintln!(
                    "baton: try `baton workflow run order --input n=7 --input who=ann --wait` \
                     (BATON_SERVER={} when not the default)",
                    node.url()
                );
            }
            wait_for_signal().await?;
            eprintln!("baton: stopping (graceful)");
            node.stop().await;
            Ok(())
        }
        Command::Migrate(args) => {
            let mut overrides = Vec::new();
            if let Some(v) = &args.database_url {
                overrides.push(("database.url".to_owned(), format!("{v:?}")));
            }
            let config = Config::load(args.config.as_deref(), std::env::vars(), &overrides)?;
            init_tracing()?;
            let store = baton_actors::Store::connect(&config.database.url, 2).await?;
            store.migrate().await.context("applying migrations")?;
            eprintln!("baton: migrations applied");
            Ok(())
        }
        Command::Workflow { command } => match command {
            WorkflowCommand::Import {
                file,
                replace,
                client,
            } => {
                let c = client.client()?;
                let v = if replace {
                    c.import_or_replace(&file).await?
                } else {
                    c.import(&file).await?
                };
                emit(&format!("{}\n", serde_json::to_string_pretty(&v)?));
                Ok(())
            }
            WorkflowCommand::Run {
                id,
                inputs,
                text_inputs,
                execution_id,
                wait,
                client,
            } => {
                let c = client.client()?;
                let timeout = wait.timeout()?;
                let v = c
                    .run(
                        &id,
                        parse_inputs(&inputs, &text_inputs)?,
                        execution_id,
                        false,
                    )
                    .await
                    .map_err(|e| hint_inputs(e, &inputs))?;
                if !wait.wait {
                    emit(&format!("{}\n", serde_json::to_string_pretty(&v)?));
                    return Ok(());
                }
                let eid = v
                    .get("id")
                    .and_then(Value::as_str)
                    .context("the answer has no execution id")?;
                operator::wait_and_report(&c, eid, timeout).await
            }
            WorkflowCommand::List { output, client } => {
                let c = client.client()?;
                let v = c.get("/api/workflows").await?;
                if output.is_json() {
                    emit(&format!("{}\n", serde_json::to_string_pretty(&v)?));
                    return Ok(());
                }
                for w in v.as_array().into_iter().flatten() {
                    emit(&format!(
                        "{:<32} v{:<5} {}\n",
                        w["id"].as_str().unwrap_or(""),
                        w["version"],
                        w["name"].as_str().unwrap_or("")
                    ));
                }
                Ok(())
            }
        },
        Command::Cluster {
            command: ClusterCommand::Status { output, client },
        } => {
            let v = client.client()?.get("/api/cluster").await?;
            if output.is_json() {
                emit(&format!("{}\n", serde_json::to_string_pretty(&v)?));
            } else {
                emit(&cluster_table(&v));
            }
            Ok(())
        }
        Command::Cluster {
            command:
                ClusterCommand::Events {
                    limit,
                    output,
                    client,
                },
        } => operator::cluster_events(&client.client()?, limit, output.output()).await,
        Command::Execution { command } => operator::execution(command).await,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "baton", &mut out);
            emit(&String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::Chaos {
            database_url,
            server,
            seed,
            faults,
            kills,
            pauses,
            terms,
            cuts,
            stalls,
            db_restarts,
            skew_secs,
            workflows,
            nodes,
            active_nodes,
            interval_ms,
            heartbeats,
            echo,
        } => {
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    % 1_000_000
            });
            eprintln!("baton chaos: seed {seed}");
            use baton::chaos::faults::FaultKind;
            let mix: Vec<(FaultKind, usize)> = [
                (FaultKind::Kill, kills),
                (FaultKind::Pause, pauses),
                (FaultKind::Term, terms),
                (FaultKind::Cut, cuts),
                (FaultKind::Stall, stalls),
                (FaultKind::DbRestart, db_restarts),
            ]
            .into_iter()
            .filter_map(|(k, n)| n.map(|n| (k, n)))
            .collect();
            if db_restarts.is_some() && server.is_none() {
                return Err(Usage(
                    "--db-restarts needs --server postgres|mariadb (a private server the run may crash)".into(),
                )
                .into());
            }
            let opts = baton::chaos::ChaosOptions {
                database_url,
                server,
                seed,
                faults,
                mix,
                skew_secs,
                workflows,
                nodes,
                active_nodes,
                interval_ms,
                heartbeats,
                exe: std::env::current_exe()?,
                echo,
            };
            let report = baton::chaos::run(&opts).await?;
            emit(&report.table);
            if !report.violations.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Bench {
            scenario:
                Some(BenchScenario::Failover {
                    database_url,
                    interval_ms,
                    heartbeats,
                    kills,
                    rehydrate,
                }),
            ..
        } => {
            let opts = bench::failover::FailoverOptions {
                database_url,
                interval_ms,
                heartbeats,
                kills,
                rehydrate,
                exe: std::env::current_exe()?,
            };
            bench::failover::run(&opts).await
        }
        Command::Bench {
            scenario:
                Some(BenchScenario::Nodes {
                    database_url,
                    nodes,
                    workflows,
                    steps,
                    clients,
                }),
            ..
        } => {
            let opts = bench::nodes::NodesOptions {
                database_url,
                nodes,
                workflows,
                steps,
                clients,
                exe: std::env::current_exe()?,
            };
            bench::nodes::run(&opts).await
        }
        Command::Bench {
            scenario:
                Some(BenchScenario::Search {
                    database_url,
                    executions,
                    requests,
                }),
            ..
        } => {
            let opts = bench::search::SearchOptions {
                database_url,
                executions,
                requests,
            };
            bench::search::run(&opts).await
        }
        Command::Bench {
            scenario:
                Some(BenchScenario::Waits {
                    database_url,
                    parked,
                    timers,
                    idle_parked,
                    max_running,
                    signal_clients,
                }),
            ..
        } => {
            if std::env::var_os("BATON_LOG").is_some() {
                init_tracing()?;
            }
            let opts = bench::waits::WaitOptions {
                database_url,
                parked,
                timers,
                idle_parked,
                max_running,
                signal_clients,
            };
            bench::waits::run(&opts).await.map(|_| ())
        }
        Command::Bench {
            scenario:
                Some(BenchScenario::Compare {
                    database_url,
                    workflows,
                    parked,
                    timers,
                }),
            ..
        } => {
            let opts = bench::compare::CompareOptions {
                database_url,
                workflows,
                parked,
                timers,
            };
            bench::compare::run(&opts).await
        }
        Command::Bench {
            scenario: None,
            args,
        } => {
            if std::env::var_os("BATON_LOG").is_some() {
                init_tracing()?;
            }
            let opts = BenchOptions {
                database_url: args.database_url,
                workflows: args.workflows,
                steps: args.steps,
                concurrency: args.concurrency,
                http: args.http,
            };
            let r = bench::run(&opts).await?;
            let backend = opts.database_url.split(':').next().unwrap_or("?");
            println!(
                "bench {backend}: W={} S={} C={}: {} items in {:.2} s = {:.0} items/s; item latency p50 {:.3} ms, p99 {:.2} ms",
                opts.workflows,
                opts.steps,
                opts.concurrency,
                r.items,
                r.elapsed.as_secs_f64(),
                r.items_per_sec,
                r.p50.as_secs_f64() * 1e3,
                r.p99.as_secs_f64() * 1e3
            );
            println!(
                "group commit: {} transactions of {:.1} checkpoints on average; first statement to commit p50 {:.2} ms, p99 {:.2} ms",
                r.batches,
                r.batch_mean,
                r.commit_p50.as_secs_f64() * 1e3,
                r.commit_p99.as_secs_f64() * 1e3
            );
            Ok(())
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = actix_rt::signal::unix::signal(actix_rt::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = actix_rt::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
