//! Query parameters shared by the list routes: states, limits, times and
//! cursors.
//!
//! A cursor is opaque to clients: the hex of the key of the last row of a
//! page (`created_at:id` for executions, `log:id` for item log records).
//! A page that may have more rows after it names the next cursor
//! (`next_cursor` in a search answer, the `Baton-Next-Cursor` header on
//! routes that answer a bare array); the last page names none.

use baton_actors::store::{ExecutionState, PageKey};

use crate::error::ApiError;

/// The response header that carries the next cursor of an array answer.
pub(crate) const NEXT_CURSOR: &str = "Baton-Next-Cursor";

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_query", param, message)
}

/// Checks a `state` parameter.
pub(crate) fn state(param: &str, s: &str) -> Result<(), ApiError> {
    if ExecutionState::parse(s).is_some() {
        return Ok(());
    }
    let all: Vec<&str> = ExecutionState::ALL.iter().map(|s| s.as_str()).collect();
    Err(invalid(
        param,
        format!("`{s}` is not one of {}", all.join(", ")),
    ))
}

/// A `limit` parameter between 1 and `max`, `default` when absent.
pub(crate) fn limit(given: Option<u64>, default: u64, max: u64) -> Result<u64, ApiError> {
    let limit = given.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(invalid("limit", format!("must be between 1 and {max}")))
    }
}

/// An RFC 3339 time parameter, in ms since the Unix epoch.
pub(crate) fn time(param: &str, text: &str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            invalid(
                param,
                format!("`{text}` is not an RFC 3339 time such as 2026-11-26T12:00:00Z: {e}"),
            )
        })
}

fn decode(text: &str) -> Option<String> {
    String::from_utf8(hex::decode(text).ok()?).ok()
}

/// The cursor after an execution.
pub(crate) fn execution_cursor(created_at: i64, id: &str) -> String {
    hex::encode(format!("{created_at}:{id}"))
}

/// Reads an execution cursor.
pub(crate) fn execution_key(cursor: &str) -> Result<PageKey, ApiError> {
    decode(cursor)
        .and_then(|t| {
            let (at, id) = t.split_once(':')?;
            Some(PageKey {
                created_at: at.parse().ok()?,
                id: id.to_owned(),
            })
        })
        .filter(|k| !k.id.is_empty())
        .ok_or_else(|| {
            invalid(
                "cursor",
                "not a cursor of this list (pass next_cursor as given)",
            )
        })
}

/// The cursor after an item log record.
pub(crate) fn log_cursor(record: i64) -> String {
    hex::encode(format!("log:{record}"))
}

/// Reads an item log cursor.
pub(crate) fn log_key(cursor: &str) -> Result<i64, ApiError> {
    decode(cursor)
        .and_then(|t| t.strip_prefix("log:")?.parse().ok())
        .ok_or_else(|| {
            invalid(
                "cursor",
                "not a cursor of this log (pass the Baton-Next-Cursor header as given)",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_and_refuse_what_they_did_not_write() {
        let c = execution_cursor(1_700_000_000_123, "0190-ab:c");
        let k = execution_key(&c).expect("key");
        assert_eq!(
            (k.created_at, k.id.as_str()),
            (1_700_000_000_123, "0190-ab:c")
        );
        assert_eq!(log_key(&log_cursor(42)).expect("log key"), 42);
        for bad in [
            "",
            "zz",
            &hex::encode("12"),
            &hex::encode("x:y"),
            &log_cursor(1),
        ] {
            assert!(execution_key(bad).is_err(), "{bad}");
        }
        assert!(log_key(&c).is_err());
    }
}
