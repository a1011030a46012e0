//! Group commit of new executions. Starts that arrive at the same moment
//! share one transaction: one multi-row `INSERT` of the executions (ids
//! already taken are left alone and answered as existing, so an
//! idempotent `execution_id` stays idempotent), one check that the owner
//! node is still running at the epoch each start was accepted under, one
//! check that the workflow versions taken from memory are still current,
//! one multi-row `INSERT` of their `started` records, one read of the rows,
//! one commit (on SQLite the writes run on the writer's thread, see
//! `direct`, and the rows are read once committed). If the shared
//! transaction fails before its commit, each start is tried alone, so one
//! bad start cannot hold back the rest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, FromQueryResult,
    QueryFilter, QuerySelect, QueryTrait, Statement,
};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::direct::{CommitFailed, Direct, OwnConn};
use super::entities::{execution, node};
use super::executions::{create_one, insert_log_rows, new_execution_insert, not_current};
use super::writes::{unwound, Writes};
use super::{LogEntry, NewExecution, StartOutcome};
use crate::db::Db;
use crate::error::StoreError;

/// Most starts in one transaction (15 bound values each).
const MAX_BATCH: usize = 128;

struct Pending {
    new: NewExecution,
    reply: oneshot::Sender<Result<StartOutcome, StoreError>>,
}

/// The queue in front of the start writers.
#[derive(Debug)]
pub(super) struct Starter {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Starter {
    /// Starts the writers on the database runtime: one on SQLite (one
    /// writer anyway), two elsewhere.
    pub(super) fn start(db: &Db) -> Starter {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let backend = db.backend();
        let writers = if backend == DbBackend::Sqlite { 1 } else { 2 };
        for _ in 0..writers {
            let rx = rx.clone();
            let (own, read) = (db.own_sqlite(), db.read_conn());
            db.spawn(move |conn, calls| writer(conn, own, read, calls, backend, rx));
        }
        Starter { tx }
    }

    pub(super) async fn submit(&self, new: NewExecution) -> Result<StartOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { new, reply })
            .map_err(|_| StoreError::RuntimeGone)?;
        answer.await.map_err(|_| StoreError::RuntimeGone)?
    }
}

async fn writer(
    conn: DatabaseConnection,
    own: Option<Arc<OwnConn>>,
    read: DatabaseConnection,
    calls: Arc<crate::db::DbCalls>,
    backend: DbBackend,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>,
) {
    while let Some(batch) = super::batch::next_batch(&rx, MAX_BATCH).await {
        // One start alone is written by `create_one` (a `RETURNING *`
        // saves the read), except on SQLite, where the batch's writes run
        // without a thread hop per statement, and on PostgreSQL under an
        // epoch, where the batch's one statement is one round trip
        // against five.
        let refs: Vec<&NewExecution> = batch.iter().map(|p| &p.new).collect();
        if batch.len() == 1 && backend != DbBackend::Sqlite && one_owner(backend, &refs).is_none() {
            for p in batch {
                let began = calls.began(&conn);
                let r = start_alone(&conn, backend, p.new).await;
                calls.ended(began);
                let _ = p.reply.send(r);
            }
            continue;
        }
        let began = calls.began(&conn);
        let applied = unwound("a start batch", async {
            #[cfg(test)]
            if batch.iter().any(|p| p.new.id == super::writes::TEST_PANIC) {
                panic!("a test's panic");
            }
            apply(&conn, own.as_deref(), &read, backend, &batch).await
        })
        .await
        .unwrap_or_else(|e| Err(Failed::AtCommit(e)));
        calls.ended(began);
        match applied {
            Ok(outcomes) => {
                for (p, r) in batch.into_iter().zip(outcomes) {
                    let _ = p.reply.send(r);
                }
            }
            Err(Failed::AtCommit(e)) => {
                // Written or not: the callers learn it as from a single
                // start whose commit was lost (a retry with the same id
                // finds it).
                for p in batch {
                    let _ = p.reply.send(Err(StoreError::CommitUnknown(e.clone())));
                }
            }
            Err(Failed::Before(e)) => {
                tracing::debug!(error = %e, starts = batch.len(), "shared start transaction failed; each alone");
                for p in batch {
                    let r = start_alone(&conn, backend, p.new).await;
                    let _ = p.reply.send(r);
                }
            }
        }
    }
}

/// One start in a transaction of its own ([`create_one`]), a panic in it
/// answered as a lost commit (see [`unwound`]): a retry with the same id
/// finds the execution if it was written.
async fn start_alone(
    conn: &DatabaseConnection,
    backend: DbBackend,
    new: NewExecution,
) -> Result<StartOutcome, StoreError> {
    unwound("a start", create_one(conn, backend, new))
        .await
        .unwrap_or_else(|e| Err(StoreError::CommitUnknown(e)))
}

enum Failed {
    /// Nothing was written.
    Before(StoreError),
    /// The commit's outcome is unknown.
    AtCommit(sea_orm::DbErr),
}

impl From<sea_orm::DbErr> for Failed {
    fn from(e: sea_orm::DbErr) -> Failed {
        Failed::Before(e.into())
    }
}

/// Creates a batch of starts in one transaction.
async fn apply(
    conn: &DatabaseConnection,
    own: Option<&OwnConn>,
    read: &DatabaseConnection,
    backend: DbBackend,
    batch: &[Pending],
) -> Result<Vec<Result<StartOutcome, StoreError>>, Failed> {
    // The first start of each id writes it; a repeat in the same batch is
    // answered like a repeat after it: the execution exists.
    let mut firsts: Vec<&NewExecution> = Vec::with_capacity(batch.len());
    let mut seen = HashSet::with_capacity(batch.len());
    for p in batch {
        if seen.insert(p.new.id.as_str()) {
            firsts.push(&p.new);
        }
    }
    let ids: Vec<String> = firsts.iter().map(|n| n.id.clone()).collect();
    let Written {
        created,
        stored,
        alone,
    } = if backend == DbBackend::Sqlite {
        // The writes on this thread (`Direct`), then the rows read once
        // committed, on a reader connection (in WAL mode it sees every
        // commit made before it began, and it leaves the write connection
        // to the other writers): nothing else writes a new execution
        // before its start is answered, and a repeat's row is as current
        // either way. A failed read leaves the callers where a lost commit
        // would.
        let (created, alone) = Direct::transaction(conn, own, |d| {
            let written = Direct::now(write(d, backend, &firsts))?;
            d.commit().map_err(|e| match e {
                CommitFailed::NotWritten(e) => Failed::Before(e.into()),
                CommitFailed::Unknown(e) => Failed::AtCommit(e),
            })?;
            Ok::<_, Failed>(written)
        })
        .await??;
        let stored = read_committed(read, ids).await.map_err(Failed::AtCommit)?;
        Written {
            created,
            stored,
            alone,
        }
    } else if let Some((owner, epoch)) = one_owner(backend, &firsts) {
        one_statement(conn, backend, &firsts, owner, epoch).await?
    } else {
        let txn = crate::store::begin(conn).await?;
        let (created, alone) = write(&txn, backend, &firsts).await?;
        let stored = read_rows(&txn, ids).await?;
        txn.commit().await.map_err(Failed::AtCommit)?;
        Written {
            created,
            stored,
            alone,
        }
    };
    let mut writer_of: HashSet<&str> = HashSet::with_capacity(batch.len());
    let mut outcomes = Vec::with_capacity(batch.len());
    for p in batch {
        let id = p.new.id.as_str();
        if alone.contains(id) {
            // Each start of the id, repeats included, answered as alone.
            outcomes.push(start_alone(conn, backend, p.new.clone()).await);
            continue;
        }
        let Some(row) = stored.get(id).cloned() else {
            outcomes.push(Err(StoreError::NotFound {
                kind: "execution",
                id: id.to_owned(),
            }));
            continue;
        };
        // Only the first start of a new id created it.
        outcomes.push(Ok(if created.contains(id) && writer_of.insert(id) {
            StartOutcome::Created(row)
        } else {
            StartOutcome::Existing(row)
        }));
    }
    Ok(outcomes)
}

/// The one owner and epoch every start of the batch was accepted under,
/// on PostgreSQL: such a batch is written by [`one_statement`].
fn one_owner<'a>(backend: DbBackend, firsts: &[&'a NewExecution]) -> Option<(&'a str, i64)> {
    if backend != DbBackend::Postgres {
        return None;
    }
    let first = firsts.first()?;
    let owner = (first.owner_node.as_str(), first.node_epoch?);
    firsts
        .iter()
        .all(|n| n.owner_node == owner.0 && n.node_epoch == Some(owner.1))
        .then_some(owner)
}

/// A batch of starts in one statement, in autocommit (PostgreSQL), the
/// way [`write`] and [`read_rows`] do it in a transaction of five: a
/// data-modifying `WITH` takes the owner node's row `FOR SHARE` if it is
/// still running at `epoch` (a takeover's `UPDATE` of it waits for this
/// statement, then moves these executions too), inserts the executions
/// only then (a start with `expect_current` only while its version is its
/// workflow's current one), ids already taken left alone (`ON CONFLICT DO
/// NOTHING`), inserts their `started` records, and returns the rows it created and
/// those that were already there. The rows travel as one JSON parameter,
/// so the statement's text is the same for every batch: prepared once per
/// connection, planned once, one round trip instead of six (`BEGIN`, four
/// statements whose text depended on the batch's size, `COMMIT`).
///
/// When it wrote nothing and left an id unanswered (the owner is no
/// longer running at its epoch, or every start's version is stale), each
/// start is tried alone, as after [`write`] refused the batch. An id it
/// leaves unanswered after writing others is a start whose version is no
/// longer current, or one another writer's start of the same id took
/// while this statement ran (its row is not in the statement's snapshot):
/// each start of that id, tried alone ([`create_one`]), is refused as
/// `NotCurrent` or finds the row.
async fn one_statement(
    conn: &DatabaseConnection,
    backend: DbBackend,
    firsts: &[&NewExecution],
    owner: &str,
    epoch: i64,
) -> Result<Written, Failed> {
    let now = super::Store::now_sql(backend);
    let rows: Vec<serde_json::Value> = firsts
        .iter()
        .map(|n| {
            serde_json::json!({
                "id": n.id,
                "workflow_id": n.workflow_id,
                "workflow_version": n.workflow_version,
                "parent_id": n.parent_id,
                "inputs": n.inputs.to_string(),
                "variables": n.variables.to_string(),
                "current_item": n.start_item,
                "expect_current": n.expect_current,
            })
        })
        .collect();
    let sql = format!(
        "WITH v AS (SELECT * FROM json_to_recordset($1::json) AS t(id text, workflow_id text, workflow_version bigint, parent_id text, inputs text, variables text, current_item text, expect_current boolean)), \
         o AS (SELECT id FROM nodes WHERE id = $2 AND epoch = $3 AND state = $4 FOR SHARE), \
         i AS (INSERT INTO executions (id, workflow_id, workflow_version, parent_id, state, inputs, variables, current_item, step, attempt, owner_node, owner_epoch, created_at, started_at, updated_at) \
           SELECT v.id, v.workflow_id, v.workflow_version, v.parent_id, $5, v.inputs, v.variables, v.current_item, 1, 1, $2, 1, {now}, {now}, {now} \
           FROM v WHERE EXISTS (SELECT 1 FROM o) \
             AND (NOT v.expect_current OR EXISTS (SELECT 1 FROM workflows w WHERE w.id = v.workflow_id AND w.version = v.workflow_version)) \
           ON CONFLICT (id) DO NOTHING RETURNING *), \
         l AS (INSERT INTO item_log (execution_id, item, step, attempt, event, node, time, message, completed_step) \
           SELECT i.id, i.current_item, 1, 1, 'started', $2, {now}, NULL, NULL FROM i) \
         SELECT TRUE AS created, i.* FROM i \
         UNION ALL SELECT FALSE AS created, e.* FROM executions e WHERE e.id = ANY(ARRAY(SELECT id FROM v))"
    );
    let values: Vec<sea_orm::Value> = vec![
        serde_json::Value::Array(rows).to_string().into(),
        owner.into(),
        epoch.into(),
        super::node_state::RUNNING.into(),
        super::state::RUNNING.into(),
    ];
    let answered = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map_err(|e| {
            if super::wrote_nothing(&e) {
                Failed::Before(e.into())
            } else {
                Failed::AtCommit(e)
            }
        })?;
    let mut created = HashSet::with_capacity(answered.len());
    let mut stored = HashMap::with_capacity(answered.len());
    for r in answered {
        let row = execution::Model::from_query_result(&r, "").map_err(Failed::AtCommit)?;
        if r.try_get::<bool>("", "created").map_err(Failed::AtCommit)? {
            created.insert(row.id.clone());
        }
        stored.insert(row.id.clone(), row);
    }
    let unanswered: Vec<&NewExecution> = firsts
        .iter()
        .copied()
        .filter(|n| !stored.contains_key(&n.id))
        .collect();
    if created.is_empty() && !unanswered.is_empty() {
        // Nothing written (the owner is not running at its epoch, or the
        // versions are stale): each start alone says which it refuses and
        // why.
        return Err(Failed::Before(StoreError::Conflict(
            "a start of the batch was not written".into(),
        )));
    }
    Ok(Written {
        created,
        stored,
        alone: unanswered.iter().map(|n| n.id.clone()).collect(),
    })
}

/// What a batch of starts wrote: the ids it created, the rows of the ids
/// it answered, and the ids whose starts are to be tried alone.
#[derive(Default)]
struct Written {
    created: HashSet<String>,
    stored: HashMap<String, execution::Model>,
    alone: HashSet<String>,
}

/// The writes of a batch of starts (each id once) inside `txn`: the new
/// executions, the check of their owners, their `started` records; the
/// ids it created, and the ids it left to be answered alone (started with
/// a version of their workflow that is no longer current).
async fn write<W: Writes>(
    txn: &W,
    backend: DbBackend,
    firsts: &[&NewExecution],
) -> Result<(HashSet<String>, HashSet<String>), Failed> {
    // A start that took its workflow's version from memory is written only
    // if it is still the current one; the others are answered alone
    // (`NotCurrent`, or `Existing` for an id already taken), the rest of
    // the batch goes on. Read before the writes: on SQLite this runs on
    // the direct writer, whose `BEGIN IMMEDIATE` holds the write lock from
    // the start (no other process can write in between, see `direct`); on
    // MySQL the snapshot this read fixes is taken after every start of the
    // batch arrived, as the read of taken ids below was.
    let stale_versions = not_current(txn, firsts.iter().copied()).await?;
    let stale: HashSet<String> = firsts
        .iter()
        .filter(|n| {
            n.expect_current
                && stale_versions.contains(&(n.workflow_id.clone(), n.workflow_version))
        })
        .map(|n| n.id.clone())
        .collect();
    let kept: Vec<&NewExecution>;
    let firsts = if stale.is_empty() {
        firsts
    } else {
        kept = firsts
            .iter()
            .copied()
            .filter(|n| !stale.contains(&n.id))
            .collect();
        &kept[..]
    };
    if firsts.is_empty() {
        return Ok((HashSet::new(), stale));
    }
    let ids: Vec<String> = firsts.iter().map(|n| n.id.clone()).collect();
    let created: HashSet<String> = if backend == DbBackend::MySql {
        // No `RETURNING` on an `INSERT` here: read which ids are taken
        // first. A concurrent start of one of them fails the `INSERT` on
        // its key, and each start is then tried alone.
        let taken: HashSet<String> = txn
            .ids(
                execution::Entity::find()
                    .select_only()
                    .column(execution::Column::Id)
                    .filter(execution::Column::Id.is_in(ids))
                    .build(backend),
            )
            .await?
            .into_iter()
            .collect();
        let fresh: Vec<&NewExecution> = firsts
            .iter()
            .copied()
            .filter(|n| !taken.contains(&n.id))
            .collect();
        if !fresh.is_empty() {
            txn.exec_built(&new_execution_insert(backend, &fresh))
                .await?;
        }
        fresh.iter().map(|n| n.id.clone()).collect()
    } else {
        let mut insert = new_execution_insert(backend, firsts);
        insert
            .on_conflict(
                OnConflict::column(execution::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col(execution::Column::Id);
        txn.ids(backend.build(&insert)).await?.into_iter().collect()
    };
    // The owner must still be running at the epoch each start was accepted
    // under (a node declared dead or restarted since creates nothing).
    let owners: HashSet<(&str, i64)> = firsts
        .iter()
        .filter(|n| created.contains(&n.id))
        .filter_map(|n| Some((n.owner_node.as_str(), n.node_epoch?)))
        .collect();
    for (owner, epoch) in owners {
        let live = txn
            .ids(
                super::executions::lock_owner_rows(
                    node::Entity::find()
                        .select_only()
                        .column(node::Column::Id)
                        .filter(node::Column::Id.eq(owner))
                        .filter(node::Column::Epoch.eq(epoch))
                        .filter(node::Column::State.eq(super::node_state::RUNNING)),
                    backend,
                )
                .build(backend),
            )
            .await?;
        if live.is_empty() {
            // Rare (this node was fenced or restarted): undo (the caller
            // drops the transaction), and let each start alone say which
            // it refuses and why.
            return Err(Failed::Before(StoreError::Conflict(
                "an owner node is no longer running at its epoch".into(),
            )));
        }
    }
    let started: Vec<(String, String, LogEntry)> = firsts
        .iter()
        .filter(|n| created.contains(&n.id))
        .map(|n| {
            (
                n.id.clone(),
                n.owner_node.clone(),
                LogEntry {
                    item: n.start_item.clone(),
                    step: 1,
                    attempt: 1,
                    event: "started",
                    message: None,
                },
            )
        })
        .collect();
    let rows: Vec<(&str, &str, &LogEntry)> = started
        .iter()
        .map(|(e, n, l)| (e.as_str(), n.as_str(), l))
        .collect();
    insert_log_rows(txn, backend, &rows).await?;
    Ok((created, stale))
}

/// [`read_rows`] after the commit (SQLite): the starts are written, so a
/// failed read is tried again before the callers are told the outcome is
/// unknown (which would cost them a retry, and this node an actor until
/// its next scan).
async fn read_committed(
    conn: &DatabaseConnection,
    ids: Vec<String>,
) -> Result<HashMap<String, execution::Model>, sea_orm::DbErr> {
    let mut tries = 0;
    loop {
        match read_rows(conn, ids.clone()).await {
            Err(e) if tries < 3 => {
                tries += 1;
                tracing::debug!(error = %e, tries, "reading committed starts failed; again");
                tokio::time::sleep(std::time::Duration::from_millis(50 * tries)).await;
            }
            other => return other,
        }
    }
}

/// The stored rows of `ids`.
async fn read_rows<C: ConnectionTrait>(
    c: &C,
    ids: Vec<String>,
) -> Result<HashMap<String, execution::Model>, sea_orm::DbErr> {
    Ok(execution::Entity::find()
        .filter(execution::Column::Id.is_in(ids))
        .all(c)
        .await?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect())
}
