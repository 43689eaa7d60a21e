//! `dcos.metrics.MetricList` records and their Avro Object Container File (OCF) framing.
//!
//! Batches are turned into MetricLists (one per source, container and StatsD tag set) and
//! encoded straight from the batch into Avro's binary encoding, without an intermediate value
//! tree. Records are grouped into chunks of bounded size; a chunk becomes one OCF block. A Kafka
//! message is a whole OCF (header + one block); an Avro file is one header and many blocks.
//! Compression and decoding use `apache-avro`.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use anyhow::{Context, Result};
use apache_avro::{Codec, DeflateSettings, Schema, ZstandardSettings};
use corral_model::{unix_millis, MetricBatch, Source};
use serde::{Deserialize, Serialize};

use crate::config::AvroCodec;

/// The schema file as shipped (with its docs).
pub const SCHEMA_AVSC: &str = include_str!("../../../../proto/metrics.avsc");

/// OCF magic.
pub const MAGIC: &[u8; 4] = b"Obj\x01";

/// Kafka messages stay well under the brokers' default 1 MB limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// MetricList `topic` of host metrics.
pub const TOPIC_AGENT: &str = "agent";
/// MetricList `topic` of app metrics that belong to no container.
pub const TOPIC_UNKNOWN_CONTAINER: &str = "unknown_container";
/// MetricList `topic` of container metrics whose framework is not known (yet).
pub const TOPIC_UNKNOWN_FRAMEWORK: &str = "unknown_framework";

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    // The file is part of this crate and covered by tests.
    Schema::parse_str(SCHEMA_AVSC).expect("proto/metrics.avsc is a valid Avro schema")
});

/// The schema as written into OCF headers: the `doc` attributes stripped, keys sorted, no
/// whitespace; byte for byte what the dcos-metrics module wrote.
static HEADER_SCHEMA_JSON: LazyLock<String> = LazyLock::new(|| {
    let mut v: serde_json::Value =
        serde_json::from_str(SCHEMA_AVSC).expect("proto/metrics.avsc is valid JSON");
    strip_docs(&mut v);
    // serde_json's map is ordered by key, so this prints keys sorted.
    v.to_string()
});

fn strip_docs(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("doc");
            m.values_mut().for_each(strip_docs);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_docs),
        _ => {}
    }
}

/// The parsed MetricList schema.
pub fn schema() -> &'static Schema {
    &SCHEMA
}

/// The schema JSON that OCF headers carry.
pub fn header_schema_json() -> &'static str {
    &HEADER_SCHEMA_JSON
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AvroDatapoint {
    pub name: String,
    pub time_ms: i64,
    pub value: f64,
}

/// A decoded `dcos.metrics.MetricList`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricList {
    pub topic: String,
    pub tags: Vec<Tag>,
    pub datapoints: Vec<AvroDatapoint>,
}

/// The apache-avro codec for a configured one.
pub fn codec(c: AvroCodec) -> Codec {
    match c {
        AvroCodec::Null => Codec::Null,
        // Speed over ratio: level 6 (the default) manages about 10 MB/s on metric names.
        AvroCodec::Deflate => Codec::Deflate(DeflateSettings::new(
            miniz_oxide::deflate::CompressionLevel::BestSpeed,
        )),
        AvroCodec::Snappy => Codec::Snappy,
        AvroCodec::Zstd => Codec::Zstandard(ZstandardSettings::default()),
    }
}

/// The codec's name in the `avro.codec` header entry.
pub fn codec_name(c: AvroCodec) -> &'static str {
    match c {
        AvroCodec::Null => "null",
        AvroCodec::Deflate => "deflate",
        AvroCodec::Snappy => "snappy",
        AvroCodec::Zstd => "zstandard",
    }
}

// ---- Avro binary encoding ----

pub(crate) fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

fn long_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a zigzag varint long; `None` when truncated or longer than 10 bytes.
pub(crate) fn get_long(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// An OCF header: magic, metadata (`avro.codec`, `avro.schema`), sync marker. Deterministic
/// for a given codec and marker.
pub fn ocf_header(c: AvroCodec, marker: &[u8; 16]) -> Vec<u8> {
    let schema = header_schema_json();
    let mut h = Vec::with_capacity(schema.len() + 64);
    h.extend_from_slice(MAGIC);
    put_long(&mut h, 2);
    put_bytes(&mut h, b"avro.codec");
    put_bytes(&mut h, codec_name(c).as_bytes());
    put_bytes(&mut h, b"avro.schema");
    put_bytes(&mut h, schema.as_bytes());
    put_long(&mut h, 0);
    h.extend_from_slice(marker);
    h
}

/// Appends one OCF block holding `count` records encoded in `data` (uncompressed).
pub fn append_block(
    out: &mut Vec<u8>,
    c: AvroCodec,
    marker: &[u8; 16],
    count: usize,
    data: &[u8],
) -> Result<()> {
    let mut body = data.to_vec();
    codec(c)
        .compress(&mut body)
        .map_err(|e| anyhow::anyhow!("avro {} compression failed: {e}", codec_name(c)))?;
    put_long(out, count as i64);
    put_long(out, body.len() as i64);
    out.extend_from_slice(&body);
    out.extend_from_slice(marker);
    Ok(())
}

/// A whole OCF holding one block.
pub fn ocf_file(c: AvroCodec, marker: &[u8; 16], chunk: &Chunk) -> Result<Vec<u8>> {
    let mut out = ocf_header(c, marker);
    out.reserve(chunk.data.len() + 32);
    append_block(&mut out, c, marker, chunk.records, &chunk.data)?;
    Ok(out)
}

/// A fresh sync marker. Not cryptographic: it only has to be unlikely to occur in the data.
pub fn random_marker() -> [u8; 16] {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut m = [0u8; 16];
    for (i, half) in m.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    m
}

// ---- batches to MetricLists ----

/// Where a batch's MetricLists go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    pub topic_prefix: String,
    pub single_topic: Option<String>,
}

/// The MetricList `topic` of a batch.
pub fn list_topic(batch: &MetricBatch) -> &str {
    match (batch.source, &batch.container_id) {
        (Source::Node, _) => TOPIC_AGENT,
        (Source::App, None) => TOPIC_UNKNOWN_CONTAINER,
        (_, _) if !batch.dimensions.framework_id.is_empty() => &batch.dimensions.framework_id,
        (Source::App, Some(_)) | (Source::Container, _) => TOPIC_UNKNOWN_FRAMEWORK,
    }
}

/// The Kafka message key of a batch: the container id, or the agent's id for node-level data.
pub fn message_key(batch: &MetricBatch) -> Option<&str> {
    let k = match &batch.container_id {
        Some(c) => &**c,
        None => batch.dimensions.mesos_id.as_str(),
    };
    (!k.is_empty()).then_some(k)
}

impl Routing {
    /// The Kafka topic for a MetricList topic: `single_topic`, or the prefix plus the topic with
    /// characters Kafka does not allow replaced by `_`.
    pub fn kafka_topic(&self, list_topic: &str) -> String {
        if let Some(t) = &self.single_topic {
            return t.clone();
        }
        let mut t = self.topic_prefix.clone();
        t.extend(list_topic.chars().map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        }));
        // Kafka's limit; the prefix itself was checked by the configuration.
        let mut end = t.len().min(249);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
        t
    }
}

/// Encoded MetricLists bound for one Kafka topic and key: the data of one OCF block.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chunk {
    pub kafka_topic: String,
    pub key: Option<String>,
    /// Records (MetricLists) in `data`.
    pub records: usize,
    pub datapoints: usize,
    /// The records' binary encoding, uncompressed.
    pub data: Vec<u8>,
}

/// Turns batches into chunks of MetricLists of at most about `max_chunk_bytes` each.
pub struct Encoder {
    pub routing: Routing,
    max_chunk_bytes: usize,
    name: String,
    rec: Vec<u8>,
    dps: Vec<u8>,
}

impl Encoder {
    /// `max_message_bytes` bounds a whole message: the header and framing are taken off.
    pub fn new(routing: Routing, max_message_bytes: usize) -> Self {
        let overhead = ocf_header(AvroCodec::Null, &[0; 16]).len() + 64;
        Encoder {
            routing,
            max_chunk_bytes: max_message_bytes.saturating_sub(overhead).max(1024),
            name: String::new(),
            rec: Vec::new(),
            dps: Vec::new(),
        }
    }

    /// Appends the chunks of `batch` to `out`: one MetricList per StatsD tag set (in the order
    /// the sets first appear in the batch), a MetricList split when it alone is too big.
    pub fn encode_batch(&mut self, batch: &MetricBatch, out: &mut Vec<Chunk>) {
        self.encode_batch_each(batch, |c| out.push(c));
    }

    /// As [`Encoder::encode_batch`], handing each chunk to `emit` as soon as it is complete, so
    /// that a caller writing chunks out never holds a whole large flush encoded in memory.
    pub fn encode_batch_each(&mut self, batch: &MetricBatch, mut emit: impl FnMut(Chunk)) {
        if batch.points.is_empty() {
            return;
        }
        let topic = list_topic(batch);
        let new_chunk = || Chunk {
            kafka_topic: self.routing.kafka_topic(topic),
            key: message_key(batch).map(str::to_string),
            ..Chunk::default()
        };
        let mut chunk = new_chunk();
        let time_ms = unix_millis(batch.timestamp);
        let dims = dimension_tags(batch);

        // Group by tag set (the encoded key after the name is the sorted tag list), in order of
        // first appearance: the positions of every group's datapoints, one group after the
        // other, in one vector of exactly the batch's size. At 100k+ series, vectors per group
        // grown by doubling would hold megabytes more at every flush.
        // Counters without samples in the interval are not emitted (CONTRACT §2).
        let emitted = || {
            (batch.points.iter().enumerate())
                .filter(|(_, p)| p.in_interval())
                .map(|(i, p)| (i, &p.key.encoded()[p.key.name().len()..]))
        };
        let mut group_ids: HashMap<&str, usize> = HashMap::new();
        // Per group: where its positions start in `positions`, counted first.
        let mut starts: Vec<usize> = Vec::new();
        for (_, tags) in emitted() {
            let g = *group_ids.entry(tags).or_insert_with(|| {
                starts.push(0);
                starts.len() - 1
            });
            starts[g] += 1;
        }
        let mut next = 0;
        for s in &mut starts {
            (*s, next) = (next, next + *s);
        }
        let mut fill = starts.clone();
        let mut positions = vec![0u32; next];
        for (i, tags) in emitted() {
            let f = &mut fill[group_ids[tags]];
            positions[*f] = i as u32;
            *f += 1;
        }
        drop(fill);
        drop(group_ids);

        for (g, &start) in starts.iter().enumerate() {
            let end = starts.get(g + 1).copied().unwrap_or(positions.len());
            let idx = &positions[start..end];
            let first = &batch.points[idx[0] as usize];
            let mut at = 0;
            while at < idx.len() {
                self.rec.clear();
                put_bytes(&mut self.rec, topic.as_bytes());
                let n_tags = dims.len() + first.key.tags().count();
                put_long(&mut self.rec, n_tags as i64);
                for (k, v) in dims.iter().copied().chain(first.key.tags()) {
                    put_bytes(&mut self.rec, k.as_bytes());
                    put_bytes(&mut self.rec, v.as_bytes());
                }
                if n_tags > 0 {
                    put_long(&mut self.rec, 0);
                }
                let base = self.rec.len() + 2 * 10;
                self.dps.clear();
                let mut n = 0usize;
                while at < idx.len() {
                    let p = &batch.points[idx[at] as usize];
                    self.name.clear();
                    p.write_name(&mut self.name);
                    let size =
                        long_len(self.name.len() as i64) + self.name.len() + long_len(time_ms) + 8;
                    if n > 0 && base + self.dps.len() + size > self.max_chunk_bytes {
                        break;
                    }
                    put_bytes(&mut self.dps, self.name.as_bytes());
                    put_long(&mut self.dps, time_ms);
                    self.dps.extend_from_slice(&p.value.to_le_bytes());
                    n += 1;
                    at += 1;
                }
                put_long(&mut self.rec, n as i64);
                self.rec.extend_from_slice(&self.dps);
                put_long(&mut self.rec, 0);

                if chunk.records > 0 && chunk.data.len() + self.rec.len() > self.max_chunk_bytes {
                    emit(std::mem::replace(&mut chunk, new_chunk()));
                }
                chunk.data.extend_from_slice(&self.rec);
                chunk.records += 1;
                chunk.datapoints += n;
            }
        }
        if chunk.records > 0 {
            emit(chunk);
        }
    }
}

/// The dimensions of a batch as MetricList tags, empty values left out.
fn dimension_tags(batch: &MetricBatch) -> Vec<(&str, &str)> {
    let d = &*batch.dimensions;
    let mut tags: Vec<(&str, &str)> = d
        .fields()
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if d.container_id.is_empty() {
        if let Some(c) = &batch.container_id {
            tags.push(("container_id", c));
        }
    }
    tags.extend(
        d.labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    tags
}

// ---- decoding ----

/// Decodes every MetricList of an OCF with apache-avro (the writer's schema comes from the
/// file's header).
pub fn read_ocf<R: Read>(r: R) -> Result<Vec<MetricList>> {
    let reader = apache_avro::Reader::new(r).context("not an Avro object container file")?;
    let mut out = Vec::new();
    for v in reader {
        let v = v.context("bad Avro block")?;
        out.push(apache_avro::from_value::<MetricList>(&v).context("not a MetricList")?);
    }
    Ok(out)
}

/// The layout of an OCF whose tail may be torn (a crash mid-write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OcfExtent {
    /// Length of the header.
    pub header: usize,
    /// Where the last complete block ends.
    pub complete: usize,
    /// Complete blocks.
    pub blocks: usize,
}

/// Finds the complete blocks of an OCF without decoding them. `None` when even the header is
/// incomplete or the data is not an OCF.
pub fn ocf_extent(buf: &[u8]) -> Option<OcfExtent> {
    if buf.get(..4)? != MAGIC {
        return None;
    }
    let mut pos = 4;
    // Metadata map: blocks of entries; a negative count is followed by a byte size.
    loop {
        let n = get_long(buf, &mut pos)?;
        if n == 0 {
            break;
        }
        if n < 0 {
            get_long(buf, &mut pos)?;
        }
        for _ in 0..n.unsigned_abs() {
            for _ in 0..2 {
                let len = usize::try_from(get_long(buf, &mut pos)?).ok()?;
                pos = pos.checked_add(len)?;
            }
        }
        if pos > buf.len() {
            return None;
        }
    }
    let marker = buf.get(pos..pos + 16)?;
    pos += 16;
    let mut ext = OcfExtent {
        header: pos,
        complete: pos,
        blocks: 0,
    };
    loop {
        let mut p = ext.complete;
        let (Some(count), Some(size)) = (get_long(buf, &mut p), get_long(buf, &mut p)) else {
            return Some(ext);
        };
        let (Ok(_), Ok(size)) = (u64::try_from(count), usize::try_from(size)) else {
            return Some(ext);
        };
        let Some(end) = p.checked_add(size).and_then(|e| e.checked_add(16)) else {
            return Some(ext);
        };
        match buf.get(end - 16..end) {
            Some(m) if m == marker => {
                ext.complete = end;
                ext.blocks += 1;
            }
            _ => return Some(ext),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, 1 << 40, i64::MAX, i64::MIN] {
            let mut b = Vec::new();
            put_long(&mut b, v);
            assert_eq!(b.len(), long_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(get_long(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
        }
        assert_eq!(get_long(&[0x80], &mut 0), None);
    }
}
