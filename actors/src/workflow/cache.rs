//! The definition cache: every loader of a stored definition version
//! (start, recovery, rescan, wake, child start, resume) goes through one
//! [`DefinitionCache`]. A stored version never changes, so an entry never
//! goes stale; the cache only saves a read and a parse.
//!
//! It also remembers each workflow's current version as last read, so
//! that a start need not read it: such a start is written only if that
//! version is still current when it commits
//! ([`NewExecution::expect_current`](crate::store::NewExecution)), and
//! is started again on a fresh read when it is not (another node replaced
//! or deleted the workflow since).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{parse_definition, Definition, ParseOptions, SourceFormat};
use crate::error::{EngineError, StoreError};
use crate::store::Store;

/// The item types this engine runs: today every type of the format. A
/// type the format has but the engine does not run is refused at import.
pub const SUPPORTED_ITEM_TYPES: &[&str] = super::parse::ITEM_TYPES;

/// Most definition versions (and current versions) kept; past it the
/// cache starts over.
const CAPACITY: usize = 1024;

#[derive(Debug, Default)]
struct Entries {
    /// Parsed definitions by (id, version).
    defs: HashMap<(String, i64), Arc<Definition>>,
    /// Each workflow's current version, as last read.
    current: HashMap<String, i64>,
}

/// Parsed definitions by (id, version), and each workflow's current
/// version as last read. Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct DefinitionCache(Arc<Mutex<Entries>>);

/// A workflow's current version and its definition, from
/// [`DefinitionCache::current`].
#[derive(Clone, Debug)]
pub struct Current {
    /// The definition at that version.
    pub def: Arc<Definition>,
    /// The version.
    pub version: i64,
    /// True when the version was read from the store just now; false when
    /// it is the version last read, which a start must check is still
    /// current when it commits (`NewExecution::expect_current`).
    pub fresh: bool,
}

impl DefinitionCache {
    /// A definition version from the cache, or read, parsed and cached.
    pub async fn get(
        &self,
        store: &Store,
        id: &str,
        version: i64,
    ) -> Result<Arc<Definition>, EngineError> {
        let key = (id.to_owned(), version);
        if let Some(d) = self.0.lock().ok().and_then(|c| c.defs.get(&key).cloned()) {
            return Ok(d);
        }
        let d = load_definition(store, id, version).await?;
        self.insert(key, d.clone());
        Ok(d)
    }

    /// Workflow `id` at its current version: the version last read (not
    /// `fresh`), or, when none was read or `reread`, the one stored now.
    /// [`EngineError::WorkflowNotFound`] when no such workflow is stored.
    pub async fn current(
        &self,
        store: &Store,
        id: &str,
        reread: bool,
    ) -> Result<Current, EngineError> {
        let known = if reread {
            None
        } else {
            self.0.lock().ok().and_then(|c| c.current.get(id).copied())
        };
        let (version, fresh) = match known {
            Some(v) => (v, false),
            None => {
                let Some(summary) = store.workflow_summary(id).await? else {
                    self.forget_current(id);
                    return Err(EngineError::WorkflowNotFound(id.to_owned()));
                };
                if let Ok(mut c) = self.0.lock() {
                    if c.current.len() >= CAPACITY {
                        c.current.clear();
                    }
                    // Versions only grow: a slower read of an older one
                    // does not replace a newer one read meanwhile.
                    let v = c.current.entry(summary.id).or_insert(summary.version);
                    *v = (*v).max(summary.version);
                }
                (summary.version, true)
            }
        };
        let def = self.get(store, id, version).await?;
        Ok(Current {
            def,
            version,
            fresh,
        })
    }

    /// Forgets workflow `id`'s current version (it was found stale): the
    /// next [`DefinitionCache::current`] reads it.
    pub fn forget_current(&self, id: &str) {
        if let Ok(mut c) = self.0.lock() {
            c.current.remove(id);
        }
    }

    fn insert(&self, key: (String, i64), def: Arc<Definition>) {
        if let Ok(mut c) = self.0.lock() {
            if c.defs.len() >= CAPACITY {
                c.defs.clear();
            }
            c.defs.insert(key, def);
        }
    }
}

/// Reads and parses one stored version of a definition, bypassing the
/// cache (use [`DefinitionCache::get`]).
async fn load_definition(
    store: &Store,
    id: &str,
    version: i64,
) -> Result<Arc<Definition>, EngineError> {
    let body = store
        .workflow_version(id, version)
        .await?
        .ok_or_else(|| EngineError::WorkflowNotFound(format!("{id} version {version}")))?;
    parse_stored(id, &body).map(Arc::new)
}

fn parse_stored(id: &str, body: &str) -> Result<Definition, EngineError> {
    // Stored bodies were validated on import; accept any action name (an
    // action unregistered since fails its item, not the load).
    let opts = ParseOptions {
        known_action: &|_| true,
        supported_types: SUPPORTED_ITEM_TYPES,
    };
    let parsed = parse_definition(body.as_bytes(), SourceFormat::Json, &opts);
    parsed.definition.ok_or_else(|| {
        EngineError::Store(StoreError::Corrupt {
            what: format!("workflow {id}"),
            reason: parsed
                .problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        })
    })
}
