//! The node's state as the HTTP layer, the heartbeat and the failover
//! detector read it, without a message round trip: [`StatusCell`]. Its own
//! module so that the supervisor and its children share it without
//! importing each other.

use std::sync::RwLock;

use crate::messages::{NodeRole, NodeState};

/// The node's state as the HTTP layer reads it, without a message round trip.
#[derive(Debug)]
pub struct StatusCell(RwLock<NodeStatus>);

/// A snapshot of the node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its state.
    pub state: NodeState,
    /// Its role.
    pub role: NodeRole,
    /// Its epoch, once registered.
    pub epoch: i64,
    /// Executions with a running actor on this node.
    pub running: usize,
    /// Cluster mode: until when the last committed heartbeat lets this
    /// node act (sent + failover timeout - one interval, monotonic clock).
    pub lease_until: Option<std::time::Instant>,
}

/// How long a committed heartbeat lets a node act: the failover timeout
/// less one interval, so that a node fences itself before any peer can
/// declare it dead (DESIGN.md invariant 5).
pub fn lease_length(
    timeout: std::time::Duration,
    interval: std::time::Duration,
) -> std::time::Duration {
    timeout.saturating_sub(interval)
}

/// The lease a write (a heartbeat or a join) gives: counted from when it
/// was *sent*, not from when its answer came, since the database stamped
/// it somewhere in between.
pub fn lease_from(
    sent: std::time::Instant,
    timeout: std::time::Duration,
    interval: std::time::Duration,
) -> std::time::Instant {
    sent + lease_length(timeout, interval)
}

impl Default for StatusCell {
    fn default() -> Self {
        StatusCell(RwLock::new(NodeStatus {
            state: NodeState::Starting,
            role: NodeRole::Active,
            epoch: 0,
            running: 0,
            lease_until: None,
        }))
    }
}

impl StatusCell {
    /// The current snapshot. A node whose heartbeat lease has run out is
    /// reported `FENCED` at once, even before its heartbeat actor has had
    /// a chance to run (say, just after waking from a pause): it must not
    /// answer health checks or accept work as an active node.
    pub fn get(&self) -> NodeStatus {
        let mut s = self.raw();
        if let Some(until) = s.lease_until {
            if std::time::Instant::now() > until
                && matches!(s.state, NodeState::Running | NodeState::Standby)
            {
                s.state = NodeState::Fenced;
                s.role = NodeRole::Standby;
            }
        }
        s
    }

    /// The state as last set, without the lease check.
    pub fn raw(&self) -> NodeStatus {
        match self.0.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Extends the heartbeat lease (only ever forward).
    pub fn renew_lease(&self, until: std::time::Instant) {
        self.update(|s| s.lease_until = Some(s.lease_until.map_or(until, |u| u.max(until))));
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut NodeStatus)) {
        match self.0.write() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_lease_is_the_timeout_less_one_interval_from_the_send() {
        let (timeout, interval) = (Duration::from_millis(1000), Duration::from_millis(200));
        assert_eq!(lease_length(timeout, interval), Duration::from_millis(800));
        assert_eq!(
            lease_length(interval, timeout),
            Duration::ZERO,
            "never negative"
        );
        let sent = Instant::now();
        assert_eq!(
            lease_from(sent, timeout, interval),
            sent + Duration::from_millis(800)
        );
    }

    #[test]
    fn a_node_past_its_lease_reads_fenced_and_renewals_only_move_forward() {
        let cell = StatusCell::default();
        cell.update(|s| {
            s.state = NodeState::Running;
            s.role = NodeRole::Active;
        });
        let now = Instant::now();
        cell.renew_lease(now + Duration::from_secs(60));
        assert_eq!(cell.get().state, NodeState::Running);
        // An older renewal (a slow heartbeat answering late) does not
        // shorten the lease.
        cell.renew_lease(now);
        assert_eq!(cell.get().state, NodeState::Running);
        // Past the lease: fenced in the checked view, as set in the raw one.
        cell.update(|s| s.lease_until = now.checked_sub(Duration::from_millis(1)));
        let seen = cell.get();
        assert_eq!(
            (seen.state, seen.role),
            (NodeState::Fenced, NodeRole::Standby)
        );
        assert_eq!(cell.raw().state, NodeState::Running);
        // A stopping node is not turned into a fenced one by the check.
        cell.update(|s| s.state = NodeState::Stopping);
        assert_eq!(cell.get().state, NodeState::Stopping);
    }
}
