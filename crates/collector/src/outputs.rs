//! Where batches go once a source has made them: the store (read by the API) and every
//! configured sink (Kafka, or local Avro files). A configuration reload may replace the sinks
//! while sources publish: each publish goes wholly to the old sinks or wholly to the new ones.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corral_model::store::Retraction;
use corral_model::{MetricBatch, Source, Store};
use parking_lot::RwLock;

/// A destination for batches, such as Kafka.
pub trait Sink: Send + Sync {
    fn name(&self) -> &'static str;

    /// Takes the batches of one flush or poll. Must not block: a sink queues (or spools)
    /// what it cannot deliver at once.
    fn submit(&self, batches: &[Arc<MetricBatch>]);

    /// Delivers or persists what is still queued, within `deadline`.
    fn shutdown(&self, deadline: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

pub struct Outputs {
    store: Arc<Store>,
    /// Read for every publish (submitting does not block), written by a reload.
    sinks: RwLock<Vec<Arc<dyn Sink>>>,
}

impl Outputs {
    pub fn new(store: Arc<Store>, sinks: Vec<Arc<dyn Sink>>) -> Self {
        Outputs {
            store,
            sinks: RwLock::new(sinks),
        }
    }

    /// Puts `sinks` in place of the current ones and returns those, for the caller to shut
    /// down: once this returns, nothing is submitted to them any more.
    pub fn replace_sinks(&self, sinks: Vec<Arc<dyn Sink>>) -> Vec<Arc<dyn Sink>> {
        std::mem::replace(&mut *self.sinks.write(), sinks)
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Takes the batches of `source` out of the store ahead of the [`Outputs::publish`] that
    /// brings its next ones, so that they do not take memory next to those while they are
    /// made; API readers of `source` wait for the publish (see [`Store::retract`]). Sinks
    /// are not concerned: they hold what they were given until they have written it.
    pub fn retract(&self, source: Source) -> Retraction<'_> {
        self.store.retract(source)
    }

    /// Publishes the complete set of batches of `source` (what is not among them leaves the
    /// store) and hands them to the sinks.
    pub fn publish(&self, source: Source, batches: Vec<MetricBatch>) {
        let batches: Vec<Arc<MetricBatch>> = batches.into_iter().map(Arc::new).collect();
        self.store.replace(source, &batches);
        let non_empty: Vec<Arc<MetricBatch>> = batches
            .into_iter()
            .filter(|b| b.points.iter().any(|p| p.in_interval()))
            .collect();
        if non_empty.is_empty() {
            return;
        }
        for sink in self.sinks.read().iter() {
            sink.submit(&non_empty);
        }
    }

    /// Lets every sink deliver or persist what it holds, within `deadline` each.
    pub async fn shutdown(&self, deadline: Duration) {
        let sinks = self.sinks.read().clone();
        for sink in &sinks {
            tracing::info!(sink = sink.name(), "stopping sink");
            sink.shutdown(deadline).await;
        }
    }
}
