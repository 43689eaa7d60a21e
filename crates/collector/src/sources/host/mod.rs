//! Host metrics from `/proc` and `statvfs` (CONTRACT §4), polled every `node.poll_interval`.
//!
//! Each reader is a pure function over the text of one `/proc` file (`cpu`, `memory`, `load`,
//! `uptime`, `net`, `fs`, `process`); [`HostReader`] runs them over a proc root and
//! [`Poller`] publishes the result. A failing reader only loses its own metrics.

pub mod cpu;
mod error;
pub mod fs;
pub mod load;
pub mod memory;
pub mod net;
mod point;
mod poller;
pub mod process;
mod reader;
pub mod uptime;

use std::sync::Arc;

use corral_model::Identity;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::outputs::Outputs;
use crate::telemetry::Telemetry;

pub use error::{ParseError, ReadError};
pub use poller::{Poller, STATVFS_TIMEOUT};
pub use reader::{HostReader, ProcReading, Reader, ReaderResult, Reading};

/// Starts the host poller; it publishes `Source::Node` batches until `stop` turns true.
pub fn spawn(
    config: &Config,
    outputs: Arc<Outputs>,
    identity: Arc<Identity>,
    telemetry: Arc<Telemetry>,
    stop: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    let poller = Poller::new(HostReader::system(), outputs, identity, &telemetry);
    Some(tokio::spawn(poller.run(config.node.poll_interval, stop)))
}
