//! The Kafka spool: append, ack, eviction, restart, and corrupt or torn data.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use corral_collector::sinks::spool::{read_segment_file, RecordId, Spool, SpoolRecord};

fn rec(i: usize, size: usize) -> SpoolRecord {
    SpoolRecord {
        topic: format!("metrics-t{}", i % 3),
        key: (i % 2 == 0).then(|| format!("key-{i}")),
        datapoints: i as u32,
        payload: vec![(i % 251) as u8; size],
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Every unacknowledged record, in order.
fn drain(spool: &Spool) -> Vec<SpoolRecord> {
    let mut out = Vec::new();
    let mut at = RecordId { seg: 0, idx: 0 };
    while let Some(id) = spool.next_unacked(at) {
        out.push(spool.read(id).unwrap().unwrap());
        at = RecordId {
            seg: id.seg,
            idx: id.idx + 1,
        };
    }
    out
}

#[test]
fn append_read_ack_and_segments_go_away_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, report) = Spool::open(dir.path(), 1 << 30, 4096).unwrap();
    assert_eq!(report.records, 0);
    let mut ids = Vec::new();
    for i in 0..20 {
        let (id, ev) = spool.append(&rec(i, 1000)).unwrap();
        assert_eq!(ev.segments, 0);
        ids.push(id);
    }
    assert_eq!(spool.unacked(), 20);
    assert!(segments(dir.path()).len() >= 5, "rolled at 4 KiB");
    assert_eq!(
        drain(&spool),
        (0..20).map(|i| rec(i, 1000)).collect::<Vec<_>>()
    );

    // Acks out of order; a segment is deleted only when all of its records are acknowledged.
    let before = segments(dir.path()).len();
    assert!(spool.ack(ids[1]));
    assert!(!spool.ack(ids[1]), "a second ack is a no-op");
    assert_eq!(segments(dir.path()).len(), before);
    assert!(spool.ack(ids[0]));
    assert!(spool.ack(ids[2]));
    assert!(spool.ack(ids[3]));
    assert!(segments(dir.path()).len() < before);
    assert_eq!(spool.first_unacked(), Some(ids[4]));
    for id in &ids[4..] {
        spool.ack(*id);
    }
    assert_eq!(spool.unacked(), 0);
    spool.checkpoint().unwrap();
    assert!(segments(dir.path()).is_empty());
    assert_eq!(spool.total_bytes(), 0);
}

#[test]
fn the_bound_evicts_the_oldest_segments_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 20_000, 4096).unwrap();
    let mut evicted = 0;
    let mut evicted_points = 0;
    for i in 0..100 {
        let (_, ev) = spool.append(&rec(i, 1000)).unwrap();
        evicted += ev.messages;
        evicted_points += ev.datapoints;
        assert!(spool.total_bytes() <= 20_000);
    }
    let kept = drain(&spool);
    assert_eq!(kept.len() as u64 + evicted, 100);
    // What is kept is the newest, in order.
    let first = kept[0].datapoints as usize;
    assert_eq!(kept, (first..100).map(|i| rec(i, 1000)).collect::<Vec<_>>());
    assert_eq!(evicted_points, (0..first as u64).sum::<u64>());
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, spool.total_bytes());
}

#[test]
fn a_lower_bound_evicts_at_once_and_a_higher_one_keeps_more() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20, 4096).unwrap();
    for i in 0..40 {
        spool.append(&rec(i, 1000)).unwrap();
    }
    assert_eq!(spool.unacked(), 40);
    let ev = spool.set_bounds(10_000, 2048);
    assert!(ev.segments > 0 && ev.messages > 0, "{ev:?}");
    assert!(spool.total_bytes() <= 10_000);
    let kept = drain(&spool);
    assert_eq!(kept.len() as u64 + ev.messages, 40);
    let first = kept[0].datapoints as usize;
    assert_eq!(kept, (first..40).map(|i| rec(i, 1000)).collect::<Vec<_>>());

    // Raised again: nothing more goes, and appends keep up to the new bound.
    assert_eq!(spool.set_bounds(1 << 20, 4096).messages, 0);
    for i in 40..80 {
        let (_, ev) = spool.append(&rec(i, 1000)).unwrap();
        assert_eq!(ev.messages, 0);
    }
    assert_eq!(drain(&spool).len(), kept.len() + 40);
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, spool.total_bytes());
}

#[test]
fn a_restart_resumes_what_was_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        let ids: Vec<RecordId> = (0..10)
            .map(|i| spool.append(&rec(i, 100)).unwrap().0)
            .collect();
        for id in &ids[..4] {
            spool.ack(*id);
        }
        spool.ack(ids[6]);
        spool.checkpoint().unwrap();
    }
    let (mut spool, report) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
    assert!(report.corrupt.is_empty(), "{:?}", report.corrupt);
    assert_eq!(report.records, 5);
    let expect: Vec<SpoolRecord> = [4, 5, 7, 8, 9].iter().map(|&i| rec(i, 100)).collect();
    assert_eq!(drain(&spool), expect);
    // New records go after the old ones.
    spool.append(&rec(10, 100)).unwrap();
    assert_eq!(drain(&spool).last(), Some(&rec(10, 100)));

    // Without a checkpoint (a crash) everything unacknowledged at the last checkpoint comes back.
    drop(spool);
    let (spool, report) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
    assert_eq!(report.records, 6);
    assert_eq!(drain(&spool).len(), 6);
}

#[test]
fn a_torn_tail_and_a_bad_crc_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        for i in 0..5 {
            spool.append(&rec(i, 200)).unwrap();
        }
    }
    let seg = segments(dir.path()).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // Flip a payload byte of the second record: only that record is lost.
    let second = 12 + (8 + 2 + 9 + 2 + 5 + 4 + 200) + 8 + 50;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, second).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], second).unwrap();
    // A crash mid-write: half a record at the end.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[100, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    drop(f);

    let (records, problems) = read_segment_file(&seg).unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(problems.len(), 2, "{problems:?}");

    let (spool, report) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
    assert_eq!(report.corrupt.len(), 2, "{:?}", report.corrupt);
    assert!(report.corrupt.iter().any(|p| p.contains("CRC")));
    assert!(report.corrupt.iter().any(|p| p.contains("torn")));
    let expect: Vec<SpoolRecord> = [0, 2, 3, 4].iter().map(|&i| rec(i, 200)).collect();
    assert_eq!(drain(&spool), expect);
    // The torn tail was cut off.
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
}

#[test]
fn any_truncation_or_garbage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(dir.path(), 1 << 30, 1 << 20).unwrap();
        for i in 0..4 {
            spool.append(&rec(i, 64)).unwrap();
        }
    }
    let seg = segments(dir.path()).pop().unwrap();
    let full = fs::read(&seg).unwrap();
    let work = tempfile::tempdir().unwrap();
    for cut in 0..full.len() {
        let p = work.path().join("00000000000000000001.seg");
        fs::write(&p, &full[..cut]).unwrap();
        let (spool, _) = Spool::open(work.path(), 1 << 30, 1 << 20).unwrap();
        let n = drain(&spool).len();
        assert!(n <= 4);
        drop(spool);
        for e in fs::read_dir(work.path()).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
    // Garbage with a plausible header.
    let p = work.path().join("00000000000000000001.seg");
    let mut junk = full[..12].to_vec();
    junk.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    fs::write(&p, &junk).unwrap();
    let (spool, report) = Spool::open(work.path(), 1 << 30, 1 << 20).unwrap();
    assert!(!report.corrupt.is_empty());
    assert!(drain(&spool).is_empty());
    // Not a spool file at all.
    drop(spool);
    fs::write(&p, b"something else entirely").unwrap();
    let (spool, report) = Spool::open(work.path(), 1 << 30, 1 << 20).unwrap();
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(spool.unacked(), 0);
}
