//! Black-box tests of Baton: the HTTP API against a real listening server,
//! the engine on SQLite, PostgreSQL and MariaDB, crashes of the real
//! binary, fencing, scripts limits, the CLI and the embedding API.
//!
//! PostgreSQL and MariaDB tests read `BATON_TEST_POSTGRES_URL` and
//! `BATON_TEST_MYSQL_URL`; without them they are skipped with a printed
//! reason. Each test gets a database of its own.

// Test helpers are not a public API.
#![allow(missing_docs, unreachable_pub, clippy::unwrap_used)]

mod util;

mod api;
mod browser;
mod chaos;
mod claims;
mod cli;
mod cluster;
mod crash;
mod deploy;
mod driver;
mod embedded;
mod engine;
mod ha;
mod http_action;
mod metrics;
mod nested;
mod outage;
mod planner;
mod readme;
mod scripts;
mod search;
mod tls;
mod waits;
mod webhooks;
