//! Host metrics from `/proc` and `statvfs` (CONTRACT §4), polled every `node.poll_interval`.

use std::sync::Arc;

use corral_model::Identity;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::outputs::Outputs;
use crate::telemetry::Telemetry;

/// Starts the host poller; it publishes `Source::Node` batches until `stop` turns true.
pub fn spawn(
    _config: &Config,
    _outputs: Arc<Outputs>,
    _identity: Arc<Identity>,
    _telemetry: Arc<Telemetry>,
    _stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    None
}
