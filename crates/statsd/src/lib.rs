//! The StatsD dialect of Corral: parsing datagrams into lines and aggregating them per flush
//! interval. No I/O here: the collector owns the sockets and the clock.
//!
//! - [`parse`]: one line (`&[u8]`) to a borrowed [`Parsed`], or a counted [`Reject`] reason,
//!   without heap allocation.
//! - [`Aggregator`]: per (container, name, sorted tags) series state, flushed into datapoints.

pub mod aggregate;
mod line;
mod parse;
mod sketch;

pub use aggregate::{
    AddError, Aggregator, AggregatorConfig, Batcher, FlushOutput, FlushState, GaugeSign, Partial,
    Refused,
};
pub use line::{Event, Line, MetricType, Parsed, Reject, ServiceCheck, Tags, Value, Values};
pub use parse::{lines, parse};

/// A deterministic pseudo-random sequence (xorshift64) for the unit tests' generated inputs.
#[cfg(test)]
pub(crate) struct Xorshift(u64);

#[cfg(test)]
impl Xorshift {
    /// `seed` must not be 0.
    pub(crate) fn new(seed: u64) -> Self {
        Xorshift(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
