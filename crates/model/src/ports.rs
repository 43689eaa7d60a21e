//! Per-container StatsD ports (CONTRACT §3): the vocabulary shared by the API, which exposes
//! them to the hook that launches containers, and the collector, which binds them.

use serde::Serialize;

/// Where a container should send its StatsD (`STATSD_UDP_HOST`/`STATSD_UDP_PORT`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortAssignment {
    pub container_id: String,
    pub statsd_host: String,
    pub statsd_port: u16,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PortError {
    /// The container id is not acceptable (empty, too long, or with a `/`).
    InvalidId(String),
    /// No port is free in `statsd.container_port_range`.
    Exhausted,
    /// Binding or persisting failed.
    Io(String),
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortError::InvalidId(why) => write!(f, "invalid container id: {why}"),
            PortError::Exhausted => f.write_str("no free port in statsd.container_port_range"),
            PortError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PortError {}

/// The registry of per-container ports.
pub trait ContainerPorts: Send + Sync {
    /// Assigns (or returns the existing) port of a container. Idempotent.
    fn assign(&self, container_id: &str) -> Result<PortAssignment, PortError>;
    /// Releases a container's port; `Ok(false)` when it had none.
    fn release(&self, container_id: &str) -> Result<bool, PortError>;
    /// Every assignment, sorted by container id.
    fn list(&self) -> Vec<PortAssignment>;
}
