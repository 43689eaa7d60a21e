//! The Kafka sink's on-disk spool: an append-only log of encoded messages in segment files.
//!
//! Every message is appended here before it is produced, and removed only after its delivery
//! report, so neither a broker outage nor a restart loses it. Layout under `data_dir/spool/`:
//!
//! - `<seq>.seg` (20-digit sequence number): the magic `CORRALSP`, a `u32` format version
//!   (little-endian), then records. A record is `u32 body length`, `u32 CRC-32 of the body`,
//!   then the body: `u16 topic length`, topic, `u16 key length` (`0xFFFF`: no key), key,
//!   `u32 datapoint count`, and the message value (a complete Avro container file).
//! - `<seq>.acked`: which records of that segment were acknowledged (one bit each), written on
//!   a clean stop so a restart does not send them again.
//!
//! Acknowledgements are tracked per record in memory; a segment is deleted once it is no longer
//! written to and all its records are acknowledged. When the spool grows past its bound the
//! oldest segments are evicted. A restart reads every segment back, skipping corrupt records
//! (bad CRC) and a torn tail (a crash mid-write).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CORRALSP";
const VERSION: u32 = 1;
const SEG_HEADER: u64 = 12;
const REC_HEADER: usize = 8;
/// A record longer than this is taken as a corrupt length field.
const MAX_RECORD: u32 = 256 << 20;
const NO_KEY: u16 = u16::MAX;

/// A message as spooled.
#[derive(Clone, Debug, PartialEq)]
pub struct SpoolRecord {
    pub topic: String,
    pub key: Option<String>,
    pub datapoints: u32,
    pub payload: Vec<u8>,
}

impl SpoolRecord {
    fn encode(&self) -> io::Result<Vec<u8>> {
        let too_long =
            |what| io::Error::new(io::ErrorKind::InvalidInput, format!("{what} too long"));
        let topic_len = u16::try_from(self.topic.len()).map_err(|_| too_long("topic"))?;
        let key_len = match &self.key {
            Some(k) if k.len() < NO_KEY as usize => k.len() as u16,
            Some(_) => return Err(too_long("key")),
            None => NO_KEY,
        };
        let body_len = 2
            + self.topic.len()
            + 2
            + self.key.as_ref().map_or(0, String::len)
            + 4
            + self.payload.len();
        let body_len32 = u32::try_from(body_len)
            .ok()
            .filter(|&l| l <= MAX_RECORD)
            .ok_or_else(|| too_long("message"))?;
        let mut out = Vec::with_capacity(REC_HEADER + body_len);
        out.extend_from_slice(&body_len32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&topic_len.to_le_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(&key_len.to_le_bytes());
        if let Some(k) = &self.key {
            out.extend_from_slice(k.as_bytes());
        }
        out.extend_from_slice(&self.datapoints.to_le_bytes());
        out.extend_from_slice(&self.payload);
        let crc = crc32fast::hash(&out[REC_HEADER..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    fn decode(body: &[u8]) -> Option<SpoolRecord> {
        let mut pos = 0;
        let mut take = |n: usize| {
            let s = body.get(pos..pos + n)?;
            pos += n;
            Some(s)
        };
        let topic_len = u16::from_le_bytes(take(2)?.try_into().ok()?);
        let topic = String::from_utf8(take(topic_len as usize)?.to_vec()).ok()?;
        let key_len = u16::from_le_bytes(take(2)?.try_into().ok()?);
        let key = if key_len == NO_KEY {
            None
        } else {
            Some(String::from_utf8(take(key_len as usize)?.to_vec()).ok()?)
        };
        let datapoints = u32::from_le_bytes(take(4)?.try_into().ok()?);
        Some(SpoolRecord {
            topic,
            key,
            datapoints,
            payload: body[pos..].to_vec(),
        })
    }
}

/// A record's place: its segment and index within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub seg: u64,
    pub idx: u32,
}

#[derive(Clone, Copy, Debug)]
struct RecMeta {
    offset: u64,
    len: u32,
    datapoints: u32,
}

struct Segment {
    seq: u64,
    file: File,
    records: Vec<RecMeta>,
    acked: Vec<bool>,
    n_acked: usize,
    bytes: u64,
    /// No longer appended to.
    sealed: bool,
}

impl Segment {
    fn complete(&self) -> bool {
        self.n_acked == self.records.len()
    }

    fn unacked_bytes(&self) -> u64 {
        self.records
            .iter()
            .zip(&self.acked)
            .filter(|(_, a)| !**a)
            .map(|(r, _)| u64::from(r.len) + REC_HEADER as u64)
            .sum()
    }
}

/// What opening an existing spool found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OpenReport {
    pub segments: usize,
    /// Records still to send.
    pub records: usize,
    pub bytes: u64,
    /// Corrupt records skipped and torn tails cut off.
    pub corrupt: Vec<String>,
}

/// What an eviction removed.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Evicted {
    pub segments: usize,
    pub bytes: u64,
    /// Unacknowledged messages lost.
    pub messages: u64,
    pub datapoints: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    next_seq: u64,
    total_bytes: u64,
    unacked: u64,
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

fn acked_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.acked"))
}

/// Reads a segment's records, for recovery and `corral avro-dump`. Returns the records that
/// are intact (with their metadata), the end of the last good record, and what was corrupt.
fn scan(file: &File, len: u64) -> io::Result<(Vec<RecMeta>, u64, Vec<String>)> {
    let mut header = [0u8; SEG_HEADER as usize];
    let mut problems = Vec::new();
    if len < SEG_HEADER || file.read_exact_at(&mut header, 0).is_err() {
        problems.push("segment header truncated".to_string());
        return Ok((Vec::new(), 0, problems));
    }
    if &header[..8] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a Corral spool segment (bad magic)",
        ));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unsupported spool segment version {version}"),
        ));
    }
    let mut records = Vec::new();
    let mut pos = SEG_HEADER;
    let mut body = Vec::new();
    while pos < len {
        let mut rh = [0u8; REC_HEADER];
        if len - pos < REC_HEADER as u64 {
            problems.push(format!("torn record header at offset {pos}"));
            break;
        }
        file.read_exact_at(&mut rh, pos)?;
        let body_len = u32::from_le_bytes([rh[0], rh[1], rh[2], rh[3]]);
        let crc = u32::from_le_bytes([rh[4], rh[5], rh[6], rh[7]]);
        let end = pos + REC_HEADER as u64 + u64::from(body_len);
        if !(8..=MAX_RECORD).contains(&body_len) {
            problems.push(format!("bad record length {body_len} at offset {pos}"));
            break;
        }
        if end > len {
            problems.push(format!("torn record at offset {pos}"));
            break;
        }
        body.resize(body_len as usize, 0);
        file.read_exact_at(&mut body, pos + REC_HEADER as u64)?;
        if crc32fast::hash(&body) != crc {
            // The length looks sane, so the next record is probably intact: skip just this one.
            problems.push(format!("CRC mismatch in record at offset {pos}"));
        } else if let Some(r) = SpoolRecord::decode(&body) {
            records.push(RecMeta {
                offset: pos,
                len: body_len,
                datapoints: r.datapoints,
            });
        } else {
            problems.push(format!("malformed record at offset {pos}"));
        }
        pos = end;
    }
    Ok((records, pos, problems))
}

/// Every intact record of a segment file, and descriptions of what was corrupt.
pub fn read_segment_file(path: &Path) -> io::Result<(Vec<SpoolRecord>, Vec<String>)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let (metas, _, problems) = scan(&file, len)?;
    let mut out = Vec::with_capacity(metas.len());
    for m in metas {
        out.push(read_record(&file, &m)?);
    }
    Ok((out, problems))
}

/// Whether `path` starts with the spool segment magic.
pub fn is_segment_file(path: &Path) -> io::Result<bool> {
    let mut m = [0u8; 8];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < m.len() {
        match f.read(&mut m[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n == 8 && &m == MAGIC)
}

fn read_record(file: &File, m: &RecMeta) -> io::Result<SpoolRecord> {
    let mut body = vec![0u8; m.len as usize];
    file.read_exact_at(&mut body, m.offset + REC_HEADER as u64)?;
    SpoolRecord::decode(&body)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed spool record"))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, reading back what an earlier run left.
    pub fn open(dir: &Path, max_bytes: u64, segment_bytes: u64) -> io::Result<(Spool, OpenReport)> {
        fs::create_dir_all(dir)?;
        let mut seqs: Vec<u64> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(seq) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut report = OpenReport::default();
        let mut segments = VecDeque::new();
        for &seq in &seqs {
            let path = seg_path(dir, seq);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let len = file.metadata()?.len();
            let (records, end, problems) = match scan(&file, len) {
                Ok(s) => s,
                Err(e) => {
                    report
                        .corrupt
                        .push(format!("{}: {e}; removed", path.display()));
                    drop(file);
                    let _ = fs::remove_file(&path);
                    continue;
                }
            };
            for p in problems {
                report.corrupt.push(format!("{}: {p}", path.display()));
            }
            if end < len {
                // Cut the torn tail so the file is well-formed again.
                file.set_len(end.max(SEG_HEADER).min(len))?;
            }
            let mut acked = vec![false; records.len()];
            if let Ok(bits) = fs::read(acked_path(dir, seq)) {
                for (i, a) in acked.iter_mut().enumerate() {
                    *a = bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
                }
            }
            let n_acked = acked.iter().filter(|a| **a).count();
            let seg = Segment {
                seq,
                file,
                records,
                acked,
                n_acked,
                bytes: end.max(SEG_HEADER).min(len),
                sealed: true,
            };
            if seg.complete() {
                remove_segment_files(dir, seq);
                continue;
            }
            report.segments += 1;
            report.records += seg.records.len() - seg.n_acked;
            report.bytes += seg.bytes;
            segments.push_back(seg);
        }
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let unacked = report.records as u64;
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: segment_bytes.max(SEG_HEADER + 1),
            segments,
            next_seq: seqs.last().map_or(1, |s| s + 1),
            total_bytes,
            unacked,
        };
        Ok((spool, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of segment files on disk.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Records not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        self.unacked
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Changes the bound and the size of segments started from now on, and evicts the oldest
    /// segments at once if the spool is over the new bound.
    pub fn set_bounds(&mut self, max_bytes: u64, segment_bytes: u64) -> Evicted {
        self.max_bytes = max_bytes;
        self.segment_bytes = segment_bytes.max(SEG_HEADER + 1);
        self.enforce_bound()
    }

    fn active(&mut self) -> io::Result<&mut Segment> {
        let need_new = self.segments.back().is_none_or(|s| s.sealed);
        if need_new {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = seg_path(&self.dir, seq);
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            let mut header = Vec::with_capacity(SEG_HEADER as usize);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&VERSION.to_le_bytes());
            file.write_all(&header)?;
            self.total_bytes += SEG_HEADER;
            self.segments.push_back(Segment {
                seq,
                file,
                records: Vec::new(),
                acked: Vec::new(),
                n_acked: 0,
                bytes: SEG_HEADER,
                sealed: false,
            });
        }
        // Just ensured above.
        self.segments
            .back_mut()
            .ok_or_else(|| io::Error::other("no active segment"))
    }

    /// Appends a record, then evicts the oldest segments if the spool is over its bound.
    pub fn append(&mut self, rec: &SpoolRecord) -> io::Result<(RecordId, Evicted)> {
        let bytes = rec.encode()?;
        let seg_limit = self.segment_bytes;
        let seg = self.active()?;
        let offset = seg.bytes;
        if let Err(e) = seg.file.write_all_at(&bytes, offset) {
            // Leave no partial record behind for the next append to follow.
            let _ = seg.file.set_len(offset);
            return Err(e);
        }
        seg.bytes += bytes.len() as u64;
        seg.records.push(RecMeta {
            offset,
            len: (bytes.len() - REC_HEADER) as u32,
            datapoints: rec.datapoints,
        });
        seg.acked.push(false);
        let id = RecordId {
            seg: seg.seq,
            idx: (seg.records.len() - 1) as u32,
        };
        if seg.bytes >= seg_limit {
            seg.sealed = true;
        }
        self.total_bytes += bytes.len() as u64;
        self.unacked += 1;
        let evicted = self.enforce_bound();
        Ok((id, evicted))
    }

    fn enforce_bound(&mut self) -> Evicted {
        let mut ev = Evicted::default();
        while self.total_bytes > self.max_bytes {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            ev.segments += 1;
            ev.bytes += seg.bytes;
            for (r, a) in seg.records.iter().zip(&seg.acked) {
                if !*a {
                    ev.messages += 1;
                    ev.datapoints += u64::from(r.datapoints);
                }
            }
            self.unacked -= (seg.records.len() - seg.n_acked) as u64;
            self.total_bytes -= seg.bytes;
            drop(seg.file);
            remove_segment_files(&self.dir, seg.seq);
        }
        ev
    }

    fn segment(&self, seq: u64) -> Option<&Segment> {
        // Segments are sorted by sequence number.
        let i = self.segments.binary_search_by_key(&seq, |s| s.seq).ok()?;
        self.segments.get(i)
    }

    /// Reads a record back. `None` when it is gone (acknowledged or evicted).
    pub fn read(&self, id: RecordId) -> io::Result<Option<SpoolRecord>> {
        let Some(seg) = self.segment(id.seg) else {
            return Ok(None);
        };
        let Some(meta) = seg.records.get(id.idx as usize) else {
            return Ok(None);
        };
        read_record(&seg.file, meta).map(Some)
    }

    /// Size of a record on disk.
    pub fn record_len(&self, id: RecordId) -> u64 {
        self.segment(id.seg)
            .and_then(|s| s.records.get(id.idx as usize))
            .map_or(0, |m| u64::from(m.len) + REC_HEADER as u64)
    }

    /// Marks a record delivered (or given up on). Deletes its segment when that was the last
    /// one outstanding and the segment is no longer written to. Returns whether it was pending.
    pub fn ack(&mut self, id: RecordId) -> bool {
        let Ok(i) = self.segments.binary_search_by_key(&id.seg, |s| s.seq) else {
            return false;
        };
        let seg = &mut self.segments[i];
        match seg.acked.get_mut(id.idx as usize) {
            Some(a) if !*a => *a = true,
            _ => return false,
        }
        seg.n_acked += 1;
        self.unacked -= 1;
        // A fully acknowledged active segment is retired early, keeping the spool small while
        // the brokers keep up.
        if seg.complete() && (seg.sealed || seg.bytes >= self.segment_bytes.min(1 << 20)) {
            if let Some(seg) = self.segments.remove(i) {
                self.total_bytes -= seg.bytes;
                drop(seg.file);
                remove_segment_files(&self.dir, seg.seq);
            }
        }
        true
    }

    /// The first record at or after `from` not yet acknowledged, in append order.
    pub fn next_unacked(&self, from: RecordId) -> Option<RecordId> {
        let start = self.segments.partition_point(|s| s.seq < from.seg);
        for seg in self.segments.iter().skip(start) {
            let first = if seg.seq == from.seg {
                from.idx as usize
            } else {
                0
            };
            if let Some(off) = seg.acked.iter().skip(first).position(|a| !*a) {
                return Some(RecordId {
                    seg: seg.seq,
                    idx: (first + off) as u32,
                });
            }
        }
        None
    }

    /// The oldest record not yet acknowledged.
    pub fn first_unacked(&self) -> Option<RecordId> {
        self.next_unacked(RecordId { seg: 0, idx: 0 })
    }

    /// Writes the acknowledgement bitmaps (so a restart skips what was delivered) and removes
    /// the active segment when nothing in it is outstanding.
    pub fn checkpoint(&mut self) -> io::Result<()> {
        if let Some(seg) = self.segments.back_mut() {
            seg.sealed = true;
        }
        let mut i = 0;
        while i < self.segments.len() {
            let seg = &self.segments[i];
            if seg.complete() {
                if let Some(seg) = self.segments.remove(i) {
                    self.total_bytes -= seg.bytes;
                    drop(seg.file);
                    remove_segment_files(&self.dir, seg.seq);
                }
                continue;
            }
            if seg.n_acked > 0 {
                let mut bits = vec![0u8; seg.acked.len().div_ceil(8)];
                for (j, a) in seg.acked.iter().enumerate() {
                    if *a {
                        bits[j / 8] |= 1 << (j % 8);
                    }
                }
                let tmp = self.dir.join(format!("{:020}.acked.tmp", seg.seq));
                fs::write(&tmp, &bits)?;
                fs::rename(&tmp, acked_path(&self.dir, seg.seq))?;
            }
            i += 1;
        }
        Ok(())
    }

    /// Unacknowledged bytes (records only), for tests and reports.
    pub fn unacked_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::unacked_bytes).sum()
    }
}

fn remove_segment_files(dir: &Path, seq: u64) {
    let _ = fs::remove_file(seg_path(dir, seq));
    let _ = fs::remove_file(acked_path(dir, seq));
}
