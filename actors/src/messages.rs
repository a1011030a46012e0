//! Messages shared by several actors of a node. Messages used by one actor
//! only live in that actor's file.

use actix::Message;
use serde::Serialize;

/// The states of a node, as `/api/healthstatus` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NodeState {
    /// Registering and recovering; not yet running workflows.
    Starting,
    /// An active node running workflows.
    Running,
    /// A standby node: healthy, running no workflows.
    Standby,
    /// Fenced: stopped its executions after losing the database or its lease.
    Fenced,
    /// Shutting down.
    Stopping,
}

impl NodeState {
    /// Every state, in the order above.
    pub const ALL: [NodeState; 5] = [
        NodeState::Starting,
        NodeState::Running,
        NodeState::Standby,
        NodeState::Fenced,
        NodeState::Stopping,
    ];

    /// The state's name as reported.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "STARTING",
            NodeState::Running => "RUNNING",
            NodeState::Standby => "STANDBY",
            NodeState::Fenced => "FENCED",
            NodeState::Stopping => "STOPPING",
        }
    }
}

/// A node's role in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Runs workflows and answers clients.
    Active,
    /// Waits to be promoted; runs nothing.
    Standby,
}

impl NodeRole {
    /// The role as stored and reported (`active`, `standby`).
    pub const fn as_str(self) -> &'static str {
        match self {
            NodeRole::Active => "active",
            NodeRole::Standby => "standby",
        }
    }
}

/// How an execution actor's run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// The execution reached an end item or failed.
    Finished(crate::store::ExecutionState),
    /// Canceled by a caller.
    Canceled,
    /// A fenced write was refused: another owner has it now.
    OwnershipLost,
    /// The run's claim lost (DESIGN.md invariant 10): the row it was
    /// started from was stale (another run claimed it, it moved on, parked
    /// or ended). Nothing was written.
    Superseded,
    /// Stopped by the node (shutdown or fencing) between items.
    Stopped,
    /// Parked on a timer, signal or interaction: no actor is held while it
    /// waits; the owner's wake scan starts one when it is due.
    Parked,
    /// A store error that is not a fencing refusal; the execution stays
    /// unfinished in the store and is resumed when claimed again.
    StoreFailed(String),
}

/// Sent by an `ExecutionActor` to its supervisor when its run ends.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ExecutionEnded {
    /// The execution.
    pub id: String,
    /// How it ended.
    pub outcome: RunOutcome,
}

/// Tells an execution actor to cancel its execution; resolves once the
/// canceled state is written (or the run has ended otherwise).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Cancel;

/// Tells an execution actor to stop after its current item (checkpointed),
/// or at once when `now`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop {
    /// Abort the current item instead of letting it finish.
    pub now: bool,
    /// Record the aborted item as interrupted (a drain past its bound,
    /// whose node still owns the execution). `false` when fencing: no
    /// further write may be attempted.
    pub record: bool,
}

/// Sent by an execution actor that has created a child execution (owned by
/// this node): the supervisor starts an actor for it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StartChild {
    /// The child as created.
    pub row: crate::store::entities::execution::Model,
}

/// Sent by the `HeartbeatActor` when the node must fence itself.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FenceSelf {
    /// Why, for the kind of reason counted by `/metrics`.
    pub kind: FenceKind,
    /// Why, in words.
    pub reason: String,
}

/// The kinds of reason a node fences itself for (`baton_self_fencings_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceKind {
    /// No heartbeat committed within its lease (the database was away).
    HeartbeatDeadline,
    /// Its heartbeat was refused: declared dead, or its epoch moved on.
    DeclaredDead,
    /// Its row no longer says active.
    Demoted,
    /// An operator evicted it (`POST /api/cluster/nodes/{id}/fence`), or
    /// the embedder fenced it.
    Operator,
}

impl FenceKind {
    /// Every kind, in the order above.
    pub const ALL: [FenceKind; 4] = [
        FenceKind::HeartbeatDeadline,
        FenceKind::DeclaredDead,
        FenceKind::Demoted,
        FenceKind::Operator,
    ];

    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FenceKind::HeartbeatDeadline => "heartbeat_deadline",
            FenceKind::DeclaredDead => "declared_dead",
            FenceKind::Demoted => "demoted",
            FenceKind::Operator => "operator",
        }
    }
}

/// Sent by the `HeartbeatActor` with the node's row after each heartbeat,
/// so the supervisor learns of a promotion made by another node.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct NodeSeen {
    /// The node's row as the database has it.
    pub row: crate::store::entities::node::Model,
}

/// Tells the supervisor that it may own executions it does not run yet
/// (takeover, adoption, promotion): it re-reads the store and resumes them.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Rescan {
    /// This node was just promoted to active.
    pub promoted: bool,
}
