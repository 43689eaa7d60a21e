//! The Mesos agent source (CONTRACT §3, §4): container resource metrics and dimensions.

use std::sync::Arc;

use corral_model::Identity;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::attribution::Attribution;
use crate::config::Config;
use crate::outputs::Outputs;
use crate::telemetry::Telemetry;

/// Starts the agent poller (when `agent.url` is set); it publishes `Source::Container`
/// batches, learns the node's mesos_id and keeps `attribution` current, until `stop`.
pub fn spawn(
    _config: &Config,
    _outputs: Arc<Outputs>,
    _identity: Arc<Identity>,
    _attribution: Arc<Attribution>,
    _telemetry: Arc<Telemetry>,
    _stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    None
}
