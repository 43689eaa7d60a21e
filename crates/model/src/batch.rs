//! Datapoints, dimensions and the batch that carries them from a source to the store and sinks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::SeriesKey;

/// Which statistic of a series a datapoint holds; rendered as a name suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stat {
    /// The series' own value (counters, gauges, sets, host and container metrics): no suffix.
    Value,
    Count,
    Max,
    Mean,
    Median,
    Min,
    /// A percentile, rendered `p99_9` for 99.9.
    Percentile(Milli),
    Stddev,
    Sum,
}

impl Stat {
    /// Appends this statistic's suffix (with its leading `.`) to `out`.
    pub fn write_suffix(self, out: &mut String) {
        let _ = self.write_to(out);
    }

    fn write_to<W: std::fmt::Write>(self, out: &mut W) -> std::fmt::Result {
        let s = match self {
            Stat::Value => return Ok(()),
            Stat::Count => ".count",
            Stat::Max => ".max",
            Stat::Mean => ".mean",
            Stat::Median => ".median",
            Stat::Min => ".min",
            Stat::Stddev => ".stddev",
            Stat::Sum => ".sum",
            Stat::Percentile(milli) => {
                let whole = milli.get() / 1000;
                let mut frac = milli.get() % 1000;
                // Formatted by hand: this runs inside sort comparisons.
                out.write_str(".p")?;
                write_digits(out, whole, 1)?;
                if frac != 0 {
                    let mut digits = 3;
                    while frac % 10 == 0 {
                        frac /= 10;
                        digits -= 1;
                    }
                    out.write_str("_")?;
                    write_digits(out, frac, digits)?;
                }
                return Ok(());
            }
        };
        out.write_str(s)
    }

    /// Converts a configured percentile (e.g. `99.9`) to its thousandths representation.
    pub fn percentile(p: f64) -> Stat {
        Stat::Percentile(Milli::new((p * 1000.0).round() as u32))
    }

    /// The percentile as a number, for `Stat::Percentile`.
    pub fn percentile_value(self) -> Option<f64> {
        match self {
            Stat::Percentile(m) => Some(m.get() as f64 / 1000.0),
            _ => None,
        }
    }
}

/// A percentile in thousandths of a percent (99.9 is 99_900), in three bytes: with it a
/// [`Stat`] takes four, and a [`Datapoint`] 32. Big-endian, so that the derived order is the
/// numeric one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Milli([u8; 3]);

impl Milli {
    /// Percentiles are at most 100 (100_000 thousandths); larger values saturate.
    pub const fn new(thousandths: u32) -> Milli {
        let v = if thousandths > 0xFF_FFFF {
            0xFF_FFFF
        } else {
            thousandths
        };
        Milli([(v >> 16) as u8, (v >> 8) as u8, v as u8])
    }

    pub const fn get(self) -> u32 {
        (self.0[0] as u32) << 16 | (self.0[1] as u32) << 8 | self.0[2] as u32
    }
}

/// Writes `n` in decimal, zero-padded to at least `width` digits.
fn write_digits<W: std::fmt::Write>(out: &mut W, mut n: u32, width: usize) -> std::fmt::Result {
    let mut buf = [b'0'; 10];
    let mut i = buf.len();
    while n > 0 || buf.len() - i < width {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // Only ASCII digits were written.
    out.write_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"))
}

/// Units of dcos-metrics datapoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Unit {
    /// App (StatsD) metrics carry an empty unit.
    #[default]
    None,
    Count,
    Percent,
    Bytes,
    Seconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::Count => "count",
            Unit::Percent => "percent",
            Unit::Bytes => "bytes",
            Unit::Seconds => "seconds",
        }
    }
}

/// What a datapoint's value means over time; decides its Prometheus type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Kind {
    /// A level (gauges, sets, host and container readings, timer statistics).
    #[default]
    Gauge,
    /// A StatsD counter: `value` is the sum within the flush interval (what the v0 API and
    /// Kafka carry), `total` the running sum since the series appeared (what Prometheus
    /// scrapes). A counter stays in the batches while it lives, with `value` 0 in intervals
    /// without samples, so that Prometheus sees no gaps.
    Counter,
    /// A monotonic total since some start (Corral's own counts, CPU seconds, bytes sent).
    Cumulative,
}

/// One value of one series at one time (the batch's timestamp). Kept small: a flush of many
/// series holds one of these per statistic.
#[derive(Clone, Debug, PartialEq)]
pub struct Datapoint {
    pub key: SeriesKey,
    pub value: f64,
    /// For `Kind::Counter`: the running total; 0 otherwise.
    pub total: f64,
    pub stat: Stat,
    pub unit: Unit,
    pub kind: Kind,
}

impl Datapoint {
    /// A gauge-kind datapoint.
    pub fn new(key: SeriesKey, stat: Stat, unit: Unit, value: f64) -> Self {
        Datapoint {
            key,
            value,
            total: 0.0,
            stat,
            unit,
            kind: Kind::Gauge,
        }
    }

    /// A StatsD counter: the interval's sum and the running total.
    pub fn counter(key: SeriesKey, interval: f64, total: f64) -> Self {
        Datapoint {
            key,
            value: interval,
            total,
            stat: Stat::Value,
            unit: Unit::None,
            kind: Kind::Counter,
        }
    }

    /// Whether the datapoint belongs in interval-based outputs (the v0 API, Kafka): all but
    /// counters without samples in the interval, which CONTRACT §2 does not emit.
    pub fn in_interval(&self) -> bool {
        !(self.kind == Kind::Counter && self.value == 0.0)
    }

    pub fn with_kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    /// The full datapoint name: the series name plus the statistic's suffix.
    pub fn name(&self) -> String {
        let mut s = String::with_capacity(self.key.name().len() + 8);
        self.write_name(&mut s);
        s
    }

    pub fn write_name(&self, out: &mut String) {
        out.push_str(self.key.name());
        self.stat.write_suffix(out);
    }

    /// Orders datapoints by full name, then tags, as the API returns them. Compares the
    /// rendered names (series name + suffix) without building them: this runs for every
    /// comparison of a flush's sort.
    pub fn api_cmp(&self, other: &Datapoint) -> std::cmp::Ordering {
        let (a, b) = (
            self.key.encoded().as_bytes(),
            other.key.encoded().as_bytes(),
        );
        // Most comparisons are settled by the first byte where the encoded keys differ: when
        // it lies inside both names, it orders the rendered names too, and neither the end of
        // the names nor the suffixes need looking for. (Statistics of one series share their
        // key, and go the long way.)
        if !std::ptr::eq(a, b) {
            let i = common_prefix(a, b);
            if let (Some(&x), Some(&y)) = (a.get(i), b.get(i)) {
                if x != b'\n' && y != b'\n' && !a[..i].contains(&b'\n') {
                    return x.cmp(&y);
                }
            }
        }
        let (sa, sb) = (self.stat.suffix(), other.stat.suffix());
        concat_cmp(
            self.key.name().as_bytes(),
            sa.as_bytes(),
            other.key.name().as_bytes(),
            sb.as_bytes(),
        )
        .then_with(|| self.key.tags().cmp(other.key.tags()))
    }
}

/// The length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let word = |s: &[u8], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let mut i = 0;
    while i + 8 <= n {
        let x = word(a, i) ^ word(b, i);
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// Compares `a1 ++ a2` with `b1 ++ b2` byte-wise, without concatenating.
fn concat_cmp(a1: &[u8], a2: &[u8], b1: &[u8], b2: &[u8]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = ([a1, a2], [b1, b2]);
    let (mut ai, mut ao, mut bi, mut bo) = (0, 0, 0, 0);
    loop {
        while ai < 2 && ao == a[ai].len() {
            ai += 1;
            ao = 0;
        }
        while bi < 2 && bo == b[bi].len() {
            bi += 1;
            bo = 0;
        }
        match (ai < 2, bi < 2) {
            (false, false) => return Ordering::Equal,
            (false, true) => return Ordering::Less,
            (true, false) => return Ordering::Greater,
            (true, true) => {}
        }
        let (x, y) = (&a[ai][ao..], &b[bi][bo..]);
        let n = x.len().min(y.len());
        match x[..n].cmp(&y[..n]) {
            Ordering::Equal => {}
            o => return o,
        }
        ao += n;
        bo += n;
    }
}

/// A rendered statistic suffix, on the stack.
#[derive(Clone, Copy)]
pub struct Suffix {
    buf: [u8; 24],
    len: u8,
}

impl Suffix {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    pub fn as_str(&self) -> &str {
        // Built only from ASCII in `Stat::suffix`.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl std::fmt::Write for Suffix {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let start = self.len as usize;
        let end = start + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[start..end].copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

impl Stat {
    /// The suffix (with its leading `.`) without allocating.
    pub fn suffix(self) -> Suffix {
        let mut out = Suffix {
            buf: [0; 24],
            len: 0,
        };
        let _ = self.write_to(&mut out);
        out
    }
}

/// Where a batch came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Host metrics (`/v0/node`).
    Node,
    /// Container resource metrics from the agent (`/v0/containers/{id}`).
    Container,
    /// StatsD metrics (`/v0/node/app` without a container, `/v0/containers/{id}/app` with one).
    App,
}

/// The dcos-metrics dimensions of a batch. Empty optional fields are omitted from JSON;
/// `mesos_id` and `hostname` are always present.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Dimensions {
    pub mesos_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub executor_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub framework_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub framework_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub framework_role: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub framework_principal: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub task_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub task_name: String,
    pub hostname: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Dimensions {
    /// The named fields (not `labels`), as dcos-metrics orders them; empty ones included.
    pub fn fields(&self) -> [(&'static str, &str); 11] {
        [
            ("mesos_id", &self.mesos_id),
            ("cluster_id", &self.cluster_id),
            ("hostname", &self.hostname),
            ("container_id", &self.container_id),
            ("executor_id", &self.executor_id),
            ("framework_id", &self.framework_id),
            ("framework_name", &self.framework_name),
            ("framework_role", &self.framework_role),
            ("framework_principal", &self.framework_principal),
            ("task_id", &self.task_id),
            ("task_name", &self.task_name),
        ]
    }
}

/// The datapoints of one flush or poll, for one source and one container (or the node).
#[derive(Clone, Debug)]
pub struct MetricBatch {
    pub source: Source,
    /// `None` for node-level data (host metrics, app metrics of no container).
    pub container_id: Option<Arc<str>>,
    pub dimensions: Arc<Dimensions>,
    pub timestamp: SystemTime,
    /// Sorted with [`MetricBatch::sort`] before the batch is published.
    pub points: Vec<Datapoint>,
}

impl MetricBatch {
    /// Sorts datapoints by name, then tags (the API's order, which also lets the store find a
    /// name by binary search). In place: a stable sort would allocate half the batch again.
    pub fn sort(&mut self) {
        self.points.sort_unstable_by(|a, b| a.api_cmp(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_suffixes() {
        let name = |p: f64| {
            let mut s = String::new();
            Stat::percentile(p).write_suffix(&mut s);
            s
        };
        assert_eq!(name(50.0), ".p50");
        assert_eq!(name(99.9), ".p99_9");
        assert_eq!(name(99.95), ".p99_95");
        assert_eq!(name(99.999), ".p99_999");
        assert_eq!(name(0.5), ".p0_5");
        assert_eq!(name(100.0), ".p100");
    }

    #[test]
    fn percentiles_order_numerically() {
        assert!(Stat::percentile(9.0) < Stat::percentile(50.0));
        assert!(Stat::percentile(99.0) < Stat::percentile(99.9));
        assert_eq!(Milli::new(100_000).get(), 100_000);
    }

    #[test]
    fn api_order_is_by_rendered_name_then_tags() {
        let k = |n: &str, t: &[(&str, &str)]| SeriesKey::new(n, t.iter().copied());
        let mut b = MetricBatch {
            source: Source::App,
            container_id: None,
            dimensions: Arc::default(),
            timestamp: SystemTime::UNIX_EPOCH,
            points: vec![
                Datapoint::new(k("a.b", &[]), Stat::Value, Unit::None, 1.0),
                Datapoint::new(k("a", &[]), Stat::Sum, Unit::None, 1.0),
                Datapoint::new(k("a", &[]), Stat::Count, Unit::None, 1.0),
                Datapoint::new(k("a", &[("x", "2")]), Stat::Count, Unit::None, 1.0),
                Datapoint::new(k("a", &[("x", "1")]), Stat::Count, Unit::None, 1.0),
            ],
        };
        b.sort();
        let names: Vec<_> = b
            .points
            .iter()
            .map(|p| format!("{}{:?}", p.name(), p.key.tags().collect::<Vec<_>>()))
            .collect();
        assert_eq!(
            names,
            vec![
                "a.b[]",
                "a.count[]",
                "a.count[(\"x\", \"1\")]",
                "a.count[(\"x\", \"2\")]",
                "a.sum[]"
            ]
        );
    }
}

#[cfg(test)]
mod layout {
    #[test]
    fn a_datapoint_stays_small() {
        // A flush of 100k series holds one per statistic, and the store keeps the latest.
        assert_eq!(std::mem::size_of::<super::Stat>(), 4);
        assert!(
            std::mem::size_of::<super::Datapoint>() <= 32,
            "{}",
            std::mem::size_of::<super::Datapoint>()
        );
    }
}

#[cfg(test)]
mod order {
    use super::*;
    use crate::SeriesKey;

    #[test]
    fn api_cmp_agrees_with_comparing_rendered_names() {
        let names = [
            "a",
            "a.b",
            "a.c",
            "a.count",
            "a.p",
            "ab",
            "a.p50",
            "b",
            "",
            "a.median.x",
            "a.p99_9",
        ];
        let stats = [
            Stat::Value,
            Stat::Count,
            Stat::Median,
            Stat::percentile(50.0),
            Stat::percentile(99.9),
            Stat::Sum,
        ];
        let mut points = Vec::new();
        for n in names {
            for s in stats {
                points.push(Datapoint::new(SeriesKey::plain(n), s, Unit::None, 0.0));
            }
        }
        for x in &points {
            for y in &points {
                assert_eq!(
                    x.api_cmp(y),
                    x.name().cmp(&y.name()),
                    "{} vs {}",
                    x.name(),
                    y.name()
                );
            }
        }
    }

    /// Long names with long common prefixes (the word-wide prefix search), names that are
    /// prefixes of others, tags, equal keys built apart and statistics sharing one key.
    #[test]
    fn api_cmp_agrees_with_rendered_names_then_tags() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet = b"ab.p5_0";
        let prefixes = ["", "web.checkout.svc0", "web.checkout.svc00012.latency"];
        let stats = [
            Stat::Value,
            Stat::Count,
            Stat::Mean,
            Stat::percentile(5.0),
            Stat::percentile(50.0),
            Stat::percentile(99.9),
        ];
        let mut points = Vec::new();
        for _ in 0..300 {
            let mut name = prefixes[next(3) as usize].to_string();
            for _ in 0..next(12) {
                name.push(alphabet[next(alphabet.len() as u64) as usize] as char);
            }
            let tags: Vec<(&str, &str)> = [("a", "1"), ("a", "2"), ("b", ""), ("env", "p")]
                .into_iter()
                .filter(|_| next(3) == 0)
                .collect();
            let key = SeriesKey::new(&name, tags.iter().copied());
            for _ in 0..2 {
                let s = stats[next(stats.len() as u64) as usize];
                points.push(Datapoint::new(key.clone(), s, Unit::None, 0.0));
            }
            // The same series, its key built again.
            if next(4) == 0 {
                let again = SeriesKey::new(&name, tags.iter().copied());
                points.push(Datapoint::new(again, Stat::Count, Unit::None, 0.0));
            }
        }
        for x in &points {
            for y in &points {
                let want = x
                    .name()
                    .cmp(&y.name())
                    .then_with(|| x.key.tags().cmp(y.key.tags()));
                assert_eq!(x.api_cmp(y), want, "{:?} vs {:?}", x.key, y.key);
            }
        }
    }
}
