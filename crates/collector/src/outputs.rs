//! Where batches go once a source has made them: the store (read by the API) and every
//! configured sink (Kafka, or local Avro files).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corral_model::{MetricBatch, Source, Store};

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
    sinks: Vec<Arc<dyn Sink>>,
}

impl Outputs {
    pub fn new(store: Arc<Store>, sinks: Vec<Arc<dyn Sink>>) -> Self {
        Outputs { store, sinks }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
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
        for sink in &self.sinks {
            sink.submit(&non_empty);
        }
    }

    /// Lets every sink deliver or persist what it holds, within `deadline` each.
    pub async fn shutdown(&self, deadline: Duration) {
        for sink in &self.sinks {
            tracing::info!(sink = sink.name(), "stopping sink");
            sink.shutdown(deadline).await;
        }
    }
}
