//! The store of the latest values: the newest batch per (source, container).
//!
//! Sources replace their batches wholesale (the statsd flusher after every flush, the agent
//! poller after every poll), so a container that is gone, or a flush without samples, leaves
//! nothing stale behind. Readers get `Arc`s and never hold the lock while rendering.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;

use crate::{Datapoint, MetricBatch, Source};

type Key = (Source, Option<Arc<str>>);

#[derive(Default)]
pub struct Store {
    batches: RwLock<HashMap<Key, Arc<MetricBatch>>>,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces every batch of `source` with `batches` (one per container, or the node's).
    pub fn replace(&self, source: Source, batches: &[Arc<MetricBatch>]) {
        let mut map = self.batches.write();
        map.retain(|(s, _), _| *s != source);
        for b in batches {
            debug_assert_eq!(b.source, source);
            map.insert((source, b.container_id.clone()), b.clone());
        }
    }

    /// Inserts or replaces one batch.
    pub fn publish(&self, batch: Arc<MetricBatch>) {
        let key = (batch.source, batch.container_id.clone());
        self.batches.write().insert(key, batch);
    }

    /// Drops batches whose timestamp is older than `max_age` before `now`.
    pub fn expire(&self, now: SystemTime, max_age: Duration) -> usize {
        let mut map = self.batches.write();
        let before = map.len();
        map.retain(|_, b| {
            now.duration_since(b.timestamp)
                .map(|age| age <= max_age)
                .unwrap_or(true)
        });
        before - map.len()
    }

    pub fn get(&self, source: Source, container: Option<&str>) -> Option<Arc<MetricBatch>> {
        let key: Key = (source, container.map(Arc::from));
        self.batches.read().get(&key).cloned()
    }

    /// Ids of containers that have resource or app metrics, sorted.
    pub fn containers(&self) -> Vec<Arc<str>> {
        let map = self.batches.read();
        let mut ids: Vec<Arc<str>> = map
            .keys()
            .filter(|(s, _)| *s != Source::Node)
            .filter_map(|(_, c)| c.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Every batch, for exposition formats that render everything (Prometheus, sinks).
    pub fn all(&self) -> Vec<Arc<MetricBatch>> {
        self.batches.read().values().cloned().collect()
    }

    /// Total datapoints held (a self-metric).
    pub fn datapoints(&self) -> usize {
        self.batches.read().values().map(|b| b.points.len()).sum()
    }
}

/// The datapoints of a sorted batch whose full name is exactly `name`.
pub fn points_named<'a>(batch: &'a MetricBatch, name: &str) -> &'a [Datapoint] {
    let mut buf = String::new();
    let mut rendered = |p: &Datapoint| {
        buf.clear();
        p.write_name(&mut buf);
        buf.as_str().cmp(name)
    };
    let start = batch.points.partition_point(|p| rendered(p).is_lt());
    let end = start + batch.points[start..].partition_point(|p| rendered(p).is_eq());
    &batch.points[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dimensions, SeriesKey, Stat, Unit};

    fn batch(source: Source, container: Option<&str>, names: &[&str]) -> MetricBatch {
        let mut b = MetricBatch {
            source,
            container_id: container.map(Arc::from),
            dimensions: Arc::new(Dimensions::default()),
            timestamp: SystemTime::now(),
            points: names
                .iter()
                .map(|n| Datapoint::new(SeriesKey::plain(n), Stat::Value, Unit::None, 1.0))
                .collect(),
        };
        b.sort();
        b
    }

    #[test]
    fn replace_drops_what_is_gone() {
        let s = Store::new();
        s.replace(
            Source::App,
            &[
                Arc::new(batch(Source::App, Some("a"), &["x"])),
                Arc::new(batch(Source::App, None, &["y"])),
            ],
        );
        s.publish(Arc::new(batch(
            Source::Container,
            Some("b"),
            &["mem.total"],
        )));
        assert_eq!(s.containers(), vec![Arc::from("a"), Arc::from("b")]);
        s.replace(Source::App, &[]);
        assert_eq!(s.containers(), vec![Arc::from("b")]);
        assert!(s.get(Source::App, None).is_none());
        assert!(s.get(Source::Container, Some("b")).is_some());
    }

    #[test]
    fn exact_name_lookup() {
        let b = batch(Source::App, None, &["foo", "foo.bar", "foobar", "fo"]);
        let hits = points_named(&b, "foo");
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].key.name(), "foo");
        assert!(points_named(&b, "nope").is_empty());
    }
}
