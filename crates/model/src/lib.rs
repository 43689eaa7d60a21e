//! Corral's data model, shared by every source, the store, the API and the sinks.
//!
//! Everything meets at [`MetricBatch`]: the datapoints of one flush (or one poll) for one
//! source and one container, with the dimensions that describe where they came from.
//! A datapoint refers to its series through a [`SeriesKey`], one shared allocation holding the
//! metric name and its sorted tags, so a flush of many series costs one small record per value.
//!
//! This crate does no I/O.

mod batch;
mod identity;
mod key;
pub mod ports;
pub mod store;
mod time;

pub use batch::{Datapoint, Dimensions, Kind, MetricBatch, Milli, Source, Stat, Suffix, Unit};
pub use identity::{Identity, NodeIds};
pub use key::{SeriesKey, TagIter};
pub use ports::{ContainerPorts, PortAssignment, PortError};
pub use store::Store;
pub use time::{rfc3339_millis, unix_millis};
