//! The operator's verbs: `baton execution ...`, `baton cluster events`,
//! and the tables and live lines they print. Each verb is one or a few
//! calls of the HTTP API through [`Client`].

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::anyhow;
use awc::http::Method;
use baton::client::Client;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::{emit, parse_inputs, ClientArgs, Ended};

/// How a read verb prints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Columns for people.
    #[default]
    Table,
    /// The API's JSON, pretty-printed.
    Json,
}

#[derive(Args)]
pub(crate) struct OutputArg {
    /// `table` for people, `json` for programs (the API's answer).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
}

impl OutputArg {
    pub(crate) fn output(&self) -> Output {
        self.output
    }

    pub(crate) fn is_json(&self) -> bool {
        self.output == Output::Json
    }
}

#[derive(Args)]
pub(crate) struct WaitArgs {
    /// Wait until the execution ends (`run` and `resume` exit 1 unless it
    /// completed; `cancel` exits 0 once it has ended in any way).
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait: give up after this many seconds (exit 1, the execution
    /// keeps running).
    #[arg(long, value_name = "SECONDS", requires = "wait")]
    timeout: Option<f64>,
}

impl WaitArgs {
    pub(crate) fn timeout(&self) -> anyhow::Result<Option<Duration>> {
        self.timeout
            .map(|s| {
                Duration::try_from_secs_f64(s).map_err(|_| {
                    anyhow!(crate::Usage(format!(
                        "--timeout {s}: expected seconds, such as 30 or 0.5"
                    )))
                })
            })
            .transpose()
    }
}

#[derive(Subcommand)]
pub(crate) enum ExecutionCommand {
    /// Search executions across workflows, newest first.
    List {
        /// Only executions of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only this state.
        #[arg(long, value_parser = ["running", "waiting", "waiting-signal", "completed", "failed", "canceled"])]
        state: Option<String>,
        /// Only children of this execution.
        #[arg(long)]
        parent: Option<String>,
        /// Only executions owned by this node.
        #[arg(long)]
        node: Option<String>,
        /// At most this many (the pages are followed).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one execution.
    Get {
        /// The execution id.
        id: String,
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show an execution's item log (every page), oldest first.
    Logs {
        /// The execution id.
        id: String,
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel an execution (and its unfinished children); with --wait,
    /// exits 0 once it has ended (canceled, or completed or failed before
    /// the cancel took).
    Cancel {
        /// The execution id.
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a named signal to an execution.
    Signal {
        /// The execution id.
        id: String,
        /// The signal's name.
        name: String,
        /// The payload, as JSON (default: null).
        #[arg(long, value_name = "JSON")]
        payload: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Answer the interaction an execution waits on.
    Answer {
        /// The execution id.
        id: String,
        /// An answer field, `name=value`; read as JSON when it parses.
        #[arg(long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// An answer field whose value is always text.
        #[arg(long = "input-str", value_name = "NAME=VALUE")]
        text_inputs: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a failed execution again from its failed item.
    Resume {
        /// The execution id.
        id: String,
        /// Set a declared variable first, `name=value` (read as JSON when
        /// it parses).
        #[arg(long = "variable", value_name = "NAME=VALUE")]
        variables: Vec<String>,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a finished execution with its item log.
    Delete {
        /// The execution id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn pretty(v: &Value) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(v)?))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows as aligned columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// One execution as `key: value` lines.
pub(crate) fn execution_text(e: &Value) -> String {
    let mut out = String::new();
    for key in [
        "id",
        "workflow_id",
        "workflow_version",
        "state",
        "current_item",
        "attempt",
        "owner_node",
        "parent_id",
        "created_at",
        "started_at",
        "ended_at",
        "error",
    ] {
        out.push_str(&format!("{key:<17} {}\n", text(&e[key])));
    }
    if let Some(w) = e.get("waiting_for").filter(|w| !w.is_null()) {
        out.push_str(&format!("{:<17} {w}\n", "waiting_for"));
    }
    let c = &e["children"];
    out.push_str(&format!(
        "{:<17} {} ({} unfinished)\n",
        "children", c["total"], c["unfinished"]
    ));
    for key in ["inputs", "variables", "outputs"] {
        out.push_str(&format!("{key:<17} {}\n", e[key]));
    }
    out
}

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A path segment for an id the user typed.
fn seg(id: &str) -> String {
    encode(id)
}

/// Waits for an execution to end, showing where it is: a live line on a
/// terminal, a plain line per change otherwise (both on stderr); then
/// prints it and fails unless it completed.
pub(crate) async fn wait_and_report(
    c: &Client,
    id: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<()> {
    let live = std::io::stderr().is_terminal();
    let mut last = String::new();
    let e = c
        .wait_for(id, timeout, |e| {
            let mut now = format!("{} {}", text(&e["state"]), text(&e["current_item"]));
            if e["attempt"].as_i64().is_some_and(|a| a > 1) {
                now.push_str(&format!(" (attempt {})", e["attempt"]));
            }
            if let Some(kind) = e["waiting_for"]["kind"].as_str() {
                now.push_str(&format!(", waiting for a {kind}"));
            }
            if now != last {
                if live {
                    eprint!("\r\x1b[2K{id}: {now}");
                } else {
                    eprintln!("{id}: {now}");
                }
                last = now;
            }
        })
        .await?;
    if live {
        eprintln!();
    }
    emit(&pretty(&e)?);
    let state = e["state"].as_str().unwrap_or("?").to_owned();
    if state != "completed" {
        let why = match timeout {
            Some(t) if !matches!(state.as_str(), "failed" | "canceled") => {
                format!(
                    "execution {id} is still {state} after {:.1} s",
                    t.as_secs_f64()
                )
            }
            _ => format!("execution {id} ended {state}"),
        };
        return Err(Ended(why).into());
    }
    Ok(())
}

/// Runs one `baton execution` verb.
pub(crate) async fn execution(command: ExecutionCommand) -> anyhow::Result<()> {
    match command {
        ExecutionCommand::List {
            workflow,
            state,
            parent,
            node,
            limit,
            output,
            client,
        } => {
            let c = client.client()?;
            let filters = query(&[
                ("workflow", &workflow),
                ("state", &state),
                ("parent", &parent),
                ("node", &node),
            ]);
            let mut found: Vec<Value> = Vec::new();
            let mut cursor: Option<String> = None;
            while found.len() < limit {
                let page = (limit - found.len()).min(1000);
                let mut path = format!("/api/executions?limit={page}");
                if !filters.is_empty() {
                    path.push('&');
                    path.push_str(&filters);
                }
                if let Some(cur) = &cursor {
                    path.push_str(&format!("&cursor={cur}"));
                }
                let v = c.get(&path).await?;
                found.extend(v["executions"].as_array().cloned().unwrap_or_default());
                match v["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            found.truncate(limit);
            if output.output == Output::Json {
                emit(&pretty(&Value::Array(found))?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = found
                .iter()
                .map(|e| {
                    vec![
                        text(&e["id"]),
                        text(&e["workflow_id"]),
                        text(&e["state"]),
                        text(&e["current_item"]),
                        text(&e["owner_node"]),
                        text(&e["created_at"]),
                    ]
                })
                .collect();
            emit(&table(
                &["ID", "WORKFLOW", "STATE", "ITEM", "NODE", "CREATED"],
                &rows,
            ));
            Ok(())
        }
        ExecutionCommand::Get { id, output, client } => {
            let e = client
                .client()?
                .get(&format!("/api/executions/{}", seg(&id)))
                .await?;
            emit(&match output.output {
                Output::Json => pretty(&e)?,
                Output::Table => execution_text(&e),
            });
            Ok(())
        }
        ExecutionCommand::Logs { id, output, client } => {
            let records = client
                .client()?
                .get_all_pages(&format!("/api/executions/{}/logs?limit=1000", seg(&id)))
                .await?;
            if output.output == Output::Json {
                emit(&pretty(&Value::Array(records))?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|r| {
                    vec![
                        text(&r["time"]),
                        text(&r["item"]),
                        text(&r["step"]),
                        text(&r["event"]),
                        text(&r["attempt"]),
                        text(&r["node"]),
                        text(&r["message"]),
                    ]
                })
                .collect();
            emit(&table(
                &[
                    "TIME", "ITEM", "STEP", "EVENT", "ATTEMPT", "NODE", "MESSAGE",
                ],
                &rows,
            ));
            Ok(())
        }
        ExecutionCommand::Cancel { id, wait, client } => {
            let c = client.client()?;
            let timeout = wait.timeout()?;
            let e = c
                .send_json(
                    Method::POST,
                    &format!("/api/executions/{}/cancel", seg(&id)),
                    None,
                )
                .await?;
            if !wait.wait {
                emit(&pretty(&e)?);
                return Ok(());
            }
            // A cancel is waited for until the execution ends canceled.
            let e = c.wait_for(&id, timeout, |_| {}).await?;
            emit(&pretty(&e)?);
            match e["state"].as_str() {
                Some("canceled" | "completed" | "failed") => Ok(()),
                s => Err(Ended(format!(
                    "execution {id} is still {} after the timeout",
                    s.unwrap_or("?")
                ))
                .into()),
            }
        }
        ExecutionCommand::Signal {
            id,
            name,
            payload,
            client,
        } => {
            let payload: Value = match payload {
                None => Value::Null,
                Some(p) => serde_json::from_str(&p).map_err(|e| {
                    crate::Usage(format!(
                        "--payload `{p}` is not JSON ({e}); a text payload is quoted: --payload '\"yes\"'"
                    ))
                })?,
            };
            let v = client
                .client()?
                .send_json(
                    Method::POST,
                    &format!("/api/executions/{}/signals/{}", seg(&id), seg(&name)),
                    Some(&json!({ "payload": payload })),
                )
                .await?;
            emit(&pretty(&v)?);
            Ok(())
        }
        ExecutionCommand::Answer {
            id,
            inputs,
            text_inputs,
            client,
        } => {
            let answer = parse_inputs(&inputs, &text_inputs)?;
            let v = client
                .client()?
                .send_json(
                    Method::POST,
                    &format!("/api/executions/{}/interaction", seg(&id)),
                    Some(&json!({ "inputs": answer })),
                )
                .await?;
            emit(&pretty(&v)?);
            Ok(())
        }
        ExecutionCommand::Resume {
            id,
            variables,
            wait,
            client,
        } => {
            let c = client.client()?;
            let timeout = wait.timeout()?;
            let vars = parse_inputs(&variables, &[])
                .map_err(|e| crate::Usage(e.to_string().replace("--input", "--variable")))?;
            let body = if variables.is_empty() {
                json!({})
            } else {
                json!({ "variables": vars })
            };
            let e = c
                .send_json(
                    Method::POST,
                    &format!("/api/executions/{}/resume", seg(&id)),
                    Some(&body),
                )
                .await?;
            if wait.wait {
                return wait_and_report(&c, &id, timeout).await;
            }
            emit(&pretty(&e)?);
            Ok(())
        }
        ExecutionCommand::Delete { id, client } => {
            client
                .client()?
                .send_json(
                    Method::DELETE,
                    &format!("/api/executions/{}", seg(&id)),
                    None,
                )
                .await?;
            emit(&format!("deleted {id}\n"));
            Ok(())
        }
    }
}

/// `baton cluster events`: the recent cluster events, newest first.
pub(crate) async fn cluster_events(c: &Client, limit: u32, output: Output) -> anyhow::Result<()> {
    let v = c.get(&format!("/api/cluster/events?limit={limit}")).await?;
    if output == Output::Json {
        emit(&pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                text(&e["time"]),
                text(&e["kind"]),
                text(&e["node_id"]),
                text(&e["message"]),
            ]
        })
        .collect();
    emit(&table(&["TIME", "KIND", "NODE", "MESSAGE"], &rows));
    Ok(())
}
