//! The store of the latest values: the newest batch per (source, container).
//!
//! Sources replace their batches wholesale (the statsd flusher after every flush, the agent
//! poller after every poll), so a container that is gone, or a flush without samples, leaves
//! nothing stale behind. Readers get `Arc`s and never hold the lock while rendering.
//!
//! A source whose batches are large can retract them before it computes the next ones, so
//! that the old and the new never take memory at once (at 100k StatsD series each set is
//! about 10 MB). Until the new ones are published, the readers that ask for that source's
//! data through the `*_published` methods wait for them instead of seeing it missing; the
//! wait ends after [`PUBLISH_WAIT`] at the latest, for a flush that failed or hangs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{Datapoint, MetricBatch, Source};

type Key = (Source, Option<Arc<str>>);

/// How long after a retraction its readers wait at most for the new batches; after that they
/// get what the store holds. Far above how long a flush takes (under half a second at 100k
/// series), so it only matters when a flush hangs.
pub const PUBLISH_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Batches {
    map: HashMap<Key, Arc<MetricBatch>>,
    /// Sources retracted and not yet replaced.
    retracted: Vec<Retracted>,
    /// Numbers retractions, so that a guard ends only its own.
    retractions: u64,
}

struct Retracted {
    source: Source,
    id: u64,
    /// When readers stop waiting for it.
    deadline: Instant,
}

impl Batches {
    /// The deadline of the retraction a reader of `source` (of every source, for `None`)
    /// waits for, if any.
    fn retracted(&self, source: Option<Source>) -> Option<Instant> {
        self.retracted
            .iter()
            .filter(|r| source.is_none_or(|s| s == r.source))
            .map(|r| r.deadline)
            .max()
    }

    /// Ends the retraction of `source` (only retraction `id`, when given); whether there was
    /// one.
    fn end_retraction(&mut self, source: Source, id: Option<u64>) -> bool {
        let before = self.retracted.len();
        self.retracted
            .retain(|r| r.source != source || id.is_some_and(|id| id != r.id));
        self.retracted.len() != before
    }

    fn containers(&self) -> Vec<Arc<str>> {
        let mut ids: Vec<Arc<str>> = self
            .map
            .keys()
            .filter(|(s, _)| *s != Source::Node)
            .filter_map(|(_, c)| c.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

pub struct Store {
    batches: RwLock<Batches>,
    /// Woken when a retraction ends.
    published: Notify,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        Store {
            batches: RwLock::default(),
            published: Notify::new(),
        }
    }

    /// Replaces every batch of `source` with `batches` (one per container, or the node's),
    /// and ends a retraction of `source`.
    pub fn replace(&self, source: Source, batches: &[Arc<MetricBatch>]) {
        let ended = {
            let mut inner = self.batches.write();
            inner.map.retain(|(s, _), _| *s != source);
            for b in batches {
                debug_assert_eq!(b.source, source);
                inner
                    .map
                    .insert((source, b.container_id.clone()), b.clone());
            }
            inner.end_retraction(source, None)
        };
        if ended {
            self.published.notify_waiters();
        }
    }

    /// Removes every batch of `source` ahead of the [`Store::replace`] that brings its next
    /// ones. Until that replace, or until the returned guard is dropped (a flush that failed),
    /// readers of `source` through the `*_published` methods wait, for at most
    /// [`PUBLISH_WAIT`] from now. A reader already holding one of the batches keeps it.
    pub fn retract(&self, source: Source) -> Retraction<'_> {
        let (id, removed) = {
            let mut inner = self.batches.write();
            inner.retractions += 1;
            let id = inner.retractions;
            inner.end_retraction(source, None);
            inner.retracted.push(Retracted {
                source,
                id,
                deadline: Instant::now() + PUBLISH_WAIT,
            });
            let keys: Vec<Key> = inner
                .map
                .keys()
                .filter(|(s, _)| *s == source)
                .cloned()
                .collect();
            let removed: Vec<Arc<MetricBatch>> =
                keys.iter().filter_map(|k| inner.map.remove(k)).collect();
            (id, removed)
        };
        // Freed (unless a reader still holds them) without the lock held.
        drop(removed);
        Retraction {
            store: self,
            source,
            id,
        }
    }

    /// Inserts or replaces one batch.
    pub fn publish(&self, batch: Arc<MetricBatch>) {
        let key = (batch.source, batch.container_id.clone());
        self.batches.write().map.insert(key, batch);
    }

    /// The batch of `source` for `container` (the node's for `None`), as the store holds it
    /// now: nothing while `source` is retracted.
    pub fn get(&self, source: Source, container: Option<&str>) -> Option<Arc<MetricBatch>> {
        let key: Key = (source, container.map(Arc::from));
        self.batches.read().map.get(&key).cloned()
    }

    /// [`Store::get`] once a retraction of `source` has ended.
    pub async fn get_published(
        &self,
        source: Source,
        container: Option<&str>,
    ) -> Option<Arc<MetricBatch>> {
        let key: Key = (source, container.map(Arc::from));
        self.when_published(Some(source), |b| b.map.get(&key).cloned())
            .await
    }

    /// Ids of containers that have resource or app metrics, sorted.
    pub fn containers(&self) -> Vec<Arc<str>> {
        self.batches.read().containers()
    }

    /// [`Store::containers`] once every retraction has ended.
    pub async fn containers_published(&self) -> Vec<Arc<str>> {
        self.when_published(None, Batches::containers).await
    }

    /// Every batch, for exposition formats that render everything (Prometheus, sinks).
    pub fn all(&self) -> Vec<Arc<MetricBatch>> {
        self.batches.read().map.values().cloned().collect()
    }

    /// [`Store::all`] once every retraction has ended.
    pub async fn all_published(&self) -> Vec<Arc<MetricBatch>> {
        self.when_published(None, |b| b.map.values().cloned().collect())
            .await
    }

    /// Total datapoints held (a self-metric).
    pub fn datapoints(&self) -> usize {
        self.batches
            .read()
            .map
            .values()
            .map(|b| b.points.len())
            .sum()
    }

    /// Reads with `read` once no retraction of `source` (of any source, for `None`) is under
    /// way, or once the one under way is past its deadline. The check and the read are made
    /// under one lock, so a read never sees a retraction's empty state, except past its
    /// deadline.
    async fn when_published<R>(
        &self,
        source: Option<Source>,
        read: impl FnOnce(&Batches) -> R,
    ) -> R {
        loop {
            // Created before the check: it is woken by any retraction ending after this.
            let published = self.published.notified();
            let deadline = {
                let inner = self.batches.read();
                match inner.retracted(source) {
                    Some(deadline) if deadline > Instant::now() => deadline,
                    _ => return read(&inner),
                }
            };
            if tokio::time::timeout_at(deadline, published).await.is_err() {
                return read(&self.batches.read());
            }
            // Another retraction may have begun since this one ended: check again.
        }
    }
}

/// A retraction under way (see [`Store::retract`]). Dropping it ends the retraction if no
/// replace has: a flush that fails or panics after retracting lets its readers go at once
/// (they find no batches of the source) rather than after [`PUBLISH_WAIT`].
#[must_use = "dropping it ends the retraction at once"]
pub struct Retraction<'a> {
    store: &'a Store,
    source: Source,
    id: u64,
}

impl Drop for Retraction<'_> {
    fn drop(&mut self) {
        let ended = self
            .store
            .batches
            .write()
            .end_retraction(self.source, Some(self.id));
        if ended {
            self.store.published.notify_waiters();
        }
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

    pub(super) fn batch(source: Source, container: Option<&str>, names: &[&str]) -> MetricBatch {
        let mut b = MetricBatch {
            source,
            container_id: container.map(Arc::from),
            dimensions: Arc::new(Dimensions::default()),
            timestamp: std::time::SystemTime::now(),
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

/// Retraction and the readers that wait for the next batches. Tokio's clock is paused: it
/// moves only when every task waits, so the waits below are exact and take no real time.
#[cfg(test)]
mod retraction {
    use super::*;

    fn batch(source: Source, container: Option<&str>, names: &[&str]) -> Arc<MetricBatch> {
        Arc::new(super::tests::batch(source, container, names))
    }

    fn names(b: &Option<Arc<MetricBatch>>) -> Vec<String> {
        b.iter()
            .flat_map(|b| b.points.iter().map(|p| p.key.name().to_string()))
            .collect()
    }

    /// A node batch, a container's resource batch, and the app batches of an earlier flush.
    fn store() -> Arc<Store> {
        let s = Arc::new(Store::new());
        s.publish(batch(Source::Node, None, &["cpu.total"]));
        s.replace(
            Source::Container,
            &[batch(Source::Container, Some("c"), &["mem.total"])],
        );
        s.replace(
            Source::App,
            &[
                batch(Source::App, None, &["old"]),
                batch(Source::App, Some("a"), &["old"]),
            ],
        );
        s
    }

    /// A reader of the app batch of `container` (the node's for `None`), running on its own.
    fn spawn_app_reader(
        s: &Arc<Store>,
        container: Option<&'static str>,
    ) -> tokio::task::JoinHandle<Option<Arc<MetricBatch>>> {
        let s = s.clone();
        tokio::spawn(async move { s.get_published(Source::App, container).await })
    }

    /// Fails instead of hanging when a wait is not bounded.
    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(PUBLISH_WAIT * 10, f)
            .await
            .expect("the wait ended")
    }

    #[tokio::test(start_paused = true)]
    async fn retract_releases_the_batches_readers_keep_theirs() {
        let s = store();
        let held = s.get(Source::App, None).unwrap();
        let _r = s.retract(Source::App);
        // The store no longer refers to the batch; the reader's copy is the last one.
        assert_eq!(Arc::strong_count(&held), 1);
        assert_eq!(held.points.len(), 1);
        assert!(s.get(Source::App, None).is_none());
        assert!(s.get(Source::App, Some("a")).is_none());
        assert_eq!(s.all().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn readers_during_a_retraction_get_the_next_batches() {
        let s = store();
        let r = s.retract(Source::App);
        let started = Instant::now();
        let node_app = spawn_app_reader(&s, None);
        let container_app = spawn_app_reader(&s, Some("a"));
        let containers = tokio::spawn({
            let s = s.clone();
            async move { s.containers_published().await }
        });
        let all = tokio::spawn({
            let s = s.clone();
            async move { s.all_published().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        for h in [node_app.is_finished(), container_app.is_finished()] {
            assert!(!h, "a reader of app data did not wait");
        }
        assert!(!containers.is_finished() && !all.is_finished());
        s.replace(
            Source::App,
            &[
                batch(Source::App, None, &["new"]),
                batch(Source::App, Some("a"), &["new"]),
            ],
        );
        assert_eq!(names(&node_app.await.unwrap()), ["new"]);
        assert_eq!(names(&container_app.await.unwrap()), ["new"]);
        assert_eq!(
            containers.await.unwrap(),
            vec![Arc::<str>::from("a"), Arc::from("c")]
        );
        let all = all.await.unwrap();
        assert_eq!(all.len(), 4);
        assert!(all
            .iter()
            .filter(|b| b.source == Source::App)
            .all(|b| b.points[0].key.name() == "new"));
        // Woken by the replace (the flush still holds its guard), not by the deadline.
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        drop(r);
    }

    #[tokio::test(start_paused = true)]
    async fn readers_of_other_sources_never_wait() {
        let s = store();
        let _r = s.retract(Source::App);
        let started = Instant::now();
        assert_eq!(
            names(&bounded(s.get_published(Source::Node, None)).await),
            ["cpu.total"]
        );
        assert_eq!(
            names(&bounded(s.get_published(Source::Container, Some("c"))).await),
            ["mem.total"]
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retraction_never_replaced_holds_readers_until_its_deadline() {
        let s = store();
        let _hung = s.retract(Source::App);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        // What the store has: nothing for the app.
        assert!(bounded(s.get_published(Source::App, None)).await.is_none());
        assert_eq!(started.elapsed(), PUBLISH_WAIT - Duration::from_secs(1));
        assert_eq!(
            bounded(s.containers_published()).await,
            vec![Arc::<str>::from("c")]
        );
        assert_eq!(bounded(s.all_published()).await.len(), 2);
        // Later readers do not wait again for the same retraction.
        assert_eq!(started.elapsed(), PUBLISH_WAIT - Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_flush_lets_its_readers_go_at_once() {
        let s = store();
        let r = s.retract(Source::App);
        let started = Instant::now();
        let reader = spawn_app_reader(&s, None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!reader.is_finished());
        let flush = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _retraction = r;
            panic!("a flush that fails after retracting");
        }));
        assert!(flush.is_err());
        assert!(bounded(reader).await.unwrap().is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // And the next reader does not wait.
        assert!(bounded(s.get_published(Source::App, None)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_guard_does_not_end_a_newer_retraction() {
        let s = store();
        let first = s.retract(Source::App);
        let second = s.retract(Source::App);
        drop(first);
        let reader = spawn_app_reader(&s, None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!reader.is_finished());
        drop(second);
        assert!(bounded(reader).await.unwrap().is_none());
    }
}
