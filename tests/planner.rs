//! PostgreSQL's planner statistics kept in step with tables that grow
//! faster than autovacuum looks at them (`store::planner`): a node
//! analyzes the tables it grows, so the group commit's cached plans stop
//! scanning whole tables. Autovacuum is turned off on the tables here, as
//! it is in the first minute of a new database, so the tests do not
//! depend on when it comes. A no-op on SQLite and MariaDB.

use std::time::Duration;

use baton_actors::store::{Checkpoint, ExecutionState, Fence, StartOutcome, Wait};
use baton_actors::Store;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::json;

use crate::on_all_backends;
use crate::util::*;

on_all_backends!(
    checkpoints_stop_scanning_the_table_once_it_is_analyzed,
    a_node_analyzes_the_executions_table_as_it_grows,
    an_awaited_signal_is_read_by_its_execution_not_among_all_pending,
    the_wake_scan_reads_only_what_is_due_and_its_indexes_hold_only_that,
);

#[actix_rt::test]
async fn postgres_a_role_that_may_not_analyze_leaves_the_tables_alone() {
    a_role_that_may_not_analyze_leaves_the_tables_alone(Backend::Postgres).await
}

/// Turns autovacuum off on the tables the engine grows.
async fn without_autovacuum(store: &Store) {
    store
        .db()
        .run(|c| async move {
            for t in ["executions", "signals", "item_log"] {
                c.execute_unprepared(&format!("ALTER TABLE {t} SET (autovacuum_enabled = false)"))
                    .await?;
            }
            Ok(())
        })
        .await
        .expect("autovacuum off");
}

/// One `bigint` the query `sql` (a column `n`) returns, read on a
/// connection of its own, closed after.
async fn scalar(url: &str, sql: String) -> i64 {
    let store = Store::connect(url, 1).await.expect("connect");
    let n = store
        .db()
        .run(move |c| async move {
            let row = c
                .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
                .await?
                .expect("a row");
            Ok(row.try_get::<i64>("", "n")?)
        })
        .await
        .expect("read");
    store.db().close().await;
    n
}

/// A statistic of `executions` from `pg_stat_user_tables`.
async fn executions_stat(url: &str, column: &str) -> i64 {
    scalar(
        url,
        format!(
            "SELECT {column}::bigint AS n FROM pg_stat_user_tables WHERE relname = 'executions'"
        ),
    )
    .await
}

/// Sessions on this test database other than the one asking.
async fn other_sessions(url: &str) -> i64 {
    scalar(
        url,
        "SELECT count(*)::bigint AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()"
            .into(),
    )
    .await
}

/// Waits until the other sessions on the test database have ended: a
/// session's counts are in the statistics once it has.
async fn sessions_end(url: &str, what: &str) {
    let url = url.to_owned();
    eventually(what, Duration::from_secs(30), || {
        let url = url.clone();
        async move { other_sessions(&url).await == 0 }
    })
    .await;
}

/// Starts `n` executions one after the other, each parked on a signal
/// by a checkpoint of its own (the group commit's one statement).
async fn start_and_park(store: &Store, from: usize, n: usize) {
    for i in from..from + n {
        let new = new_start(&format!("e{i}"), "n1", None);
        let row = match store.create_execution(new).await.expect("start") {
            StartOutcome::Created(row) => row,
            StartOutcome::Existing(row) => panic!("{} existed", row.id),
        };
        let fence = Fence {
            execution: row.id.clone(),
            node: "n1".into(),
            epoch: row.owner_epoch,
            run: Some(row.run_token),
            step: Some(row.step),
        };
        let park = Checkpoint {
            wait: Some(Wait {
                state: ExecutionState::WaitingSignal,
                until: None,
                signal: Some("go".into()),
            }),
            ..Checkpoint::default()
        };
        store.checkpoint(&fence, park).await.expect("park");
    }
}

/// 1,200 executions parked one by one on a new database: the checkpoint
/// statement is prepared while `executions` is empty, and PostgreSQL
/// keeps that plan, a scan of the whole table, for each checkpoint. Once
/// the table is analyzed, the plan is made again: the next 1,200 read
/// the table by its key. Without the analysis they would read about
/// 1,200 x 1,800 rows more; the first 1,200 read about 1,200 x 600.
async fn checkpoints_stop_scanning_the_table_once_it_is_analyzed(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let store = Store::connect(&db.url, 2).await.expect("connect");
    store.migrate().await.expect("migrate");
    if b != Backend::Postgres {
        start_and_park(&store, 0, 20).await;
        let stats = store.keep_planner_stats().await.expect("look");
        assert_eq!(stats, Default::default(), "nothing to do on {b:?}");
        return;
    }
    without_autovacuum(&store).await;
    start_and_park(&store, 0, 1_200).await;
    // Sessions report their counts to the statistics within a second or
    // so of their commits.
    let analyzed = |want: bool| {
        let store = store.clone();
        async move {
            let stats = store.keep_planner_stats().await.expect("look");
            assert!(stats.not_permitted.is_empty(), "{stats:?}");
            stats.analyzed.iter().any(|t| t == "executions") == want
        }
    };
    eventually(
        "executions analyzed once it holds 1,200 rows",
        Duration::from_secs(30),
        || analyzed(true),
    )
    .await;
    assert!(
        analyzed(false).await,
        "a table that has not doubled since is left alone"
    );
    start_and_park(&store, 1_200, 1_200).await;
    store.db().close().await;
    // A session's counts are in once it has ended.
    sessions_end(&db.url, "the store's sessions end").await;
    let read = executions_stat(&db.url, "seq_tup_read").await;
    eprintln!("rows read by sequential scans of executions: {read}");
    // The premise: before the analysis the kept plan scanned the table
    // (about 1,200 x 600 rows). If a PostgreSQL version plans otherwise,
    // this test no longer shows anything and says so.
    assert!(
        read > 300_000,
        "the checkpoints read only {read} rows by sequential scans before the analysis: this PostgreSQL does not keep a scan plan for an empty table, and the test shows nothing"
    );
    assert!(
        read < 1_200_000,
        "the checkpoints read {read} rows by sequential scans: the plan made while the table was empty was kept after it was analyzed"
    );
    assert!(executions_stat(&db.url, "analyze_count").await >= 1);
}

/// A node on PostgreSQL analyzes `executions` by itself once it has
/// started 1,100 executions.
async fn a_node_analyzes_the_executions_table_as_it_grows(b: Backend) {
    if b != Backend::Postgres {
        return; // a no-op elsewhere; the test above checks that
    }
    let Some(db) = TestDb::create(b) else { return };
    let node = start_node(&db, |_| {}).await;
    without_autovacuum(node.store()).await;
    let def = json!({"id": "parked", "start": "wait", "items": {
        "wait": {"type": "signal", "name": "go", "next": "done"}, "done": {"type": "end"}}});
    node.store()
        .insert_workflow("parked", "parked", def.to_string())
        .await
        .expect("workflow");
    for chunk in 0..(1_100 / 50) {
        let starts = (0..50).map(|i| {
            node.starter().start(
                "parked".into(),
                json!({}),
                Some(format!("p{}", chunk * 50 + i)),
            )
        });
        for r in futures::future::join_all(starts).await {
            r.expect("start");
        }
    }
    let url = db.url.clone();
    eventually(
        "the node analyzes executions",
        Duration::from_secs(30),
        || {
            let url = url.clone();
            async move {
                actix_rt::time::sleep(Duration::from_millis(200)).await;
                executions_stat(&url, "analyze_count").await >= 1
            }
        },
    )
    .await;
    node.stop().await;
}

/// A role that does not own the tables (nor the database) may not
/// `ANALYZE` them: PostgreSQL only warns and does nothing, so the node must
/// know beforehand and say so, not report them analyzed every second. The
/// owner (here a superuser) does analyze them.
async fn a_role_that_may_not_analyze_leaves_the_tables_alone(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let owner = Store::connect(&db.url, 4).await.expect("connect");
    owner.migrate().await.expect("migrate");
    without_autovacuum(&owner).await;
    for chunk in 0..(1_100 / 100) {
        let starts = (0..100).map(|i| {
            owner.create_execution(new_start(&format!("r{}", chunk * 100 + i), "n1", None))
        });
        for r in futures::future::join_all(starts).await {
            r.expect("start");
        }
    }
    let role = unique("baton_r_");
    db.admin_sql(&format!("CREATE ROLE {role} LOGIN"));
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    assert_ne!(url, db.url, "the test URL names the postgres user");
    let other = Store::connect(&url, 2).await.expect("connect as the role");
    let refused = {
        let other = other.clone();
        move || {
            let other = other.clone();
            async move {
                let stats = other.keep_planner_stats().await.expect("look");
                assert!(stats.analyzed.is_empty(), "{stats:?}");
                stats.not_permitted.iter().any(|t| t == "executions")
            }
        }
    };
    eventually(
        "the role is told it may not analyze executions",
        Duration::from_secs(30),
        refused,
    )
    .await;
    other.db().close().await;
    let stats = owner.keep_planner_stats().await.expect("look");
    assert!(
        stats.analyzed.iter().any(|t| t == "executions"),
        "the owner analyzes: {stats:?}"
    );
    owner.db().close().await;
    db.admin_sql(&format!("DROP ROLE {role}"));
}

/// A migrated store on a new test database, autovacuum off on PostgreSQL.
async fn fresh_store(db: &TestDb, b: Backend) -> Store {
    let store = Store::connect(&db.url, 2).await.expect("connect");
    store.migrate().await.expect("migrate");
    if b == Backend::Postgres {
        without_autovacuum(&store).await;
    }
    store
}

/// Runs `insert` (ending in `VALUES`) with `rows`, 500 to a statement.
async fn insert_rows(store: &Store, insert: &'static str, rows: Vec<String>) {
    store
        .db()
        .run(move |c| async move {
            for chunk in rows.chunks(500) {
                c.execute_unprepared(&format!("{insert} {}", chunk.join(", ")))
                    .await?;
            }
            Ok(())
        })
        .await
        .expect("insert rows");
}

/// Index entries and rows of `table` read so far, by any index or
/// sequential scan, from the statistics.
async fn rows_read(url: &str, table: &str) -> i64 {
    scalar(
        url,
        format!(
            "SELECT ((SELECT COALESCE(sum(idx_tup_read), 0) FROM pg_stat_user_indexes WHERE relname = '{table}') \
             + (SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = '{table}'))::bigint AS n"
        ),
    )
    .await
}

/// An awaiting run reads its pending signal (`Store::pending_signal`) by
/// its execution and name, however many other signals are pending and
/// whatever the statistics say. The trap: `signals` analyzed while every
/// signal in it was consumed, then a burst of pending ones. While
/// `consumed_at` led other indexes, PostgreSQL priced "every pending
/// signal" the same as "this execution's pending signal" and took the
/// first: each read walked all 5,000 pending signals (1,010,202 index
/// entries for the 200 reads here; the bench's 20,000 signals read 310
/// million). Migration 13 leaves no other index a read with a bound name
/// can use. SQLite and MariaDB chose well before it; there the answers
/// (and on SQLite the plan) are checked.
async fn an_awaited_signal_is_read_by_its_execution_not_among_all_pending(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let store = fresh_store(&db, b).await;
    let now = |i: usize| i as i64;
    let insert = |prefix: &'static str, consumed: &'static str| {
        let store = store.clone();
        async move {
            let rows: Vec<String> = (0..5_000)
                .map(|i| format!("('{prefix}{i}', 'go', 'null', {}, {consumed})", now(i)))
                .collect();
            insert_rows(
                &store,
                "INSERT INTO signals (execution_id, name, payload, created_at, consumed_at) VALUES",
                rows,
            )
            .await;
        }
    };
    insert("h", "1").await;
    if b != Backend::Sqlite {
        // The statistics of a table whose signals are all consumed.
        let analyze = if b == Backend::Postgres {
            "ANALYZE signals"
        } else {
            "ANALYZE TABLE signals"
        };
        store
            .db()
            .run(move |c| async move {
                c.execute_unprepared(analyze).await?;
                Ok(())
            })
            .await
            .expect("analyze");
    }
    insert("p", "NULL").await;
    store
        .db()
        .run(|c| async move {
            c.execute_unprepared(
                "INSERT INTO signals (execution_id, name, payload, created_at) VALUES ('p7', 'go', 'null', 99999)",
            )
            .await?;
            Ok(())
        })
        .await
        .expect("a second signal for p7");
    if b == Backend::Sqlite {
        let plan = store
            .db()
            .run(|c| async move {
                let rows = c
                    .query_all_raw(Statement::from_string(
                        DbBackend::Sqlite,
                        "EXPLAIN QUERY PLAN SELECT id FROM signals WHERE execution_id = 'p7' \
                         AND name = 'go' AND consumed_at IS NULL ORDER BY id LIMIT 1",
                    ))
                    .await?;
                Ok(rows
                    .iter()
                    .map(|r| r.try_get::<String>("", "detail").unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("; "))
            })
            .await
            .expect("plan");
        assert!(
            plan.contains("ix_signals_execution_pending") && !plan.contains("TEMP B-TREE"),
            "a pending signal is read through the execution's pending index, in order: {plan}"
        );
    }
    store.db().close().await;
    let before = if b == Backend::Postgres {
        sessions_end(&db.url, "the setup's sessions end").await;
        rows_read(&db.url, "signals").await
    } else {
        0
    };
    // More reads than the five after which PostgreSQL keeps a generic plan.
    let store = Store::connect(&db.url, 2).await.expect("connect");
    for i in 0..200 {
        let id = format!("p{i}");
        let s = store
            .pending_signal(&id, "go")
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("{id}'s signal"));
        assert_eq!(s.execution_id, id);
        assert_eq!(s.created_at, now(i), "{id}'s first signal, not its second");
        assert!(s.consumed_at.is_none());
    }
    assert!(
        store
            .pending_signal("h3", "go")
            .await
            .expect("read")
            .is_none(),
        "a consumed signal is not pending"
    );
    let ids = store.pending_signal_ids("p7", "go").await.expect("ids");
    assert_eq!(ids.len(), 2, "both of p7's signals: {ids:?}");
    // The cancels' scan and the catch-up read by their own indexes, not
    // through the 10,000 signals (every node runs both periodically).
    for _ in 0..20 {
        assert!(store
            .cancel_requested("n1")
            .await
            .expect("cancels")
            .is_empty());
        assert_eq!(
            store
                .flag_recent_signals("n1", 30_000)
                .await
                .expect("catch-up"),
            0
        );
    }
    store.db().close().await;
    if b != Backend::Postgres {
        return;
    }
    sessions_end(&db.url, "the reads' sessions end").await;
    let read = rows_read(&db.url, "signals").await - before;
    eprintln!("signal rows and index entries read by 200 pending-signal reads and 20 scans of each kind: {read}");
    assert!(
        read < 20_000,
        "200 reads of one execution's pending signal, 20 cancel scans and 20 catch-ups read {read} index entries or rows: one of them walked the pending signals of every execution"
    );
}

/// The wake scan (`Store::due_for_wake`) reads what is due, not every
/// parked execution, and the indexes it reads hold only rows that can be
/// due (migration 13): 2,000 executions parked on a signal and 1,000 on a
/// timer a day away leave no entry in the signaled index and none of the
/// first in the timers' index, so a park, a wake or a completion writes
/// fewer index entries. Checked on PostgreSQL by the statistics (entries
/// read, entries held after an `ANALYZE`), on SQLite by the schema (each of
/// those indexes is partial); on MariaDB (no partial indexes) the scan's
/// answer.
async fn the_wake_scan_reads_only_what_is_due_and_its_indexes_hold_only_that(b: Backend) {
    let Some(db) = TestDb::create(b) else { return };
    let store = fresh_store(&db, b).await;
    let far = 4_102_444_800_000i64;
    let rows: Vec<String> = (0..3_020)
        .map(|i| {
            let (state, until, signaled) = match i {
                0..2_000 => ("waiting-signal", "NULL".to_owned(), 0),
                2_000..3_000 => ("waiting", far.to_string(), 0),
                3_000..3_010 => ("waiting-signal", "NULL".to_owned(), 1),
                _ => ("waiting", "1".to_owned(), 0),
            };
            format!(
                "('w{i}', 'wf', 1, '{state}', '{{}}', '{{}}', 'a', 1, 1, 'n1', 1, 1, 1, {until}, 'go', {signaled})"
            )
        })
        .collect();
    insert_rows(
        &store,
        "INSERT INTO executions (id, workflow_id, workflow_version, state, inputs, variables, \
         current_item, step, attempt, owner_node, owner_epoch, created_at, updated_at, \
         wait_until, wait_signal, signaled) VALUES",
        rows,
    )
    .await;
    let mut want: Vec<String> = (3_000..3_020).map(|i| format!("w{i}")).collect();
    want.sort();
    let before = if b == Backend::Postgres {
        store.db().close().await;
        sessions_end(&db.url, "the setup's sessions end").await;
        rows_read(&db.url, "executions").await
    } else {
        0
    };
    let store = Store::connect(&db.url, 2).await.expect("connect");
    for _ in 0..50 {
        let mut due = store.due_for_wake("n1", 1_000).await.expect("scan");
        due.sort();
        assert_eq!(due, want, "the 10 signaled and the 10 due timers");
    }
    match b {
        Backend::Postgres => {
            store.db().close().await;
            sessions_end(&db.url, "the scans' sessions end").await;
            let read = rows_read(&db.url, "executions").await - before;
            eprintln!("executions rows and index entries read by 50 wake scans: {read}");
            assert!(
                read < 5_000,
                "50 wake scans read {read} entries or rows: they walked the parked executions"
            );
            // After an ANALYZE (whose sample here is the whole table) a
            // partial index's reltuples is its number of entries; a full
            // index's, the table's.
            let entries = |columns: &'static str| {
                let url = db.url.clone();
                async move {
                    scalar(
                        &url,
                        format!(
                            "SELECT c.reltuples::bigint AS n FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                             WHERE i.indrelid = 'executions'::regclass AND pg_get_indexdef(i.indexrelid) LIKE '%({columns})%'"
                        ),
                    )
                    .await
                }
            };
            let analyze = Store::connect(&db.url, 1).await.expect("connect");
            analyze
                .db()
                .run(|c| async move {
                    c.execute_unprepared("ANALYZE executions").await?;
                    Ok(())
                })
                .await
                .expect("analyze");
            analyze.db().close().await;
            assert_eq!(
                entries("owner_node, state, signaled").await,
                10,
                "only the signaled"
            );
            assert_eq!(
                entries("owner_node, state, wait_until").await,
                1_010,
                "only those with a deadline"
            );
            assert_eq!(
                entries("state, wait_until").await,
                1_010,
                "only those with a deadline"
            );
            assert_eq!(entries("ended_at").await, 0, "none has ended");
            assert_eq!(
                entries("parent_id, created_at, id").await,
                0,
                "none is a child"
            );
        }
        Backend::Sqlite => {
            let partial = store
                .db()
                .run(|c| async move {
                    let rows = c
                        .query_all_raw(Statement::from_string(
                            DbBackend::Sqlite,
                            "SELECT name FROM pragma_index_list('executions') WHERE partial = 1 ORDER BY name",
                        ))
                        .await?;
                    Ok(rows
                        .iter()
                        .map(|r| r.try_get::<String>("", "name").unwrap_or_default())
                        .collect::<Vec<_>>())
                })
                .await
                .expect("index list");
            assert_eq!(
                partial,
                [
                    "ix_executions_children",
                    "ix_executions_due_by_owner",
                    "ix_executions_due_by_state",
                    "ix_executions_ended_at",
                    "ix_executions_signaled_by_owner"
                ]
            );
        }
        Backend::Mysql => {}
    }
}
