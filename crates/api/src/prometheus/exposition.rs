//! Rendering of the store's batches as one exposition: families, label unions, duplicates.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use corral_model::{Datapoint, Dimensions, Kind, MetricBatch, Stat, Unit};

use super::text::{escape_help, escape_label_value, label_name, metric_name, write_sample_value};

/// A tag value: borrowed from the batch, or several values of one key joined with `,`.
#[derive(Clone, Copy)]
enum Val<'a> {
    Str(&'a str),
    Joined(u32),
}

struct Family<'a> {
    /// ASCII by construction.
    name: Rc<[u8]>,
    counter: bool,
    hash: u64,
    /// The first datapoint's v0 name and unit, for `# HELP`.
    help: (&'a str, Stat, Unit),
    series: u32,
}

struct Series {
    family: u32,
    /// Index of the batch, whose dimensions the series carries.
    batch: u32,
    /// The series' own tags: `tags[start..end]`.
    start: u32,
    end: u32,
    value: f64,
    /// The next series with the same label hash (an intrusive chain for the duplicate check).
    next: u32,
}

const NONE: u32 = u32::MAX;

/// Interned label names: raw names (tag keys, dimension names) map to ids of sanitised names,
/// so that two raw names that sanitise alike are one label.
#[derive(Default)]
struct LabelNames<'a> {
    by_raw: HashMap<&'a str, u32>,
    by_name: HashMap<String, u32>,
    names: Vec<String>,
    /// `name="`, as written before each value.
    prefixes: Vec<Vec<u8>>,
}

impl<'a> LabelNames<'a> {
    fn id(&mut self, raw: &'a str) -> u32 {
        if let Some(&id) = self.by_raw.get(raw) {
            return id;
        }
        let name = label_name(raw);
        let id = match self.by_name.get(&name) {
            Some(&id) => id,
            None => {
                let id = self.names.len() as u32;
                self.by_name.insert(name.clone(), id);
                self.prefixes.push([name.as_bytes(), b"=\""].concat());
                self.names.push(name);
                id
            }
        };
        self.by_raw.insert(raw, id);
        id
    }
}

/// A batch's dimension labels, sorted by label id, empty values left out.
struct Dims<'a> {
    labels: Vec<(u32, &'a str)>,
    /// Sum of the labels' pair hashes (see [`Collector::pair_hash`]).
    hash: u64,
}

struct Collector<'a> {
    names: LabelNames<'a>,
    families: Vec<Family<'a>>,
    family_ids: HashMap<Rc<[u8]>, u32>,
    dims: Vec<Dims<'a>>,
    series: Vec<Series>,
    tags: Vec<(u32, Val<'a>)>,
    joined: Vec<String>,
    by_hash: HashMap<u64, u32, BuildHasherDefault<PreHashed>>,
    hasher: RandomState,
    type_conflicts: usize,
    duplicates: usize,
}

/// Renders every batch into one buffer.
pub(super) fn render(batches: &[Arc<MetricBatch>]) -> Vec<u8> {
    crate::render::whole(|chunk, emit| render_chunks(batches, chunk, emit))
}

/// Renders every batch, handing the text to `emit` in chunks of about `chunk` bytes, so that
/// the text of a large store is never held whole; stops when `emit` returns false. Linear in
/// the number of datapoints and labels: families and duplicate series are found by hashing,
/// and samples are grouped by family with a counting sort.
pub(super) fn render_chunks(
    batches: &[Arc<MetricBatch>],
    chunk: usize,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) {
    let mut ordered: Vec<&MetricBatch> = batches.iter().map(|b| &**b).collect();
    ordered.sort_by(|a, b| (a.source, &a.container_id).cmp(&(b.source, &b.container_id)));
    let points = ordered.iter().map(|b| b.points.len()).sum();
    let mut c = Collector {
        names: LabelNames::default(),
        families: Vec::new(),
        family_ids: HashMap::with_capacity(points / 4),
        dims: Vec::with_capacity(ordered.len()),
        series: Vec::with_capacity(points),
        tags: Vec::new(),
        joined: Vec::new(),
        by_hash: HashMap::with_capacity_and_hasher(points, Default::default()),
        hasher: RandomState::new(),
        type_conflicts: 0,
        duplicates: 0,
    };
    for batch in &ordered {
        c.add_batch(batch);
    }
    if c.type_conflicts + c.duplicates > 0 {
        tracing::debug!(
            type_conflicts = c.type_conflicts,
            duplicates = c.duplicates,
            "/metrics: datapoints left out after name sanitising"
        );
    }
    c.write(chunk, emit);
}

impl<'a> Collector<'a> {
    fn pair_hash(&self, id: u32, value: &str) -> u64 {
        self.hasher.hash_one((id, value))
    }

    fn add_batch(&mut self, batch: &'a MetricBatch) {
        let batch_idx = self.dims.len() as u32;
        let dims = self.dims_of(&batch.dimensions);
        self.dims.push(dims);
        let mut name = Vec::with_capacity(64);
        let mut tmp: Vec<(u32, Val<'a>)> = Vec::new();
        // Series of one name are adjacent in a batch: the previous lookup is reused.
        let mut last: Option<(&str, Stat, bool, u32)> = None;
        for p in &batch.points {
            let (counter, value) = match p.kind {
                Kind::Gauge => (false, p.value),
                Kind::Counter => (true, p.total),
                Kind::Cumulative => (true, p.value),
            };
            let raw = p.key.name();
            let family = match last {
                Some((n, s, c, f)) if n == raw && s == p.stat && c == counter => f,
                _ => {
                    name.clear();
                    metric_name(&mut name, raw, p.stat, counter);
                    let f = self.family(&name, counter, p);
                    last = Some((raw, p.stat, counter, f));
                    f
                }
            };
            if self.families[family as usize].counter != counter {
                self.type_conflicts += 1;
                continue;
            }

            // The series' tags, by label id; several values of one key are joined, and of
            // two keys that sanitise alike the first (in key order) wins.
            tmp.clear();
            let mut prev_key: Option<&str> = None;
            for (k, v) in p.key.tags() {
                if prev_key == Some(k) {
                    if let Some(last) = tmp.last_mut() {
                        last.1 = self.join(last.1, v);
                    }
                    continue;
                }
                prev_key = Some(k);
                tmp.push((self.names.id(k), Val::Str(v)));
            }
            tmp.sort_by_key(|t| t.0);
            tmp.dedup_by_key(|t| t.0);

            let start = self.tags.len() as u32;
            self.tags.extend_from_slice(&tmp);
            let end = self.tags.len() as u32;
            let hash = self.series_hash(family, batch_idx, start, end);
            let idx = self.series.len() as u32;
            let head = self.by_hash.get(&hash).copied().unwrap_or(NONE);
            let mut other = head;
            while other != NONE {
                let o = &self.series[other as usize];
                if o.family == family
                    && self.same_labels(o.batch, o.start, o.end, batch_idx, start, end)
                {
                    break;
                }
                other = o.next;
            }
            if other != NONE {
                self.duplicates += 1;
                self.tags.truncate(start as usize);
                continue;
            }
            self.by_hash.insert(hash, idx);
            self.series.push(Series {
                family,
                batch: batch_idx,
                start,
                end,
                value,
                next: head,
            });
            self.families[family as usize].series += 1;
        }
    }

    /// The family named `name`, created with `p`'s type and help when new.
    fn family(&mut self, name: &[u8], counter: bool, p: &'a Datapoint) -> u32 {
        if let Some(&f) = self.family_ids.get(name) {
            return f;
        }
        let f = self.families.len() as u32;
        let name: Rc<[u8]> = name.into();
        self.family_ids.insert(name.clone(), f);
        self.families.push(Family {
            name,
            counter,
            hash: self.hasher.hash_one(f),
            help: (p.key.name(), p.stat, p.unit),
            series: 0,
        });
        f
    }

    fn dims_of(&mut self, d: &'a Dimensions) -> Dims<'a> {
        let fixed = d.fields();
        let mut labels: Vec<(u32, &'a str)> = Vec::with_capacity(fixed.len() + d.labels.len());
        let entries = fixed
            .into_iter()
            .chain(d.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (k, v) in entries {
            let id = self.names.id(k);
            // A `labels` entry overrides a field of the same name.
            match labels.iter_mut().find(|l| l.0 == id) {
                Some(l) => l.1 = v,
                None => labels.push((id, v)),
            }
        }
        labels.retain(|l| !l.1.is_empty());
        labels.sort_by_key(|l| l.0);
        let hash = labels
            .iter()
            .fold(0u64, |h, &(id, v)| h.wrapping_add(self.pair_hash(id, v)));
        Dims { labels, hash }
    }

    fn join(&mut self, prev: Val<'a>, v: &str) -> Val<'a> {
        match prev {
            Val::Str(s) => {
                self.joined.push(format!("{s},{v}"));
                Val::Joined(self.joined.len() as u32 - 1)
            }
            Val::Joined(i) => {
                let s = &mut self.joined[i as usize];
                s.push(',');
                s.push_str(v);
                prev
            }
        }
    }

    fn val(&self, v: Val<'a>) -> &str {
        match v {
            Val::Str(s) => s,
            Val::Joined(i) => &self.joined[i as usize],
        }
    }

    /// A hash of the family and the merged labels, order-independent (a sum of per-label
    /// hashes), so that a batch's dimensions are hashed once and only tags cost per series.
    fn series_hash(&self, family: u32, batch: u32, start: u32, end: u32) -> u64 {
        let dims = &self.dims[batch as usize];
        let mut h = dims.hash.wrapping_add(self.families[family as usize].hash);
        for &(id, v) in &self.tags[start as usize..end as usize] {
            if let Ok(i) = dims.labels.binary_search_by_key(&id, |l| l.0) {
                h = h.wrapping_sub(self.pair_hash(id, dims.labels[i].1));
            }
            let v = self.val(v);
            if !v.is_empty() {
                h = h.wrapping_add(self.pair_hash(id, v));
            }
        }
        h
    }

    fn same_labels(&self, b1: u32, s1: u32, e1: u32, b2: u32, s2: u32, e2: u32) -> bool {
        self.merged(b1, s1, e1).eq(self.merged(b2, s2, e2))
    }

    /// The labels of a series: dimensions overlaid by tags, by label id, without empty values.
    fn merged(&self, batch: u32, start: u32, end: u32) -> Merged<'_, 'a> {
        Merged {
            c: self,
            dims: &self.dims[batch as usize].labels,
            tags: &self.tags[start as usize..end as usize],
        }
    }

    fn write(self, chunk: usize, emit: &mut dyn FnMut(Vec<u8>) -> bool) {
        // Counting sort of the series by family, keeping their order within a family.
        let mut offsets: Vec<u32> = Vec::with_capacity(self.families.len() + 1);
        let mut at = 0u32;
        for f in &self.families {
            offsets.push(at);
            at += f.series;
        }
        offsets.push(at);
        let mut order = vec![0u32; self.series.len()];
        let mut fill = offsets.clone();
        for (i, s) in self.series.iter().enumerate() {
            order[fill[s.family as usize] as usize] = i as u32;
            fill[s.family as usize] += 1;
        }
        let mut family_order: Vec<u32> = (0..self.families.len() as u32)
            .filter(|&f| self.families[f as usize].series > 0)
            .collect();
        family_order.sort_unstable_by(|&a, &b| {
            self.families[a as usize]
                .name
                .cmp(&self.families[b as usize].name)
        });

        // Each family's label names (the union over its series), sorted, with the byte sizes
        // needed to size the output.
        let label_count = self.names.names.len();
        let mut by_name: Vec<u32> = (0..label_count as u32).collect();
        by_name.sort_unstable_by(|&a, &b| {
            self.names.names[a as usize].cmp(&self.names.names[b as usize])
        });
        let mut rank = vec![0u32; label_count];
        for (r, &id) in by_name.iter().enumerate() {
            rank[id as usize] = r as u32;
        }
        let mut mark = vec![NONE; label_count];
        let mut pos = vec![0u32; label_count];
        // All unions in one vector: family `family_order[i]`'s is `unions[bounds[i]..bounds[i + 1]]`.
        let mut unions: Vec<u32> = Vec::new();
        let mut bounds: Vec<usize> = Vec::with_capacity(family_order.len() + 1);
        let mut estimate = 0usize;
        for &f in &family_order {
            let fam = &self.families[f as usize];
            let start = unions.len();
            bounds.push(start);
            let mut value_bytes = 0;
            for &si in &order[offsets[f as usize] as usize..offsets[f as usize + 1] as usize] {
                let s = &self.series[si as usize];
                for (id, v) in self.merged(s.batch, s.start, s.end) {
                    value_bytes += v.len();
                    if mark[id as usize] != f {
                        mark[id as usize] = f;
                        unions.push(id);
                    }
                }
            }
            let union = &mut unions[start..];
            union.sort_unstable_by_key(|&id| rank[id as usize]);
            let per_series = fam.name.len()
                + 28
                + union
                    .iter()
                    .map(|&id| self.names.names[id as usize].len() + 4)
                    .sum::<usize>();
            estimate += 2 * fam.name.len() + fam.help.0.len() + 64;
            estimate += per_series * fam.series as usize + value_bytes + value_bytes / 16;
        }
        bounds.push(unions.len());

        // Room for a chunk and the series that goes past it.
        let capacity = estimate.min(chunk.saturating_add(4096));
        let mut out = Vec::with_capacity(capacity);
        let mut slots: Vec<&str> = Vec::new();
        // Per batch, the label block last written for a series without tags, and the union it
        // was written for: the series of that batch without tags in other families with the
        // same label names (say, every resource metric of a container) copy it.
        let mut blocks: Vec<Option<(Range<usize>, Range<usize>)>> = vec![None; self.dims.len()];
        for (i, &f) in family_order.iter().enumerate() {
            let fam = &self.families[f as usize];
            let union_range = bounds[i]..bounds[i + 1];
            let union = &unions[union_range.clone()];
            let (help_name, stat, unit) = fam.help;
            out.extend_from_slice(b"# HELP ");
            out.extend_from_slice(&fam.name);
            out.push(b' ');
            escape_help(&mut out, help_name);
            if stat != Stat::Value {
                out.extend_from_slice(stat.suffix().as_bytes());
            }
            if unit != Unit::None {
                out.extend_from_slice(b" (");
                out.extend_from_slice(unit.as_str().as_bytes());
                out.push(b')');
            }
            out.extend_from_slice(b"\n# TYPE ");
            out.extend_from_slice(&fam.name);
            out.extend_from_slice(if fam.counter {
                b" counter\n"
            } else {
                b" gauge\n"
            });
            for (i, &id) in union.iter().enumerate() {
                pos[id as usize] = i as u32;
            }
            for &si in &order[offsets[f as usize] as usize..offsets[f as usize + 1] as usize] {
                let s = &self.series[si as usize];
                out.extend_from_slice(&fam.name);
                let reuse = match &blocks[s.batch as usize] {
                    Some((u, r)) if s.start == s.end && &unions[u.clone()] == union => {
                        Some(r.clone())
                    }
                    _ => None,
                };
                if let Some(r) = reuse {
                    out.extend_from_within(r);
                } else if !union.is_empty() {
                    let begin = out.len();
                    slots.clear();
                    slots.resize(union.len(), "");
                    for (id, v) in self.merged(s.batch, s.start, s.end) {
                        slots[pos[id as usize] as usize] = v;
                    }
                    out.push(b'{');
                    for (i, (&id, v)) in union.iter().zip(&slots).enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(&self.names.prefixes[id as usize]);
                        escape_label_value(&mut out, v);
                        out.push(b'"');
                    }
                    out.push(b'}');
                    if s.start == s.end {
                        blocks[s.batch as usize] = Some((union_range.clone(), begin..out.len()));
                    }
                }
                out.push(b' ');
                write_sample_value(&mut out, s.value);
                out.push(b'\n');
                if out.len() >= chunk {
                    if !emit(std::mem::replace(&mut out, Vec::with_capacity(capacity))) {
                        return;
                    }
                    // The label blocks to copy were in the text just handed over.
                    blocks.fill(None);
                }
            }
        }
        if !out.is_empty() {
            emit(out);
        }
    }
}

/// Merge-join of a batch's dimension labels and a series' tags, both sorted by label id.
struct Merged<'c, 'a> {
    c: &'c Collector<'a>,
    dims: &'c [(u32, &'a str)],
    tags: &'c [(u32, Val<'a>)],
}

impl<'c, 'a> Iterator for Merged<'c, 'a> {
    type Item = (u32, &'c str);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (id, v) = match (self.dims.first(), self.tags.first()) {
                (None, None) => return None,
                (Some(&d), None) => {
                    self.dims = &self.dims[1..];
                    d
                }
                (Some(&d), Some(&(tid, _))) if d.0 < tid => {
                    self.dims = &self.dims[1..];
                    d
                }
                (d, Some(&(tid, tv))) => {
                    // The tag wins over a dimension of the same name.
                    if d.is_some_and(|d| d.0 == tid) {
                        self.dims = &self.dims[1..];
                    }
                    self.tags = &self.tags[1..];
                    (tid, self.c.val(tv))
                }
            };
            if !v.is_empty() {
                return Some((id, v));
            }
        }
    }
}

/// A hasher for keys that already are uniformly distributed hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use corral_model::{SeriesKey, Source};

    use super::*;

    /// Containers whose untagged series copy a label block written before (possibly in a
    /// chunk already handed over), and tagged ones that cannot.
    fn batches() -> Vec<Arc<MetricBatch>> {
        (0..40)
            .map(|c| {
                let id = format!("c{c}");
                let mut points: Vec<Datapoint> = (0..30)
                    .map(|i| {
                        Datapoint::new(
                            SeriesKey::plain(&format!("m{i}")),
                            Stat::Value,
                            Unit::None,
                            (c * i) as f64,
                        )
                    })
                    .collect();
                points.push(Datapoint::new(
                    SeriesKey::new("m3", [("k", id.as_str())]),
                    Stat::Max,
                    Unit::Bytes,
                    1.5,
                ));
                let mut b = MetricBatch {
                    source: Source::Container,
                    container_id: Some(Arc::from(id.as_str())),
                    dimensions: Arc::new(Dimensions {
                        container_id: id,
                        task_name: "web".into(),
                        ..Dimensions::default()
                    }),
                    timestamp: SystemTime::UNIX_EPOCH,
                    points,
                };
                b.sort();
                Arc::new(b)
            })
            .collect()
    }

    #[test]
    fn chunks_make_the_same_text() {
        let batches = batches();
        let whole = render(&batches);
        assert!(whole.len() > 50_000, "{}", whole.len());
        for chunk in [1, 100, 4096, 65_536] {
            let mut parts = Vec::new();
            render_chunks(&batches, chunk, &mut |c| {
                parts.push(c);
                true
            });
            assert!(parts.len() > 1 || chunk == 65_536);
            assert!(parts.iter().all(|p| !p.is_empty()));
            assert_eq!(parts.concat(), whole, "chunks of {chunk} bytes");
        }
    }

    #[test]
    fn rendering_stops_when_refused() {
        let mut calls = 0;
        render_chunks(&batches(), 100, &mut |_| {
            calls += 1;
            calls < 3
        });
        assert_eq!(calls, 3);
    }
}
