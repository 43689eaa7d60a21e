//! The dimensions of every container the agent reports, kept by the poller and read by the
//! flush, so that a container's StatsD batches carry its executor, framework, task and labels.

use std::collections::HashMap;
use std::sync::Arc;

use corral_model::Dimensions;
use parking_lot::RwLock;

#[derive(Default)]
pub struct ContainerDirectory {
    map: RwLock<Arc<HashMap<Arc<str>, Arc<Dimensions>>>>,
}

impl ContainerDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces every entry (after a successful poll).
    pub fn replace(&self, map: HashMap<Arc<str>, Arc<Dimensions>>) {
        *self.map.write() = Arc::new(map);
    }

    pub fn clear(&self) {
        self.replace(HashMap::new());
    }

    /// A snapshot to look many containers up without locking each time.
    pub fn snapshot(&self) -> Arc<HashMap<Arc<str>, Arc<Dimensions>>> {
        self.map.read().clone()
    }

    pub fn get(&self, container_id: &str) -> Option<Arc<Dimensions>> {
        self.map.read().get(container_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
