//! Where datapoints come from.

pub mod agent;
pub mod host;
pub mod statsd;
pub mod udp;
