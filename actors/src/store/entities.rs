//! sea-orm entities, one module per table. The schema itself is owned by
//! `baton-migrations`; these models must match it.
#![allow(missing_docs)] // fields mirror the migrations, documented there

/// `executions`: one row per workflow run.
pub mod execution {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "executions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub workflow_id: String,
        pub workflow_version: i64,
        pub parent_id: Option<String>,
        pub state: String,
        pub inputs: String,
        pub variables: String,
        pub outputs: Option<String>,
        pub current_item: Option<String>,
        pub step: i64,
        pub attempt: i32,
        pub owner_node: Option<String>,
        pub owner_epoch: i64,
        pub error: Option<String>,
        pub wait_until: Option<i64>,
        pub wait_signal: Option<String>,
        pub created_at: i64,
        pub started_at: Option<i64>,
        pub ended_at: Option<i64>,
        pub updated_at: i64,
        pub run_token: i64,
        pub item_retries: i32,
        pub signaled: i16,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `item_log`: what happened to each item.
pub mod item_log {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "item_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub execution_id: String,
        pub item: String,
        pub step: i64,
        pub attempt: i32,
        pub event: String,
        pub node: String,
        pub time: i64,
        pub message: Option<String>,
        pub completed_step: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `workflows`: the current version of each definition.
pub mod workflow {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "workflows")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        pub version: i64,
        pub created_at: i64,
        pub updated_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `workflow_versions`: every stored version of every definition.
pub mod workflow_version {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "workflow_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub workflow_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i64,
        pub body: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `nodes`: cluster members.
pub mod node {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "nodes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub address: String,
        pub role: String,
        pub state: String,
        pub epoch: i64,
        pub last_heartbeat: i64,
        pub fingerprint: String,
        pub started_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `cluster_events`: joins, leaves, fencings, failovers.
pub mod cluster_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cluster_events")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub time: i64,
        pub kind: String,
        pub node_id: String,
        pub message: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `signals`: named events and interaction answers awaiting consumption.
pub mod signal {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "signals")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub execution_id: String,
        pub name: String,
        pub payload: String,
        pub created_at: i64,
        pub consumed_at: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `webhook_deliveries`: one cluster event sent (or being sent) to one webhook.
pub mod webhook_delivery {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub event_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub webhook: String,
        pub state: String,
        pub attempts: i32,
        pub next_attempt_at: i64,
        pub claimed_by: Option<String>,
        pub claimed_until: Option<i64>,
        pub last_status: Option<i32>,
        pub last_error: Option<String>,
        pub delivered_by: Option<String>,
        pub delivered_at: Option<i64>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
