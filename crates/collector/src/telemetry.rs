//! Corral's own metrics (`corral.*`): counters and gauges that any component registers once
//! and updates lock-free. The flusher publishes them with every flush as node-level app
//! metrics, so they show in `/v0/node/app` and in `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use corral_model::{Datapoint, Kind, SeriesKey, Stat, Unit};
use parking_lot::Mutex;

/// A monotonic count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A level that goes up and down (stored as f64 bits).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
}

/// The registry. Cheap to share (`Arc<Telemetry>`); registration takes a lock, updates don't.
#[derive(Default)]
pub struct Telemetry {
    metrics: Mutex<Vec<(SeriesKey, Metric)>>,
}

impl Telemetry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or returns the already registered) counter `name` with `tags`.
    pub fn counter(&self, name: &str, tags: &[(&str, &str)]) -> Arc<Counter> {
        let key = SeriesKey::new(name, tags.iter().copied());
        let mut metrics = self.metrics.lock();
        for (k, m) in metrics.iter() {
            if let (true, Metric::Counter(c)) = (*k == key, m) {
                return c.clone();
            }
        }
        let c = Arc::new(Counter::default());
        metrics.push((key, Metric::Counter(c.clone())));
        c
    }

    /// Registers (or returns the already registered) gauge `name` with `tags`.
    pub fn gauge(&self, name: &str, tags: &[(&str, &str)]) -> Arc<Gauge> {
        let key = SeriesKey::new(name, tags.iter().copied());
        let mut metrics = self.metrics.lock();
        for (k, m) in metrics.iter() {
            if let (true, Metric::Gauge(g)) = (*k == key, m) {
                return g.clone();
            }
        }
        let g = Arc::new(Gauge::default());
        metrics.push((key, Metric::Gauge(g.clone())));
        g
    }

    /// The current values as datapoints.
    pub fn datapoints(&self, out: &mut Vec<Datapoint>) {
        for (key, m) in self.metrics.lock().iter() {
            out.push(match m {
                Metric::Counter(c) => {
                    Datapoint::new(key.clone(), Stat::Value, Unit::None, c.get() as f64)
                        .with_kind(Kind::Cumulative)
                }
                Metric::Gauge(g) => Datapoint::new(key.clone(), Stat::Value, Unit::None, g.get()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_idempotent_and_values_are_published() {
        let t = Telemetry::new();
        let a = t.counter("corral.x", &[("k", "v")]);
        let b = t.counter("corral.x", &[("k", "v")]);
        a.add(2);
        b.inc();
        t.gauge("corral.g", &[]).set(1.5);
        let mut out = Vec::new();
        t.datapoints(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].value, 3.0);
        assert_eq!(out[0].kind, Kind::Cumulative);
        assert_eq!(out[1].value, 1.5);
        assert_eq!(out[1].kind, Kind::Gauge);
    }
}
