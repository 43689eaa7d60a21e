//! Aggregation of StatsD samples per flush interval (CONTRACT §2).
//!
//! Two halves, so the hot path never takes a shared lock per line:
//!
//! - [`Aggregator`]: owned by one receive thread. Keeps one entry per (container, name, sorted
//!   tags) series, interning the key once on first sight; every sample of the interval
//!   accumulates there. A series has one type per interval: the first line of the interval sets
//!   it, and a line of another type in the same interval is refused
//!   ([`AddError::TypeMismatch`]). [`Aggregator::take_interval`] hands the interval's accumulations over as
//!   [`Partial`]s and resets them in place, keeping the entries (and their keys) for the next
//!   interval until the series expires.
//! - [`FlushState`]: owned by the flusher. Merges the partials of every receive thread, keeps the
//!   gauges (re-emitted each flush until they expire) and computes the datapoints.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use corral_model::{Datapoint, SeriesKey, Stat, Unit};
use hashbrown::{HashMap, HashSet};
use smallvec::SmallVec;

use crate::line::{Line, MetricType, ServiceCheck, Tags, Value, Values};
use crate::sketch::{Hll, Sketch};

mod flush;
mod index;
mod tags;

pub use flush::{FlushOutput, FlushState, Partial, PartialAcc};
use index::{prefetch, Index};
use tags::TagCache;

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
    /// The series already has samples of another type in this interval.
    TypeMismatch,
}

/// Lines an aggregator refused, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    pub series_limit: u64,
    pub type_mismatch: u64,
}

impl Refused {
    pub fn count(&mut self, e: AddError) {
        match e {
            AddError::SeriesLimit => self.series_limit += 1,
            AddError::TypeMismatch => self.type_mismatch += 1,
        }
    }
}

impl std::ops::AddAssign for Refused {
    fn add_assign(&mut self, other: Refused) {
        self.series_limit += other.series_limit;
        self.type_mismatch += other.type_mismatch;
    }
}

/// Accumulation of one interval for one series. The variant is the series' type, so matching
/// an entry reads nothing outside it.
#[derive(Debug)]
enum Acc {
    /// The interval's sum.
    Counter(f64),
    Gauge(Box<GaugeAcc>),
    Timer(Box<Samples>),
    Histogram(Box<Samples>),
    Distribution(Box<Samples>),
    Set(Box<SetAcc>),
}

impl Acc {
    fn new(kind: MetricType) -> Acc {
        match kind {
            MetricType::Counter => Acc::Counter(0.0),
            MetricType::Gauge => Acc::Gauge(Box::new(GaugeAcc::EMPTY)),
            MetricType::Timer => Acc::Timer(Box::default()),
            MetricType::Histogram => Acc::Histogram(Box::default()),
            MetricType::Distribution => Acc::Distribution(Box::default()),
            MetricType::Set => Acc::Set(Box::default()),
        }
    }

    #[inline]
    fn kind(&self) -> MetricType {
        match self {
            Acc::Counter(_) => MetricType::Counter,
            Acc::Gauge(_) => MetricType::Gauge,
            Acc::Timer(_) => MetricType::Timer,
            Acc::Histogram(_) => MetricType::Histogram,
            Acc::Distribution(_) => MetricType::Distribution,
            Acc::Set(_) => MetricType::Set,
        }
    }

    /// Where the boxed state is, if any (for prefetching).
    #[inline]
    fn heap_addr(&self) -> Option<*const u8> {
        match self {
            Acc::Counter(_) => None,
            Acc::Gauge(g) => Some((&**g as *const GaugeAcc).cast()),
            Acc::Timer(s) | Acc::Histogram(s) | Acc::Distribution(s) => {
                Some((&**s as *const Samples).cast())
            }
            Acc::Set(s) => Some((&**s as *const SetAcc).cast()),
        }
    }
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
///
/// One cache line (64 bytes, so that adding a sample in exact mode touches only it): the
/// vector and the running statistics; what only the sketch mode needs is boxed apart.
#[derive(Clone, Debug, Default)]
#[repr(C, align(64))]
pub struct Samples {
    /// The real samples, while there are at most `EXACT_SAMPLES`; empty in sketch mode.
    values: Vec<f64>,
    /// Sum of weights (1/sample rate): the emitted `.count`.
    weight: f64,
    sum: f64,
    min: f64,
    max: f64,
    /// Replaces `values` past `EXACT_SAMPLES`.
    sketch: Option<Box<SketchMode>>,
}

/// What samples past `EXACT_SAMPLES` keep instead of the samples themselves.
#[derive(Clone, Debug)]
struct SketchMode {
    sketch: Sketch,
    /// Number of real samples.
    n: u64,
    /// Welford running mean and sum of squared deviations, for the stddev.
    mean: f64,
    m2: f64,
}

impl Samples {
    /// Number of real samples.
    #[inline]
    fn n(&self) -> u64 {
        match &self.sketch {
            None => self.values.len() as u64,
            Some(s) => s.n,
        }
    }

    #[inline]
    fn add(&mut self, v: f64, weight: f64) {
        if self.n() == 0 {
            self.min = v;
            self.max = v;
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.weight += weight;
        self.sum += v;
        match &mut self.sketch {
            None => {
                self.values.push(v);
                if self.values.len() > EXACT_SAMPLES {
                    self.switch_to_sketch();
                }
            }
            Some(s) => {
                s.n += 1;
                let d = v - s.mean;
                s.mean += d / s.n as f64;
                s.m2 += d * (v - s.mean);
                s.sketch.add(v);
            }
        }
    }

    /// Mean and sum of squared deviations of every sample: from the samples themselves in
    /// exact mode, else the running values.
    fn moments(&self) -> (f64, f64) {
        if let Some(s) = &self.sketch {
            return (s.mean, s.m2);
        }
        if self.values.is_empty() {
            return (0.0, 0.0);
        }
        let mean = self.values.iter().sum::<f64>() / self.values.len() as f64;
        let m2 = self.values.iter().map(|x| (x - mean) * (x - mean)).sum();
        (mean, m2)
    }

    fn switch_to_sketch(&mut self) {
        let (mean, m2) = self.moments();
        let mut sketch = Sketch::new();
        for &v in &self.values {
            sketch.add(v);
        }
        let n = self.values.len() as u64;
        self.values = Vec::new();
        self.sketch = Some(Box::new(SketchMode {
            sketch,
            n,
            mean,
            m2,
        }));
    }

    fn merge(&mut self, mut other: Samples) {
        let (n_a, n_b) = (self.n(), other.n());
        if n_b == 0 {
            return;
        }
        if n_a == 0 {
            *self = other;
            return;
        }
        let ((mean_a, m2_a), (mean_b, m2_b)) = (self.moments(), other.moments());
        let (na, nb) = (n_a as f64, n_b as f64);
        let n = na + nb;
        let d = mean_b - mean_a;
        let mean = mean_a + d * nb / n;
        let m2 = m2_a + m2_b + d * d * na * nb / n;
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
                    s.sketch.add(v);
                }
            }
            (None, Some(mut o)) => {
                for v in self.values.drain(..) {
                    o.sketch.add(v);
                }
                self.values = Vec::new();
                self.sketch = Some(o);
            }
            (Some(s), Some(o)) => s.sketch.merge(&o.sketch),
        }
        if let Some(s) = &mut self.sketch {
            (s.n, s.mean, s.m2) = (n_a + n_b, mean, m2);
        }
    }

    /// Emits count, sum, min, max, mean, median, stddev and the percentiles.
    fn emit(mut self, key: &SeriesKey, percentiles: &[f64], out: &mut Vec<Datapoint>) {
        let n = self.n();
        if n == 0 {
            return;
        }
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
            Some(mode) => {
                let s = &mode.sketch;
                let median = if n % 2 == 0 {
                    (s.value_at_rank(n / 2) + s.value_at_rank(n / 2 + 1)) / 2.0
                } else {
                    s.value_at_rank(n / 2 + 1)
                };
                push(Stat::Median, median);
                push(Stat::Stddev, (mode.m2.max(0.0) / n as f64).sqrt());
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

/// One series' entry in an [`Aggregator`]: 32 bytes, aligned so that it never straddles two
/// cache lines (a lookup reads one line).
#[derive(Debug)]
#[repr(align(32))]
struct Entry {
    key: SeriesKey,
    acc: Acc,
    /// Index into the aggregator's [`Containers`]; 0 is "no container".
    container: u32,
    /// The interval (flush generation) of the last sample.
    last_seen: u32,
}

impl Entry {
    #[inline]
    fn is(&self, container: u32, key: &str) -> bool {
        self.container == container && self.key.encoded() == key
    }
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
        // "No container" is never released, so it is not counted.
        if i != 0 {
            self.refs[i as usize] += 1;
        }
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
    /// The series, in order of arrival.
    entries: Vec<Entry>,
    /// Series hash -> position in `entries`.
    index: Index,
    hasher: foldhash::fast::RandomState,
    containers: Containers,
    tag_cache: TagCache,
    /// Reused buffer for the encoded keys of the lines being added.
    scratch: String,
    generation: u32,
    series_dropped: u64,
}

/// Lines a [`Batcher`] looks up together: enough to overlap their cache misses,
/// few enough that what the first stage loads is still in cache at the last.
pub const BATCH: usize = 32;

/// Distance, in lines, between the stages of [`Aggregator::add_many`]'s pipeline.
const AHEAD: usize = 8;

/// One line of a batch on its way through [`Aggregator::add_many`].
#[derive(Clone, Copy)]
struct Lookup {
    /// The encoded key: `scratch[start..end]`.
    start: u32,
    end: u32,
    hash: u32,
    /// The interned container; `None` for a container not seen before (so a new series).
    container: Option<u32>,
    /// The first entry with the line's hash, if any (to be checked).
    candidate: Option<u32>,
}

fn hash_key(hasher: &foldhash::fast::RandomState, container: u32, encoded: &str) -> u32 {
    let mut h = hasher.build_hasher();
    container.hash(&mut h);
    h.write(encoded.as_bytes());
    let h = h.finish();
    (h ^ (h >> 32)) as u32
}

/// Adds the samples of a line (its `values`, at sample rate `rate`) to `acc`.
#[inline]
fn apply(acc: &mut Acc, values: Values<'_>, rate: f64, gauge_sign: GaugeSign, now: u64) {
    match acc {
        Acc::Counter(sum) => {
            for v in values {
                if let Value::Number { value, .. } = v {
                    *sum += value / rate;
                }
            }
        }
        Acc::Gauge(g) => {
            for v in values {
                if let Value::Number { value, signed } = v {
                    if signed && gauge_sign == GaugeSign::Delta {
                        g.delta += value;
                    } else {
                        g.set(value, now);
                    }
                }
            }
        }
        Acc::Timer(s) | Acc::Histogram(s) | Acc::Distribution(s) => {
            let weight = 1.0 / rate;
            for v in values {
                if let Value::Number { value, .. } = v {
                    s.add(value, weight);
                }
            }
        }
        Acc::Set(set) => {
            for v in values {
                let h = match v {
                    Value::Member(m) => member_hash(m),
                    Value::Number { .. } => continue,
                };
                set.add_hash(h);
            }
        }
    }
}

impl Aggregator {
    pub fn new(config: Arc<AggregatorConfig>) -> Self {
        Aggregator {
            config,
            entries: Vec::new(),
            index: Index::new(),
            hasher: foldhash::fast::RandomState::default(),
            containers: Containers::new(),
            tag_cache: TagCache::new(),
            scratch: String::with_capacity(4096),
            generation: 0,
            series_dropped: 0,
        }
    }

    pub fn config(&self) -> &Arc<AggregatorConfig> {
        &self.config
    }

    /// Series held by this aggregator.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        let at = self.position(line.name, line.tags, container, line.kind)?;
        apply(
            &mut self.entries[at].acc,
            line.values,
            line.sample_rate,
            gauge_sign,
            now,
        );
        Ok(())
    }

    /// Adds the lines of `batch` in order, as [`Aggregator::add`] would one by one, through a
    /// [`Batcher`]; returns the lines refused.
    pub fn add_many(&mut self, batch: &[(Line<'_>, Option<&str>)], now: u64) -> Refused {
        let mut b = Batcher::new(self, now);
        for (line, container) in batch {
            b.push(line.clone(), *container);
        }
        b.finish()
    }

    /// Looks up and applies a batch of prepared lines, in order; counts the lines refused in
    /// `refused`.
    ///
    /// The lookups run as a pipeline, each stage [`AHEAD`] lines behind the one before: a
    /// line's index slot (prefetched when it was prepared) is probed and its entry prefetched;
    /// its key and state are prefetched; for samples, the place of the next sample is
    /// prefetched; then it is checked and applied. The cache misses of different lines overlap
    /// instead of following one another.
    fn run(&mut self, items: &mut [Pending<'_>], keys: &str, now: u64, refused: &mut Refused) {
        let gauge_sign = self.config.gauge_sign();
        let n = items.len();
        for i in 0..n + 3 * AHEAD {
            if let Some(p) = items.get_mut(i) {
                let l = &mut p.lookup;
                if l.container.is_some() {
                    l.candidate = self.index.find(l.hash).next();
                    if let Some(c) = l.candidate {
                        prefetch((&self.entries[c as usize] as *const Entry).cast());
                    }
                }
            }
            if let Some(e) = self.candidate(items, i.checked_sub(AHEAD)) {
                // A key's header and bytes may span two lines.
                let key = e.key.heap_addr();
                prefetch(key);
                prefetch(key.wrapping_add(64));
                if let Some(p) = e.acc.heap_addr() {
                    prefetch(p);
                }
            }
            if let Some(e) = self.candidate(items, i.checked_sub(2 * AHEAD)) {
                if let Acc::Timer(s) | Acc::Histogram(s) | Acc::Distribution(s) = &e.acc {
                    // Where the next sample goes.
                    prefetch(s.values.as_ptr_range().end.cast());
                }
            }
            if let Some(p) = i.checked_sub(3 * AHEAD).and_then(|j| items.get(j)) {
                match self.resolve(&p.lookup, keys, p.kind, p.container) {
                    Ok(at) => apply(&mut self.entries[at].acc, p.values, p.rate, gauge_sign, now),
                    Err(e) => refused.count(e),
                }
            }
        }
    }

    /// A service check becomes an absolute gauge `name` = status with its tags.
    pub fn add_service_check(
        &mut self,
        sc: &ServiceCheck<'_>,
        container: Option<&str>,
        now: u64,
    ) -> Result<(), AddError> {
        let at = self.position(sc.name, sc.tags, container, MetricType::Gauge)?;
        if let Acc::Gauge(g) = &mut self.entries[at].acc {
            g.set(sc.status as f64, now);
        }
        Ok(())
    }

    /// The position of one series' entry, created if new: the lookup of a single line.
    fn position(
        &mut self,
        name: &str,
        tags: Tags<'_>,
        container: Option<&str>,
        kind: MetricType,
    ) -> Result<usize, AddError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let lookup = self.prepare(&mut scratch, name, tags, container);
        let found = self.resolve(&lookup, &scratch, kind, container);
        self.scratch = scratch;
        found
    }

    /// The candidate entry of the lookup at `at`, if there is one.
    #[inline]
    fn candidate(&self, items: &[Pending<'_>], at: Option<usize>) -> Option<&Entry> {
        let c = items.get(at?)?.lookup.candidate?;
        Some(&self.entries[c as usize])
    }

    /// Encodes the key of a line after what `keys` holds and hashes it.
    fn prepare(
        &mut self,
        keys: &mut String,
        name: &str,
        tags: Tags<'_>,
        container: Option<&str>,
    ) -> Lookup {
        let start = keys.len();
        self.tag_cache.encode_key(keys, name, tags);
        let end = keys.len();
        let container = self.containers.find(container);
        Lookup {
            start: start as u32,
            end: end as u32,
            hash: hash_key(
                &self.hasher,
                container.unwrap_or(u32::MAX),
                &keys[start..end],
            ),
            container,
            candidate: None,
        }
    }

    /// The position of the line's entry, created if new (and admitted by `max_series`). An
    /// entry without samples in this interval takes the line's type; one with samples of
    /// another type refuses the line.
    fn resolve(
        &mut self,
        l: &Lookup,
        keys: &str,
        kind: MetricType,
        container: Option<&str>,
    ) -> Result<usize, AddError> {
        let key = &keys[l.start as usize..l.end as usize];
        // A container unknown when the line was prepared may have arrived with an earlier line
        // of the same batch.
        let known = match l.container {
            Some(c) => Some((c, l.hash)),
            None => self
                .containers
                .find(container)
                .map(|c| (c, hash_key(&self.hasher, c, key))),
        };
        if let Some((c, hash)) = known {
            let entries = &self.entries;
            let found = match l.candidate {
                Some(at) if entries[at as usize].is(c, key) => Some(at),
                _ => self
                    .index
                    .find(hash)
                    .find(|&at| entries[at as usize].is(c, key)),
            };
            if let Some(at) = found {
                let e = &mut self.entries[at as usize];
                if e.acc.kind() != kind {
                    if e.last_seen == self.generation {
                        return Err(AddError::TypeMismatch);
                    }
                    // Nothing accumulated this interval: the series changes type.
                    e.acc = Acc::new(kind);
                }
                e.last_seen = self.generation;
                return Ok(at as usize);
            }
        }
        let config = &self.config;
        if config.series.fetch_add(1, Ordering::Relaxed) >= config.max_series {
            config.series.fetch_sub(1, Ordering::Relaxed);
            self.series_dropped += 1;
            return Err(AddError::SeriesLimit);
        }
        let c = self.containers.acquire(container);
        let hash = match known {
            Some((_, hash)) => hash,
            None => hash_key(&self.hasher, c, key),
        };
        let at = self.entries.len();
        self.entries.push(Entry {
            key: SeriesKey::from_encoded(key),
            acc: Acc::new(kind),
            container: c,
            last_seen: self.generation,
        });
        self.index.insert(hash, at as u32);
        Ok(at)
    }

    /// Hands over the accumulations of the interval that ends now and starts the next one.
    /// Series without samples for `expiry_flushes` intervals are forgotten.
    pub fn take_interval(&mut self) -> Vec<Partial> {
        let current = self.generation;
        let expiry = self.config.expiry_flushes();
        let mut out = Vec::new();
        let mut expired = 0usize;
        let containers = &mut self.containers;
        self.entries.retain_mut(|e| {
            if e.last_seen == current {
                if let Some(acc) = take_acc(&mut e.acc) {
                    out.push(Partial {
                        container: containers.get(e.container),
                        key: e.key.clone(),
                        kind: e.acc.kind(),
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
            // Positions moved: index what remains afresh, and give back what the expired held.
            let keep = self.entries.len();
            if self.entries.capacity() > 4 * keep.max(64) {
                self.entries.shrink_to(2 * keep);
            }
            let hasher = &self.hasher;
            self.index.rebuild(
                self.entries
                    .iter()
                    .enumerate()
                    .map(|(at, e)| (hash_key(hasher, e.container, e.key.encoded()), at as u32)),
            );
        }
        self.generation = self.generation.wrapping_add(1);
        out
    }
}

/// A metric line prepared for [`Aggregator::run`]: its key encoded and hashed, and what
/// applying it needs.
struct Pending<'a> {
    lookup: Lookup,
    kind: MetricType,
    values: Values<'a>,
    rate: f64,
    container: Option<&'a str>,
}

/// Metric lines on their way to an [`Aggregator`], a batch at a time: each pushed line's key is
/// encoded and hashed at once (and its index slot prefetched), and every [`BATCH`] lines the
/// batch is looked up together. Lines are added in push order; [`Batcher::finish`] (or
/// dropping the batcher) adds the rest.
pub struct Batcher<'a, 'g> {
    agg: &'g mut Aggregator,
    items: SmallVec<[Pending<'a>; BATCH]>,
    /// The encoded keys of `items`.
    keys: String,
    now: u64,
    refused: Refused,
}

impl<'a, 'g> Batcher<'a, 'g> {
    /// `now` orders gauge updates, as for [`Aggregator::add`].
    pub fn new(agg: &'g mut Aggregator, now: u64) -> Self {
        Batcher {
            agg,
            items: SmallVec::new(),
            keys: String::with_capacity(BATCH * 64),
            now,
            refused: Refused::default(),
        }
    }

    #[inline]
    pub fn push(&mut self, line: Line<'a>, container: Option<&'a str>) {
        let agg = &mut *self.agg;
        let lookup = agg.prepare(&mut self.keys, line.name, line.tags, container);
        agg.index.prefetch(lookup.hash);
        self.items.push(Pending {
            lookup,
            kind: line.kind,
            values: line.values,
            rate: line.sample_rate,
            container,
        });
        if self.items.len() == BATCH {
            self.flush();
        }
    }

    /// Adds a service check after the lines pushed before it.
    pub fn add_service_check(
        &mut self,
        sc: &ServiceCheck<'_>,
        container: Option<&str>,
    ) -> Result<(), AddError> {
        self.flush();
        self.agg.add_service_check(sc, container, self.now)
    }

    fn flush(&mut self) {
        if !self.items.is_empty() {
            (self.agg).run(&mut self.items, &self.keys, self.now, &mut self.refused);
            self.items.clear();
            self.keys.clear();
        }
    }

    /// Adds what is pending; returns the lines refused.
    pub fn finish(mut self) -> Refused {
        self.flush();
        self.refused
    }
}

impl Drop for Batcher<'_, '_> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.config
            .series
            .fetch_sub(self.entries.len(), Ordering::Relaxed);
    }
}

/// Moves an interval's accumulation out, leaving the entry reset (keeping its allocations
/// where that is cheap).
fn take_acc(acc: &mut Acc) -> Option<PartialAcc> {
    Some(match acc {
        Acc::Counter(sum) => PartialAcc::Counter(std::mem::take(sum)),
        Acc::Gauge(g) => PartialAcc::Gauge(std::mem::replace(g.as_mut(), GaugeAcc::EMPTY)),
        Acc::Timer(s) | Acc::Histogram(s) | Acc::Distribution(s) => {
            if s.n() == 0 {
                return None;
            }
            let cap = s.values.len().min(1024);
            let taken = std::mem::take(s.as_mut());
            s.values.reserve(cap);
            PartialAcc::Samples(Box::new(taken))
        }
        Acc::Set(set) => PartialAcc::Set(Box::new(std::mem::take(set.as_mut()))),
    })
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
    fn samples_fill_one_cache_line() {
        assert_eq!(std::mem::size_of::<super::Samples>(), 64);
    }

    #[test]
    fn an_entry_stays_small() {
        // Memory per series at 100k+ series is dominated by this and the key.
        assert!(
            std::mem::size_of::<super::Entry>() <= 32,
            "{}",
            std::mem::size_of::<super::Entry>()
        );
    }
}
