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
