//! Which container a StatsD sample belongs to, beyond its own port or a `|c:` field: the
//! source IP, when the agent reports that IP for exactly one container (CONTRACT §3).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::RwLock;

/// Container dimensions of samples attributed to containers: who they belong to.
#[derive(Default)]
pub struct Attribution {
    by_ip: RwLock<Arc<HashMap<IpAddr, Arc<str>>>>,
}

impl Attribution {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the IP → container map (IPs of exactly one container only).
    pub fn set_ips(&self, map: HashMap<IpAddr, Arc<str>>) {
        *self.by_ip.write() = Arc::new(map);
    }

    /// A snapshot for a receive thread to consult without locking per datagram.
    pub fn ips(&self) -> Arc<HashMap<IpAddr, Arc<str>>> {
        self.by_ip.read().clone()
    }
}
