//! The definition cache: every loader of a stored definition version
//! (start, recovery, rescan, wake, child start, resume) goes through one
//! [`DefinitionCache`]. A stored version never changes, so an entry never
//! goes stale; the cache only saves a read and a parse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{parse_definition, Definition, ParseOptions, SourceFormat};
use crate::error::{EngineError, StoreError};
use crate::store::Store;

/// The item types this engine runs: today every type of the format. A
/// type the format has but the engine does not run is refused at import.
pub const SUPPORTED_ITEM_TYPES: &[&str] = super::parse::ITEM_TYPES;

/// Most definition versions kept; past it the cache starts over.
const CAPACITY: usize = 1024;

type Entries = HashMap<(String, i64), Arc<Definition>>;

/// Parsed definitions by (id, version). Cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct DefinitionCache(Arc<Mutex<Entries>>);

impl DefinitionCache {
    /// A definition version from the cache, or read, parsed and cached.
    pub async fn get(
        &self,
        store: &Store,
        id: &str,
        version: i64,
    ) -> Result<Arc<Definition>, EngineError> {
        let key = (id.to_owned(), version);
        if let Some(d) = self.0.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(d);
        }
        let d = load_definition(store, id, version).await?;
        self.insert(key, d.clone());
        Ok(d)
    }

    fn insert(&self, key: (String, i64), def: Arc<Definition>) {
        if let Ok(mut c) = self.0.lock() {
            if c.len() >= CAPACITY {
                c.clear();
            }
            c.insert(key, def);
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
