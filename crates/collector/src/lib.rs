//! Corral's runtime: configuration, the sources (StatsD sockets; the agent and host pollers),
//! the flush pipeline that turns samples into batches, and the store they are published to.

pub mod attribution;
pub mod config;
mod daemon;
pub mod identity;
pub mod outputs;
pub mod pipeline;
pub mod priority;
pub mod probe;
pub mod reload;
pub mod sinks;
pub mod sources;
pub mod telemetry;

pub use daemon::{Collector, Shared};
