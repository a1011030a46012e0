//! Query parameters shared by the list routes: states, limits, times and
//! cursors.
//!
//! A cursor is opaque to clients: the key of the last row of a page in
//! hex. An execution cursor is 16 hex digits of `created_at` then the id's
//! bytes in hex; an item log cursor is 16 hex digits of the record id.
//! Every string of that shape is a key (the schema's pattern says which
//! strings those are), so a cursor that was not made here still names a
//! place in the list rather than an error.
//! A page that may have more rows after it names the next cursor
//! (`next_cursor` in a search answer, the `Baton-Next-Cursor` header on
//! routes that answer a bare array); the last page names none.

use baton_actors::store::{ExecutionState, PageKey};

use crate::error::ApiError;

/// The response header that carries the next cursor of an array answer.
pub(crate) const NEXT_CURSOR: &str = "Baton-Next-Cursor";

/// The pattern of an execution cursor (the handlers' annotations repeat
/// it; a test holds them equal).
#[cfg(test)]
pub(crate) const EXECUTION_CURSOR: &str = "^[0-9a-f]{16}(?:[0-9a-f]{2})*$";

/// The pattern of an item log cursor.
#[cfg(test)]
pub(crate) const LOG_CURSOR: &str = "^[0-9a-f]{16}$";

/// A state, as a query parameter takes it (for the schema; the handlers
/// check the text with [`state`]).
#[derive(Clone, Copy, Debug, utoipa::ToSchema)]
#[schema(rename_all = "kebab-case")]
#[allow(dead_code)]
pub(crate) enum StateName {
    /// `running`
    Running,
    /// `waiting`
    Waiting,
    /// `waiting-signal`
    WaitingSignal,
    /// `completed`
    Completed,
    /// `failed`
    Failed,
    /// `canceled`
    Canceled,
}

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

fn is_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// 16 lower-case hex digits: an `i64`'s bits.
fn number(text: &str) -> Option<i64> {
    if text.len() != 16 || !is_hex(text) {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(|n| n as i64)
}

/// The cursor after an execution.
pub(crate) fn execution_cursor(created_at: i64, id: &str) -> String {
    format!("{:016x}{}", created_at as u64, hex::encode(id))
}

/// Reads an execution cursor.
pub(crate) fn execution_key(cursor: &str) -> Result<PageKey, ApiError> {
    let bad = || {
        invalid(
            "cursor",
            "not a cursor of this list (pass next_cursor as given)",
        )
    };
    let created_at = cursor.get(..16).and_then(number).ok_or_else(bad)?;
    let id = cursor
        .get(16..)
        .filter(|rest| is_hex(rest))
        .and_then(|rest| hex::decode(rest).ok())
        .ok_or_else(bad)?;
    Ok(PageKey {
        created_at,
        id: String::from_utf8_lossy(&id).into_owned(),
    })
}

/// The cursor after an item log record.
pub(crate) fn log_cursor(record: i64) -> String {
    format!("{:016x}", record as u64)
}

/// Reads an item log cursor.
pub(crate) fn log_key(cursor: &str) -> Result<i64, ApiError> {
    number(cursor).ok_or_else(|| {
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
    fn cursors_read_back_and_every_string_of_their_pattern_is_a_key() {
        let c = execution_cursor(1_700_000_000_123, "0190-ab:c");
        let k = execution_key(&c).expect("key");
        assert_eq!(
            (k.created_at, k.id.as_str()),
            (1_700_000_000_123, "0190-ab:c")
        );
        assert_eq!(log_key(&log_cursor(42)).expect("log key"), 42);
        assert_eq!(log_key(&log_cursor(-1)).expect("any i64"), -1);
        // Not of the pattern: refused.
        for bad in [
            "",
            "zz",
            "0123",
            "0123456789abcdeg",
            "0123456789ABCDEF",
            "0123456789abcdef0",
        ] {
            assert!(execution_key(bad).is_err(), "{bad}");
        }
        assert!(log_key(&c).is_err());
        assert!(LOG_CURSOR.contains("{16}") && EXECUTION_CURSOR.contains("{16}"));
        // Of the pattern: a key, whatever the bytes.
        for s in [
            "0000000000000000",
            "ffffffffffffffff",
            "00000000000000ffc3",
            "7fffffffffffffff00",
        ] {
            assert!(execution_key(s).is_ok(), "{s}");
        }
        assert!(log_key("ffffffffffffffff").is_ok());
    }
}
