//! The node's identity (dimensions every datapoint carries), which may be learned late: the
//! mesos_id arrives with the first successful agent poll.

use parking_lot::RwLock;

use crate::Dimensions;

#[derive(Debug, Default)]
pub struct Identity {
    inner: RwLock<NodeIds>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeIds {
    pub mesos_id: String,
    pub cluster_id: String,
    pub hostname: String,
}

impl Identity {
    pub fn new(ids: NodeIds) -> Self {
        Identity {
            inner: RwLock::new(ids),
        }
    }

    pub fn get(&self) -> NodeIds {
        self.inner.read().clone()
    }

    pub fn mesos_id(&self) -> String {
        self.inner.read().mesos_id.clone()
    }

    pub fn set_mesos_id(&self, id: &str) {
        let mut ids = self.inner.write();
        if ids.mesos_id != id {
            ids.mesos_id = id.to_string();
        }
    }

    /// Node-level dimensions: mesos_id, cluster_id, hostname.
    pub fn dimensions(&self) -> Dimensions {
        let ids = self.inner.read();
        Dimensions {
            mesos_id: ids.mesos_id.clone(),
            cluster_id: ids.cluster_id.clone(),
            hostname: ids.hostname.clone(),
            ..Dimensions::default()
        }
    }
}
