//! The flusher's half of aggregation: merges the receive threads' partials, keeps what lives
//! between flushes (counter totals, gauge values) and computes each interval's datapoints.
//!
//! Memory here is per live series, so it is kept compact: counters and gauges live in vectors
//! of small records behind an [`Index`] (as the aggregator's entries do), with containers
//! interned to 4-byte indices; the datapoint vectors are sized exactly before they are filled,
//! and nothing else of the interval is copied on the way.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use corral_model::{Datapoint, SeriesKey, Stat, Unit};
use hashbrown::HashMap;

use super::index::Index;
use super::{AggregatorConfig, Containers, GaugeAcc, MetricType, Samples, SetAcc};

/// One series' accumulation for one interval, from one aggregator.
#[derive(Debug)]
pub struct Partial {
    pub container: Option<Arc<str>>,
    pub key: SeriesKey,
    pub kind: MetricType,
    pub acc: PartialAcc,
}

#[derive(Debug)]
pub enum PartialAcc {
    /// The interval's sum.
    Counter(f64),
    Gauge(GaugeAcc),
    Samples(Box<Samples>),
    Set(Box<SetAcc>),
}

impl PartialAcc {
    /// Adds `other` in; gives it back when it is of another type.
    fn merge(&mut self, other: PartialAcc) -> Result<(), PartialAcc> {
        match (self, other) {
            (PartialAcc::Counter(a), PartialAcc::Counter(b)) => *a += b,
            (PartialAcc::Gauge(a), PartialAcc::Gauge(b)) => a.merge(&b),
            (PartialAcc::Samples(a), PartialAcc::Samples(b)) => a.merge(*b),
            (PartialAcc::Set(a), PartialAcc::Set(b)) => a.merge(*b),
            (_, other) => return Err(other),
        }
        Ok(())
    }
}

/// The datapoints of one flush, grouped by container (`None` = the node).
#[derive(Debug, Default)]
pub struct FlushOutput {
    pub groups: Vec<(Option<Arc<str>>, Vec<Datapoint>)>,
}

impl FlushOutput {
    pub fn datapoints(&self) -> usize {
        self.groups.iter().map(|(_, p)| p.len()).sum()
    }
}

/// A series kept between flushes.
struct Kept<S> {
    key: SeriesKey,
    /// Index into the flush state's [`Containers`].
    container: u32,
    /// The flush generation of the last sample.
    seen: u32,
    state: S,
}

/// A counter: its running total and this interval's sum.
struct CounterState {
    total: f64,
    interval: f64,
}

/// Kept series of one type: records in a vector, found through an index of their hashes.
struct Table<S> {
    entries: Vec<Kept<S>>,
    index: Index,
}

impl<S> Table<S> {
    fn new() -> Self {
        Table {
            entries: Vec::new(),
            index: Index::new(),
        }
    }

    fn find(&self, hash: u32, container: u32, key: &SeriesKey) -> Option<usize> {
        self.index.find(hash).map(|at| at as usize).find(|&at| {
            let e = &self.entries[at];
            e.container == container && e.key.encoded() == key.encoded()
        })
    }

    /// Forgets what has not been seen for `expiry` generations, giving back its container.
    fn expire(
        &mut self,
        generation: u32,
        expiry: u32,
        containers: &mut Containers,
        hasher: &foldhash::fast::RandomState,
    ) {
        let before = self.entries.len();
        self.entries.retain(|e| {
            let live = generation.wrapping_sub(e.seen) < expiry;
            if !live {
                containers.release(e.container);
            }
            live
        });
        if self.entries.len() == before {
            return;
        }
        let keep = self.entries.len();
        if self.entries.capacity() > 4 * keep.max(64) {
            self.entries.shrink_to(2 * keep);
        }
        self.index.rebuild(
            self.entries
                .iter()
                .enumerate()
                .map(|(at, e)| (kept_hash(hasher, e.container, &e.key), at as u32)),
        );
    }
}

fn kept_hash(hasher: &foldhash::fast::RandomState, container: u32, key: &SeriesKey) -> u32 {
    let mut h = hasher.build_hasher();
    h.write_u32(container);
    h.write(key.encoded().as_bytes());
    let h = h.finish();
    (h ^ (h >> 32)) as u32
}

/// The flusher's state: merges aggregators' partials and keeps counters and gauges between
/// flushes.
pub struct FlushState {
    config: Arc<AggregatorConfig>,
    /// Running total, this interval's sum and last update of every live counter: one total per
    /// series however many receive threads saw it.
    counters: Table<CounterState>,
    /// Current value and last update of every live gauge.
    gauges: Table<f64>,
    containers: Containers,
    hasher: foldhash::fast::RandomState,
    generation: u32,
    /// Partials dropped because another receive thread had the same series with another type
    /// in the same interval, since the start.
    type_conflicts: u64,
}

/// The output vectors of one flush, one per container, found by container id.
#[derive(Default)]
struct Groups {
    ids: HashMap<Option<Arc<str>>, usize>,
    groups: Vec<(Option<Arc<str>>, Vec<Datapoint>)>,
    /// Datapoints each group will hold, counted before any is filled.
    sizes: Vec<usize>,
}

impl Groups {
    fn of(&mut self, container: &Option<Arc<str>>) -> usize {
        if let Some(&g) = self.ids.get(container) {
            return g;
        }
        let g = self.groups.len();
        self.ids.insert(container.clone(), g);
        self.groups.push((container.clone(), Vec::new()));
        self.sizes.push(0);
        g
    }

    /// Sizes every group's vector exactly: at 100k+ series, vectors grown by doubling would
    /// hold up to twice the flush, and copy it on the way.
    fn allocate(&mut self) {
        for ((_, points), &n) in self.groups.iter_mut().zip(&self.sizes) {
            points.reserve_exact(n);
        }
    }
}

impl FlushState {
    pub fn new(config: Arc<AggregatorConfig>) -> Self {
        FlushState {
            config,
            counters: Table::new(),
            gauges: Table::new(),
            containers: Containers::new(),
            hasher: foldhash::fast::RandomState::default(),
            generation: 0,
            type_conflicts: 0,
        }
    }

    /// Series intervals dropped at a flush because receive threads saw the series with
    /// different types, since the start.
    pub fn type_conflicts(&self) -> u64 {
        self.type_conflicts
    }

    /// Live gauges (emitted every flush until they expire).
    pub fn gauges(&self) -> usize {
        self.gauges.entries.len()
    }

    /// Live counters (emitted every flush until they expire, with their running total).
    pub fn counters(&self) -> usize {
        self.counters.entries.len()
    }

    /// Computes the datapoints of one interval from every aggregator's partials.
    pub fn flush(&mut self, parts: Vec<Vec<Partial>>) -> FlushOutput {
        let (mut merged, conflicts) = merge_partials(parts);
        self.type_conflicts += conflicts;
        let percentiles = self.config.percentiles();
        let percentiles = &*percentiles;
        let generation = self.generation;
        let expiry = self.config.expiry_flushes();
        let stats_per_samples = 7 + percentiles.len();
        let mut groups = Groups::default();

        // First the state kept between flushes (counters, gauges), while counting what the
        // interval's samples and sets will emit. Only those stay in `merged`, which gives back
        // the rest before the datapoints are allocated.
        // A series that changed type: what was kept of it under the old type ends now (at this
        // flush's expiry pass).
        let ended = generation.wrapping_sub(expiry);
        merged.retain(|p| {
            let at = self.locate(&p.container, &p.key);
            match &p.acc {
                PartialAcc::Counter(sum) => {
                    retire(&mut self.gauges, at, &p.key, ended);
                    let c = self.keep_counter(at, &p.container, &p.key);
                    c.state.total += sum;
                    c.state.interval += sum;
                    c.seen = generation;
                    false
                }
                PartialAcc::Gauge(g) => {
                    retire(&mut self.counters, at, &p.key, ended);
                    let slot = self.keep_gauge(at, &p.container, &p.key);
                    slot.state = match g.absolute {
                        Some((v, _)) => v + g.delta,
                        None => slot.state + g.delta,
                    };
                    slot.seen = generation;
                    false
                }
                PartialAcc::Samples(_) | PartialAcc::Set(_) => {
                    retire(&mut self.counters, at, &p.key, ended);
                    retire(&mut self.gauges, at, &p.key, ended);
                    let g = groups.of(&p.container);
                    groups.sizes[g] += match p.acc {
                        PartialAcc::Samples(_) => stats_per_samples,
                        _ => 1,
                    };
                    true
                }
            }
        });
        merged.shrink_to_fit();
        let (containers, hasher) = (&mut self.containers, &self.hasher);
        self.counters.expire(generation, expiry, containers, hasher);
        self.gauges.expire(generation, expiry, containers, hasher);

        // The group of each interned container, looked up once.
        let mut group_of: Vec<Option<usize>> = Vec::new();
        let mut kept_group = |c: u32, groups: &mut Groups| -> usize {
            let c = c as usize;
            if group_of.len() <= c {
                group_of.resize(c + 1, None);
            }
            *group_of[c].get_or_insert_with(|| groups.of(&containers.get(c as u32)))
        };
        let kept = self.counters.entries.iter().map(|e| e.container);
        for c in kept.chain(self.gauges.entries.iter().map(|e| e.container)) {
            let g = kept_group(c, &mut groups);
            groups.sizes[g] += 1;
        }
        groups.allocate();

        for p in merged {
            match p.acc {
                PartialAcc::Samples(s) => {
                    let g = groups.of(&p.container);
                    s.emit(&p.key, percentiles, &mut groups.groups[g].1);
                }
                PartialAcc::Set(set) => {
                    let n = set.count();
                    if n > 0.0 {
                        let g = groups.of(&p.container);
                        groups.groups[g]
                            .1
                            .push(Datapoint::new(p.key, Stat::Value, Unit::None, n));
                    }
                }
                // Left `merged` at the first pass.
                PartialAcc::Counter(_) | PartialAcc::Gauge(_) => {}
            }
        }
        for e in &self.gauges.entries {
            let g = kept_group(e.container, &mut groups);
            groups.groups[g].1.push(Datapoint::new(
                e.key.clone(),
                Stat::Value,
                Unit::None,
                e.state,
            ));
        }
        // Counters are emitted while they live, with 0 for an interval without samples (which
        // interval-based outputs skip, see `Datapoint::in_interval`), so that cumulative
        // consumers see no gaps.
        for e in &mut self.counters.entries {
            let g = kept_group(e.container, &mut groups);
            groups.groups[g].1.push(Datapoint::counter(
                e.key.clone(),
                e.state.interval,
                e.state.total,
            ));
            e.state.interval = 0.0;
        }
        self.generation = self.generation.wrapping_add(1);
        FlushOutput {
            groups: groups.groups,
        }
    }

    /// The interned container of a series and its hash in the kept tables; `None` when the
    /// container is not interned (so nothing of the series is kept).
    fn locate(&self, container: &Option<Arc<str>>, key: &SeriesKey) -> Option<(u32, u32)> {
        let c = self.containers.find(container.as_deref())?;
        Some((c, kept_hash(&self.hasher, c, key)))
    }

    fn keep_counter(
        &mut self,
        at: Option<(u32, u32)>,
        container: &Option<Arc<str>>,
        key: &SeriesKey,
    ) -> &mut Kept<CounterState> {
        let new = || CounterState {
            total: 0.0,
            interval: 0.0,
        };
        keep(
            &mut self.counters,
            &mut self.containers,
            &self.hasher,
            self.generation,
            at,
            container,
            key,
            new,
        )
    }

    fn keep_gauge(
        &mut self,
        at: Option<(u32, u32)>,
        container: &Option<Arc<str>>,
        key: &SeriesKey,
    ) -> &mut Kept<f64> {
        keep(
            &mut self.gauges,
            &mut self.containers,
            &self.hasher,
            self.generation,
            at,
            container,
            key,
            || 0.0,
        )
    }
}

/// The kept record of a series, added (with `new()`) when it is not there yet. `located` is
/// what [`FlushState::locate`] found for it.
#[allow(clippy::too_many_arguments)]
fn keep<'t, S>(
    table: &'t mut Table<S>,
    containers: &mut Containers,
    hasher: &foldhash::fast::RandomState,
    generation: u32,
    located: Option<(u32, u32)>,
    container: &Option<Arc<str>>,
    key: &SeriesKey,
    new: impl FnOnce() -> S,
) -> &'t mut Kept<S> {
    if let Some((c, hash)) = located {
        if let Some(at) = table.find(hash, c, key) {
            return &mut table.entries[at];
        }
    }
    let c = containers.acquire(container.as_deref());
    let hash = match located {
        Some((_, hash)) => hash,
        None => kept_hash(hasher, c, key),
    };
    let at = table.entries.len();
    table.entries.push(Kept {
        key: key.clone(),
        container: c,
        seen: generation,
        state: new(),
    });
    table.index.insert(hash, at as u32);
    &mut table.entries[at]
}

/// Ends the record `table` keeps of a series (`located` as for [`keep`]), if any: `ended` is a
/// generation the next expiry pass drops.
fn retire<S>(table: &mut Table<S>, located: Option<(u32, u32)>, key: &SeriesKey, ended: u32) {
    if let Some((c, hash)) = located {
        if let Some(at) = table.find(hash, c, key) {
            table.entries[at].seen = ended;
        }
    }
}

/// Merges the partials of several aggregators: the same series may have been fed through more
/// than one receive thread. Where threads saw a series with different types, the first
/// thread's type is kept and the partials of another type are dropped; returns how many.
fn merge_partials(mut parts: Vec<Vec<Partial>>) -> (Vec<Partial>, u64) {
    parts.retain(|p| !p.is_empty());
    if parts.len() <= 1 {
        return (parts.pop().unwrap_or_default(), 0);
    }
    let total: usize = parts.iter().map(Vec::len).sum();
    let mut index: HashMap<(Option<Arc<str>>, SeriesKey), usize> = HashMap::with_capacity(total);
    let mut merged: Vec<Partial> = Vec::with_capacity(total);
    let mut conflicts = 0;
    for p in parts.into_iter().flatten() {
        match index.entry((p.container.clone(), p.key.clone())) {
            hashbrown::hash_map::Entry::Occupied(o) => {
                conflicts += merged[*o.get()].acc.merge(p.acc).is_err() as u64;
            }
            hashbrown::hash_map::Entry::Vacant(v) => {
                v.insert(merged.len());
                merged.push(p);
            }
        }
    }
    (merged, conflicts)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::GaugeSign;

    type Id = (Option<String>, String);

    /// What the kept tables must agree with: plain maps.
    #[derive(Default)]
    struct Model {
        counters: BTreeMap<Id, (f64, f64, u32)>,
        gauges: BTreeMap<Id, (f64, u32)>,
    }

    fn partial(container: u8, key: u8, counter: bool, v: f64) -> Partial {
        let container = (container > 0).then(|| Arc::from(format!("c{container}").as_str()));
        Partial {
            container,
            key: SeriesKey::plain(&format!("k{key}")),
            kind: if counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            },
            acc: if counter {
                PartialAcc::Counter(v)
            } else {
                PartialAcc::Gauge(GaugeAcc {
                    absolute: Some((v, 0)),
                    delta: 0.0,
                })
            },
        }
    }

    fn rendered(out: FlushOutput) -> BTreeMap<(Id, bool), (f64, f64)> {
        let mut m = BTreeMap::new();
        for (c, points) in out.groups {
            for p in points {
                let id = (c.as_deref().map(str::to_string), p.key.name().to_string());
                let counter = p.kind == corral_model::Kind::Counter;
                assert!(m.insert((id, counter), (p.value, p.total)).is_none());
            }
        }
        m
    }

    proptest! {
        /// Counters and gauges of several containers, some idle for a while: the kept tables
        /// (with their index rebuilt on expiry, and interned containers released and reused)
        /// emit what plain maps would.
        #[test]
        fn kept_tables_agree_with_maps(
            rounds in prop::collection::vec(
                prop::collection::vec((0u8..4, 0u8..24, any::<bool>(), -50i32..50), 0..40),
                1..12,
            ),
        ) {
            let config = Arc::new(AggregatorConfig::new(vec![], GaugeSign::Delta, 2, usize::MAX));
            let mut state = FlushState::new(config);
            let mut model = Model::default();
            for (generation, round) in rounds.into_iter().enumerate() {
                let generation = generation as u32;
                // One partial per series, as merge_partials hands over: the first type of the
                // round holds.
                let mut seen = BTreeMap::new();
                for (c, k, counter, v) in round {
                    let e = seen.entry((c, k)).or_insert((counter, 0.0));
                    if e.0 == counter {
                        e.1 = v as f64;
                    }
                }
                let parts: Vec<Partial> =
                    seen.iter().map(|(&(c, k), &(counter, v))| partial(c, k, counter, v)).collect();
                for (&(c, k), &(counter, v)) in &seen {
                    let id = ((c > 0).then(|| format!("c{c}")), format!("k{k}"));
                    // A series of one type is no longer kept as the other.
                    if counter {
                        model.gauges.remove(&id);
                        let e = model.counters.entry(id).or_insert((0.0, 0.0, generation));
                        e.0 += v;
                        e.1 += v;
                        e.2 = generation;
                    } else {
                        model.counters.remove(&id);
                        model.gauges.insert(id, (v, generation));
                    }
                }
                model.counters.retain(|_, e| generation - e.2 < 2);
                model.gauges.retain(|_, e| generation - e.1 < 2);
                let mut want = BTreeMap::new();
                for (id, e) in &mut model.counters {
                    want.insert((id.clone(), true), (e.1, e.0));
                    e.1 = 0.0;
                }
                for (id, e) in &model.gauges {
                    want.insert((id.clone(), false), (e.0, 0.0));
                }
                let got = rendered(state.flush(vec![parts]));
                prop_assert_eq!(got, want);
                prop_assert_eq!(state.counters(), model.counters.len());
                prop_assert_eq!(state.gauges(), model.gauges.len());
            }
            // Only containers still referred to stay interned.
            let live: std::collections::BTreeSet<_> =
                model.counters.keys().chain(model.gauges.keys()).filter_map(|(c, _)| c.clone()).collect();
            prop_assert_eq!(state.containers.index.len(), live.len());
        }
    }
}
