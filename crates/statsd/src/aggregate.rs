//! Aggregation of StatsD samples per flush interval (CONTRACT §2).
//!
//! Two halves, so the hot path never takes a shared lock per line:
//!
//! - [`Aggregator`]: owned by one receive thread. Keeps one entry per (container, type, name,
//!   sorted tags) series, interning the key once on first sight; every sample of the interval
//!   accumulates there. [`Aggregator::take_interval`] hands the interval's accumulations over as
//!   [`Partial`]s and resets them in place, keeping the entries (and their keys) for the next
//!   interval until the series expires.
//! - [`FlushState`]: owned by the flusher. Merges the partials of every receive thread, keeps the
//!   gauges (re-emitted each flush until they expire) and computes the datapoints.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use corral_model::{Datapoint, SeriesKey, Stat, Unit};
use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::{HashMap, HashSet, HashTable};
use smallvec::SmallVec;

use crate::line::{Line, MetricType, ServiceCheck, Tags, Value};
use crate::sketch::{Hll, Sketch};

/// Past this many samples of one series in one interval, a sketch takes over.
pub const EXACT_SAMPLES: usize = 10_000;
/// Past this many distinct members of one set in one interval, a HyperLogLog takes over.
pub const EXACT_SET_MEMBERS: usize = 100_000;

/// How a signed gauge value (`+N`, `-N`) is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GaugeSign {
    /// StatsD: a sign makes the value a delta to the current value.
    #[default]
    Delta,
    /// DogStatsD: every value is absolute.
    Absolute,
}

/// Settings shared by the aggregators and the flush state.
#[derive(Debug)]
pub struct AggregatorConfig {
    // Changed at runtime by a configuration reload: read through the accessors.
    /// Percentiles to emit, e.g. `[50.0, 99.9]`; read once per flush.
    percentiles: RwLock<Arc<[f64]>>,
    /// `GaugeSign::Absolute` when set; read once per line.
    absolute_gauges: AtomicBool,
    /// A series with no samples for this many flushes is forgotten (gauges stop being emitted).
    expiry_flushes: AtomicU32,
    /// New series past this many (over all aggregators) are dropped and counted.
    pub max_series: usize,
    /// Live series over all aggregators.
    pub series: AtomicUsize,
}

impl AggregatorConfig {
    pub fn new(
        percentiles: Vec<f64>,
        gauge_sign: GaugeSign,
        expiry_flushes: u32,
        max_series: usize,
    ) -> Self {
        AggregatorConfig {
            percentiles: RwLock::new(percentiles.into()),
            absolute_gauges: AtomicBool::new(gauge_sign == GaugeSign::Absolute),
            expiry_flushes: AtomicU32::new(expiry_flushes.max(1)),
            max_series,
            series: AtomicUsize::new(0),
        }
    }

    pub fn percentiles(&self) -> Arc<[f64]> {
        self.percentiles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes effect at the next flush.
    pub fn set_percentiles(&self, percentiles: Vec<f64>) {
        *self
            .percentiles
            .write()
            .unwrap_or_else(PoisonError::into_inner) = percentiles.into();
    }

    pub fn gauge_sign(&self) -> GaugeSign {
        if self.absolute_gauges.load(Ordering::Relaxed) {
            GaugeSign::Absolute
        } else {
            GaugeSign::Delta
        }
    }

    /// Takes effect at the next line each aggregator adds.
    pub fn set_gauge_sign(&self, sign: GaugeSign) {
        self.absolute_gauges
            .store(sign == GaugeSign::Absolute, Ordering::Relaxed);
    }

    pub fn expiry_flushes(&self) -> u32 {
        self.expiry_flushes.load(Ordering::Relaxed)
    }

    /// Takes effect at the next flush.
    pub fn set_expiry_flushes(&self, flushes: u32) {
        self.expiry_flushes.store(flushes.max(1), Ordering::Relaxed);
    }
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self::new(
            vec![50.0, 75.0, 90.0, 95.0, 99.0],
            GaugeSign::Delta,
            30,
            1_000_000,
        )
    }
}

/// Why a sample was not aggregated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddError {
    /// A new series would exceed `max_series`.
    SeriesLimit,
}

impl Acc {
    fn kind(&self) -> MetricType {
        match self {
            Acc::Counter(..) => MetricType::Counter,
            Acc::Gauge(_) => MetricType::Gauge,
            Acc::Samples(s) => s.kind.unwrap_or(MetricType::Timer),
            Acc::Set(_) => MetricType::Set,
        }
    }
}

/// Accumulation of one interval for one series.
#[derive(Debug)]
enum Acc {
    /// The interval's sum.
    Counter(f64),
    Gauge(Box<GaugeAcc>),
    Samples(Box<Samples>),
    Set(Box<SetAcc>),
}

/// A gauge's updates within one interval on one thread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GaugeAcc {
    /// The last absolute value set, if any, and when (caller's clock).
    pub absolute: Option<(f64, u64)>,
    /// Sum of deltas after that absolute value (or of all deltas, if none).
    pub delta: f64,
}

impl GaugeAcc {
    const EMPTY: GaugeAcc = GaugeAcc {
        absolute: None,
        delta: 0.0,
    };

    fn set(&mut self, v: f64, now: u64) {
        self.absolute = Some((v, now));
        self.delta = 0.0;
    }

    fn merge(&mut self, other: &GaugeAcc) {
        match (self.absolute, other.absolute) {
            (Some((_, a)), Some((_, b))) if b > a => {
                self.absolute = other.absolute;
            }
            (None, Some(_)) => self.absolute = other.absolute,
            _ => {}
        }
        // Deltas of different senders interleave in unknown order; summing them is what a single
        // receiver would have done for deltas that came after the last absolute value.
        self.delta += other.delta;
    }
}

/// Samples of a timer, histogram or distribution within one interval.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// Timer, histogram or distribution (kept here rather than in every entry).
    kind: Option<MetricType>,
    /// The real samples, while there are at most `EXACT_SAMPLES`.
    values: Vec<f64>,
    /// Replaces `values` past `EXACT_SAMPLES`.
    sketch: Option<Box<Sketch>>,
    /// Number of real samples.
    n: u64,
    /// Sum of weights (1/sample rate): the emitted `.count`.
    weight: f64,
    sum: f64,
    min: f64,
    max: f64,
    /// Welford running mean and sum of squared deviations, for the stddev in sketch mode.
    mean: f64,
    m2: f64,
}

impl Samples {
    fn add(&mut self, v: f64, weight: f64) {
        if self.n == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.n += 1;
        self.weight += weight;
        self.sum += v;
        let d = v - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (v - self.mean);
        match &mut self.sketch {
            Some(s) => s.add(v),
            None => {
                self.values.push(v);
                if self.values.len() > EXACT_SAMPLES {
                    self.switch_to_sketch();
                }
            }
        }
    }

    fn switch_to_sketch(&mut self) {
        let mut s = Box::new(Sketch::new());
        for v in self.values.drain(..) {
            s.add(v);
        }
        self.values = Vec::new();
        self.sketch = Some(s);
    }

    fn merge(&mut self, mut other: Samples) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other;
            return;
        }
        let n = (self.n + other.n) as f64;
        let d = other.mean - self.mean;
        self.m2 += other.m2 + d * d * self.n as f64 * other.n as f64 / n;
        self.mean += d * other.n as f64 / n;
        self.n += other.n;
        self.weight += other.weight;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        match (&mut self.sketch, other.sketch.take()) {
            (None, None) => {
                self.values.append(&mut other.values);
                if self.values.len() > EXACT_SAMPLES {
                    self.switch_to_sketch();
                }
            }
            (Some(s), None) => {
                for v in other.values {
                    s.add(v);
                }
            }
            (None, Some(mut o)) => {
                for v in self.values.drain(..) {
                    o.add(v);
                }
                self.values = Vec::new();
                self.sketch = Some(o);
            }
            (Some(s), Some(o)) => s.merge(&o),
        }
    }

    /// Emits count, sum, min, max, mean, median, stddev and the percentiles.
    fn emit(mut self, key: &SeriesKey, percentiles: &[f64], out: &mut Vec<Datapoint>) {
        if self.n == 0 {
            return;
        }
        let n = self.n;
        let mut push = |stat, value| out.push(Datapoint::new(key.clone(), stat, Unit::None, value));
        push(Stat::Count, self.weight);
        push(Stat::Sum, self.sum);
        push(Stat::Min, self.min);
        push(Stat::Max, self.max);
        let mean = self.sum / n as f64;
        push(Stat::Mean, mean);
        match self.sketch.take() {
            None => {
                let v = &mut self.values;
                v.sort_unstable_by(f64::total_cmp);
                let median = if n % 2 == 0 {
                    (v[n as usize / 2 - 1] + v[n as usize / 2]) / 2.0
                } else {
                    v[n as usize / 2]
                };
                push(Stat::Median, median);
                // Two-pass population variance over the exact samples.
                let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
                push(Stat::Stddev, var.sqrt());
                for &p in percentiles {
                    push(Stat::percentile(p), v[nearest_rank(p, n) as usize - 1]);
                }
            }
            Some(s) => {
                let median = if n % 2 == 0 {
                    (s.value_at_rank(n / 2) + s.value_at_rank(n / 2 + 1)) / 2.0
                } else {
                    s.value_at_rank(n / 2 + 1)
                };
                push(Stat::Median, median);
                push(Stat::Stddev, (self.m2.max(0.0) / n as f64).sqrt());
                for &p in percentiles {
                    push(Stat::percentile(p), s.value_at_rank(nearest_rank(p, n)));
                }
            }
        }
    }
}

/// The 1-based nearest rank of percentile `p` among `n` samples: the smallest `k` with
/// `k >= p/100 * n`, at least 1. Computed in integers (thousandths of a percent) so that
/// `p/100 * n` landing exactly on an integer is not pushed up by rounding.
pub fn nearest_rank(p: f64, n: u64) -> u64 {
    let milli = (p * 1000.0).round().clamp(0.0, 100_000.0) as u128;
    let k = (milli * n as u128).div_ceil(100_000) as u64;
    k.clamp(1, n)
}

/// Distinct members of a set within one interval.
#[derive(Clone, Debug, Default)]
pub struct SetAcc {
    exact: HashSet<u64, IdentityHash>,
    hll: Option<Box<Hll>>,
}

impl SetAcc {
    fn add_hash(&mut self, h: u64) {
        match &mut self.hll {
            Some(hll) => hll.add_hash(h),
            None => {
                self.exact.insert(h);
                if self.exact.len() > EXACT_SET_MEMBERS {
                    let mut hll = Box::new(Hll::new());
                    for &h in &self.exact {
                        hll.add_hash(h);
                    }
                    self.exact = HashSet::default();
                    self.hll = Some(hll);
                }
            }
        }
    }

    fn merge(&mut self, other: SetAcc) {
        match other.hll {
            Some(o) => {
                let mut hll = self.hll.take().unwrap_or_default();
                for &h in &self.exact {
                    hll.add_hash(h);
                }
                hll.merge(&o);
                self.exact = HashSet::default();
                self.hll = Some(hll);
            }
            None => {
                for h in other.exact {
                    self.add_hash(h);
                }
            }
        }
    }

    fn count(&self) -> f64 {
        match &self.hll {
            Some(h) => h.estimate().round(),
            None => self.exact.len() as f64,
        }
    }
}

/// Set members are hashed once with a fixed seed (the same in every aggregator, so the hashes
/// of different threads can be merged); the set itself then needs no second hash.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdentityHash;

impl BuildHasher for IdentityHash {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ *b as u64;
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const MEMBER_SEED: u64 = 0x5eed_c0ff_ee00_0001;

fn member_hash(member: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(MEMBER_SEED).hash_one(member)
}

/// One series' entry in an [`Aggregator`].
#[derive(Debug)]
struct Entry {
    key: SeriesKey,
    acc: Acc,
    /// Index into the aggregator's [`Containers`]; 0 is "no container".
    container: u32,
    /// The interval (flush generation) of the last sample.
    last_seen: u32,
}

/// The container ids an aggregator's entries refer to, interned so that an entry holds a
/// 4-byte index instead of a pointer pair (memory per series matters at 100k+ series).
struct Containers {
    /// Index 0 is "no container".
    ids: Vec<Option<Arc<str>>>,
    /// Entries referring to each index.
    refs: Vec<u32>,
    index: HashMap<Arc<str>, u32>,
    free: Vec<u32>,
}

impl Containers {
    fn new() -> Self {
        Containers {
            ids: vec![None],
            refs: vec![0],
            index: HashMap::new(),
            free: Vec::new(),
        }
    }

    /// The index of an already known container, `Some(0)` for none, `None` when unknown.
    fn find(&self, c: Option<&str>) -> Option<u32> {
        match c {
            None => Some(0),
            Some(c) => self.index.get(c).copied(),
        }
    }

    /// The index for `c`, adding it when new; counts one more entry referring to it.
    fn acquire(&mut self, c: Option<&str>) -> u32 {
        let i = match self.find(c) {
            Some(i) => i,
            None => {
                let id: Arc<str> = Arc::from(c.unwrap_or_default());
                let i = match self.free.pop() {
                    Some(i) => {
                        self.ids[i as usize] = Some(id.clone());
                        i
                    }
                    None => {
                        self.ids.push(Some(id.clone()));
                        self.refs.push(0);
                        (self.ids.len() - 1) as u32
                    }
                };
                self.index.insert(id, i);
                i
            }
        };
        self.refs[i as usize] += 1;
        i
    }

    fn release(&mut self, i: u32) {
        if i == 0 {
            return;
        }
        let refs = &mut self.refs[i as usize];
        *refs = refs.saturating_sub(1);
        if *refs == 0 {
            if let Some(id) = self.ids[i as usize].take() {
                self.index.remove(&id);
            }
            self.free.push(i);
        }
    }

    fn get(&self, i: u32) -> Option<Arc<str>> {
        self.ids.get(i as usize).cloned().flatten()
    }
}

/// A receive thread's aggregation state. See the module docs.
pub struct Aggregator {
    config: Arc<AggregatorConfig>,
    table: HashTable<Entry>,
    hasher: foldhash::fast::RandomState,
    containers: Containers,
    /// Reused buffer for the encoded key of the line being added.
    scratch: String,
    generation: u32,
    series_dropped: u64,
}

fn hash_key(
    hasher: &foldhash::fast::RandomState,
    kind: MetricType,
    container: u32,
    encoded: &str,
) -> u64 {
    let mut h = hasher.build_hasher();
    kind.hash(&mut h);
    container.hash(&mut h);
    h.write(encoded.as_bytes());
    h.finish()
}

/// Writes `name` and the sorted, de-duplicated tags in the [`SeriesKey`] layout.
fn encode_key(out: &mut String, name: &str, tags: Tags<'_>) {
    out.clear();
    out.push_str(name);
    if tags.is_empty() {
        return;
    }
    let mut sorted: SmallVec<[(&str, &str); 16]> = tags.iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    for (k, v) in sorted {
        out.push('\n');
        out.push_str(k);
        out.push(':');
        out.push_str(v);
    }
}

impl Aggregator {
    pub fn new(config: Arc<AggregatorConfig>) -> Self {
        Aggregator {
            config,
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            containers: Containers::new(),
            scratch: String::with_capacity(256),
            generation: 0,
            series_dropped: 0,
        }
    }

    pub fn config(&self) -> &Arc<AggregatorConfig> {
        &self.config
    }

    /// Series held by this aggregator.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Samples dropped because of `max_series`, since the start.
    pub fn series_dropped(&self) -> u64 {
        self.series_dropped
    }

    /// Adds every sample of a metric line. `container` is the line's container, already
    /// resolved by the caller (own port, `|c:` field or source address). `now` orders gauge
    /// updates across threads (any monotonic clock, e.g. nanoseconds since start).
    pub fn add(
        &mut self,
        line: &Line<'_>,
        container: Option<&str>,
        now: u64,
    ) -> Result<(), AddError> {
        let gauge_sign = self.config.gauge_sign();
        let kind = line.kind;
        let rate = line.sample_rate;
        let entry = self.entry(line.name, line.tags, container, kind)?;
        match &mut entry.acc {
            Acc::Counter(sum) => {
                for v in line.values {
                    if let Value::Number { value, .. } = v {
                        *sum += value / rate;
                    }
                }
            }
            Acc::Gauge(g) => {
                for v in line.values {
                    if let Value::Number { value, signed } = v {
                        if signed && gauge_sign == GaugeSign::Delta {
                            g.delta += value;
                        } else {
                            g.set(value, now);
                        }
                    }
                }
            }
            Acc::Samples(s) => {
                let weight = 1.0 / rate;
                for v in line.values {
                    if let Value::Number { value, .. } = v {
                        s.add(value, weight);
                    }
                }
            }
            Acc::Set(set) => {
                for v in line.values {
                    let h = match v {
                        Value::Member(m) => member_hash(m),
                        Value::Number { .. } => continue,
                    };
                    set.add_hash(h);
                }
            }
        }
        Ok(())
    }

    /// A service check becomes an absolute gauge `name` = status with its tags.
    pub fn add_service_check(
        &mut self,
        sc: &ServiceCheck<'_>,
        container: Option<&str>,
        now: u64,
    ) -> Result<(), AddError> {
        let entry = self.entry(sc.name, sc.tags, container, MetricType::Gauge)?;
        if let Acc::Gauge(g) = &mut entry.acc {
            g.set(sc.status as f64, now);
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        tags: Tags<'_>,
        container: Option<&str>,
        kind: MetricType,
    ) -> Result<&mut Entry, AddError> {
        encode_key(&mut self.scratch, name, tags);
        let Aggregator {
            table,
            hasher,
            containers,
            scratch,
            generation,
            config,
            series_dropped,
        } = self;
        let rehash = |e: &Entry| hash_key(hasher, e.acc.kind(), e.container, e.key.encoded());
        let mut admit = || {
            if config.series.fetch_add(1, Ordering::Relaxed) >= config.max_series {
                config.series.fetch_sub(1, Ordering::Relaxed);
                *series_dropped += 1;
                return Err(AddError::SeriesLimit);
            }
            Ok(())
        };
        let new_entry = |container| Entry {
            key: SeriesKey::from_encoded(scratch),
            acc: new_acc(kind),
            container,
            last_seen: *generation,
        };
        let entry = match containers.find(container) {
            Some(index) => {
                let hash = hash_key(hasher, kind, index, scratch);
                let found = table.entry(
                    hash,
                    |e| {
                        e.container == index
                            && e.acc.kind() == kind
                            && e.key.encoded() == scratch.as_str()
                    },
                    rehash,
                );
                match found {
                    TableEntry::Occupied(o) => o.into_mut(),
                    TableEntry::Vacant(v) => {
                        admit()?;
                        let index = containers.acquire(container);
                        v.insert(new_entry(index)).into_mut()
                    }
                }
            }
            // A container never seen before cannot have an entry yet.
            None => {
                admit()?;
                let index = containers.acquire(container);
                let hash = hash_key(hasher, kind, index, scratch);
                table
                    .insert_unique(hash, new_entry(index), rehash)
                    .into_mut()
            }
        };
        entry.last_seen = *generation;
        Ok(entry)
    }

    /// Hands over the accumulations of the interval that ends now and starts the next one.
    /// Series without samples for `expiry_flushes` intervals are forgotten.
    pub fn take_interval(&mut self) -> Vec<Partial> {
        let current = self.generation;
        let expiry = self.config.expiry_flushes();
        let mut out = Vec::new();
        let mut expired = 0usize;
        let containers = &mut self.containers;
        self.table.retain(|e| {
            if e.last_seen == current {
                let kind = e.acc.kind();
                if let Some(acc) = take_acc(&mut e.acc) {
                    out.push(Partial {
                        container: containers.get(e.container),
                        key: e.key.clone(),
                        kind,
                        acc,
                    });
                }
                true
            } else if current.wrapping_sub(e.last_seen) >= expiry {
                expired += 1;
                containers.release(e.container);
                false
            } else {
                true
            }
        });
        if expired > 0 {
            self.config.series.fetch_sub(expired, Ordering::Relaxed);
        }
        self.generation = self.generation.wrapping_add(1);
        out
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.config
            .series
            .fetch_sub(self.table.len(), Ordering::Relaxed);
    }
}

fn new_acc(kind: MetricType) -> Acc {
    match kind {
        MetricType::Counter => Acc::Counter(0.0),
        MetricType::Gauge => Acc::Gauge(Box::new(GaugeAcc::EMPTY)),
        MetricType::Timer | MetricType::Histogram | MetricType::Distribution => {
            Acc::Samples(Box::new(Samples {
                kind: Some(kind),
                ..Samples::default()
            }))
        }
        MetricType::Set => Acc::Set(Box::default()),
    }
}

/// Moves an interval's accumulation out, leaving the entry reset (keeping its allocations
/// where that is cheap).
fn take_acc(acc: &mut Acc) -> Option<PartialAcc> {
    Some(match acc {
        Acc::Counter(sum) => PartialAcc::Counter(std::mem::take(sum)),
        Acc::Gauge(g) => PartialAcc::Gauge(std::mem::replace(g.as_mut(), GaugeAcc::EMPTY)),
        Acc::Samples(s) => {
            if s.n == 0 {
                return None;
            }
            let cap = s.values.len().min(1024);
            let taken = std::mem::take(s.as_mut());
            s.kind = taken.kind;
            s.values.reserve(cap);
            PartialAcc::Samples(Box::new(taken))
        }
        Acc::Set(set) => PartialAcc::Set(Box::new(std::mem::take(set.as_mut()))),
    })
}

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
    fn merge(&mut self, other: PartialAcc) {
        match (self, other) {
            (PartialAcc::Counter(a), PartialAcc::Counter(b)) => *a += b,
            (PartialAcc::Gauge(a), PartialAcc::Gauge(b)) => a.merge(&b),
            (PartialAcc::Samples(a), PartialAcc::Samples(b)) => a.merge(*b),
            (PartialAcc::Set(a), PartialAcc::Set(b)) => a.merge(*b),
            // Partials are keyed by type, so kinds always match.
            _ => {}
        }
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

type SeriesId = (Option<Arc<str>>, SeriesKey);

struct CounterState {
    total: f64,
    interval: f64,
    seen: u32,
}

/// The flusher's state: merges aggregators' partials and keeps gauges between flushes.
pub struct FlushState {
    config: Arc<AggregatorConfig>,
    /// Current value and last update generation of every live gauge.
    gauges: HashMap<SeriesId, (f64, u32)>,
    /// Running total, this interval's sum and last update generation of every live counter:
    /// one total per series however many receive threads saw it.
    counters: HashMap<SeriesId, CounterState>,
    generation: u32,
}

impl FlushState {
    pub fn new(config: Arc<AggregatorConfig>) -> Self {
        FlushState {
            config,
            gauges: HashMap::new(),
            counters: HashMap::new(),
            generation: 0,
        }
    }

    /// Live gauges (emitted every flush until they expire).
    pub fn gauges(&self) -> usize {
        self.gauges.len()
    }

    /// Live counters (emitted every flush until they expire, with their running total).
    pub fn counters(&self) -> usize {
        self.counters.len()
    }

    /// Computes the datapoints of one interval from every aggregator's partials.
    pub fn flush(&mut self, parts: Vec<Vec<Partial>>) -> FlushOutput {
        let merged = merge_partials(parts);
        let percentiles = self.config.percentiles();
        let percentiles = &*percentiles;
        let generation = self.generation;
        let expiry = self.config.expiry_flushes();

        // First the state kept between flushes (counters, gauges); samples and sets are
        // emitted from this interval alone.
        let mut interval = Vec::new();
        for p in merged {
            match p.acc {
                PartialAcc::Counter(sum) => {
                    let c = self
                        .counters
                        .entry((p.container, p.key))
                        .or_insert(CounterState {
                            total: 0.0,
                            interval: 0.0,
                            seen: generation,
                        });
                    c.total += sum;
                    c.interval += sum;
                    c.seen = generation;
                }
                PartialAcc::Gauge(g) => {
                    let slot = self
                        .gauges
                        .entry((p.container, p.key))
                        .or_insert((0.0, generation));
                    slot.0 = match g.absolute {
                        Some((v, _)) => v + g.delta,
                        None => slot.0 + g.delta,
                    };
                    slot.1 = generation;
                }
                acc => interval.push((p.container, p.key, acc)),
            }
        }
        self.counters
            .retain(|_, c| generation.wrapping_sub(c.seen) < expiry);
        self.gauges
            .retain(|_, (_, seen)| generation.wrapping_sub(*seen) < expiry);

        // Sized exactly before filling: at 100k+ series, vectors grown by doubling would hold
        // up to twice the flush, and copy it on the way.
        let stats_per_samples = 7 + percentiles.len();
        let mut sizes: HashMap<Option<Arc<str>>, usize> = HashMap::new();
        for (container, _, acc) in &interval {
            let n = match acc {
                PartialAcc::Samples(_) => stats_per_samples,
                _ => 1,
            };
            *sizes.entry(container.clone()).or_default() += n;
        }
        for (container, _) in self.counters.keys().chain(self.gauges.keys()) {
            match sizes.get_mut(container) {
                Some(n) => *n += 1,
                None => {
                    sizes.insert(container.clone(), 1);
                }
            }
        }
        let mut groups: HashMap<Option<Arc<str>>, Vec<Datapoint>> = sizes
            .into_iter()
            .map(|(c, n)| (c, Vec::with_capacity(n)))
            .collect();

        for (container, key, acc) in interval {
            let out = groups.entry(container).or_default();
            match acc {
                PartialAcc::Samples(s) => s.emit(&key, percentiles, out),
                PartialAcc::Set(set) => {
                    let n = set.count();
                    if n > 0.0 {
                        out.push(Datapoint::new(key, Stat::Value, Unit::None, n));
                    }
                }
                PartialAcc::Counter(_) | PartialAcc::Gauge(_) => {}
            }
        }
        for ((container, key), (value, _)) in &self.gauges {
            groups
                .entry(container.clone())
                .or_default()
                .push(Datapoint::new(key.clone(), Stat::Value, Unit::None, *value));
        }
        // Counters are emitted while they live, with 0 for an interval without samples (which
        // interval-based outputs skip, see `Datapoint::in_interval`), so that cumulative
        // consumers see no gaps.
        for ((container, key), c) in self.counters.iter_mut() {
            groups
                .entry(container.clone())
                .or_default()
                .push(Datapoint::counter(key.clone(), c.interval, c.total));
            c.interval = 0.0;
        }
        self.generation = self.generation.wrapping_add(1);
        FlushOutput {
            groups: groups.into_iter().collect(),
        }
    }
}

/// Merges the partials of several aggregators: the same series may have been fed through more
/// than one receive thread.
fn merge_partials(mut parts: Vec<Vec<Partial>>) -> Vec<Partial> {
    parts.retain(|p| !p.is_empty());
    if parts.len() <= 1 {
        return parts.pop().unwrap_or_default();
    }
    let total: usize = parts.iter().map(Vec::len).sum();
    let mut index: HashMap<(Option<Arc<str>>, SeriesKey, MetricType), usize> =
        HashMap::with_capacity(total);
    let mut merged: Vec<Partial> = Vec::with_capacity(total);
    for p in parts.into_iter().flatten() {
        match index.entry((p.container.clone(), p.key.clone(), p.kind)) {
            hashbrown::hash_map::Entry::Occupied(o) => merged[*o.get()].acc.merge(p.acc),
            hashbrown::hash_map::Entry::Vacant(v) => {
                v.insert(merged.len());
                merged.push(p);
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_boundaries() {
        assert_eq!(nearest_rank(50.0, 10), 5);
        assert_eq!(nearest_rank(90.0, 10), 9);
        assert_eq!(nearest_rank(99.0, 10), 10);
        assert_eq!(nearest_rank(100.0, 10), 10);
        assert_eq!(nearest_rank(0.0, 10), 1);
        assert_eq!(nearest_rank(99.9, 1000), 999);
        assert_eq!(nearest_rank(99.9, 1001), 1000);
        assert_eq!(nearest_rank(95.0, 20), 19);
        assert_eq!(nearest_rank(50.0, 1), 1);
    }
}

#[cfg(test)]
mod layout {
    #[test]
    fn an_entry_stays_small() {
        // Memory per series at 100k+ series is dominated by this and the key.
        assert!(
            std::mem::size_of::<super::Entry>() <= 40,
            "{}",
            std::mem::size_of::<super::Entry>()
        );
    }
}
