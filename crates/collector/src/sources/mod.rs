//! Where datapoints come from.

pub mod statsd;
pub mod udp;
