//! Where datapoints come from.

pub mod agent;
pub mod container_ports;
pub mod host;
pub mod statsd;
pub mod udp;
