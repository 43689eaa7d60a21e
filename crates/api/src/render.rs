//! JSON rendering of batches, written straight into a byte buffer.
//!
//! Batches can hold 100k datapoints, so nothing here builds per-datapoint values: names, tags
//! and numbers are escaped and formatted directly from the batch into the output.

use std::time::UNIX_EPOCH;

use corral_model::{rfc3339_millis, Datapoint, MetricBatch};

/// The dcos-metrics body for `points` (a slice of `batch.points`):
/// `{"datapoints":[...],"dimensions":{...}}`. Counters without samples in the interval are
/// left out (see `Datapoint::in_interval`); callers answer 204 when none is left.
pub(crate) fn metrics_body(batch: &MetricBatch, points: &[Datapoint]) -> Vec<u8> {
    whole(|chunk, emit| metrics_body_chunks(batch, points, chunk, emit))
}

/// What a chunked renderer (see [`streamed`]) writes, in one buffer.
pub(crate) fn whole(render: impl FnOnce(usize, &mut dyn FnMut(Vec<u8>) -> bool)) -> Vec<u8> {
    let mut out = Vec::new();
    render(usize::MAX, &mut |chunk| {
        if out.is_empty() {
            out = chunk;
        } else {
            out.extend_from_slice(&chunk);
        }
        true
    });
    out
}

/// [`metrics_body`] handed to `emit` in chunks of about `chunk` bytes; stops when `emit`
/// returns false.
pub(crate) fn metrics_body_chunks(
    batch: &MetricBatch,
    points: &[Datapoint],
    chunk: usize,
    emit: &mut dyn FnMut(Vec<u8>) -> bool,
) {
    // Every datapoint carries the batch's timestamp: format it once. The formatter panics on
    // times before 1970, which only a broken clock could produce.
    let timestamp = rfc3339_millis(batch.timestamp.max(UNIX_EPOCH));
    // Sized up front: growing a multi-megabyte buffer by doubling copies it again and again.
    let fixed = 112 + timestamp.len();
    let estimate = points
        .iter()
        .fold(256, |n, p| n + fixed + 2 * p.key.encoded().len());
    let capacity = estimate.min(chunk.saturating_add(4096));
    let mut out = Vec::with_capacity(capacity);
    let mut name = String::with_capacity(64);

    out.extend_from_slice(b"{\"datapoints\":[");
    for (i, p) in points.iter().filter(|p| p.in_interval()).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        name.clear();
        p.write_name(&mut name);
        out.extend_from_slice(b"{\"name\":\"");
        escape_into(&mut out, &name);
        out.extend_from_slice(b"\",\"value\":");
        write_value(&mut out, p.value);
        out.extend_from_slice(b",\"unit\":\"");
        escape_into(&mut out, p.unit.as_str());
        out.extend_from_slice(b"\",\"timestamp\":\"");
        out.extend_from_slice(timestamp.as_bytes());
        out.push(b'"');
        if p.key.has_tags() {
            out.extend_from_slice(b",\"tags\":");
            write_tags(&mut out, p);
        }
        out.push(b'}');
        if out.len() >= chunk && !emit(std::mem::replace(&mut out, Vec::with_capacity(capacity))) {
            return;
        }
    }
    out.extend_from_slice(b"],\"dimensions\":");
    serde_json::to_writer(&mut out, &*batch.dimensions)
        .expect("dimensions have only string keys and a Vec cannot fail to write");
    out.push(b'}');
    emit(out);
}

/// Bytes of a streamed body rendered ahead of the client.
const CHUNK_BYTES: usize = 256 * 1024;
const CHUNKS_AHEAD: usize = 2;

/// A response body rendered on the blocking pool and sent as it is rendered, a few chunks of
/// [`CHUNK_BYTES`] ahead of the client, so that a large body is never held whole. `render`
/// gets the chunk size and where to hand each chunk; it should stop when that returns false
/// (the client went away).
pub(crate) fn streamed<F>(what: &'static str, render: F) -> axum::body::Body
where
    F: FnOnce(usize, &mut dyn FnMut(Vec<u8>) -> bool) + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_AHEAD);
    let rendering = tokio::task::spawn_blocking(move || {
        render(CHUNK_BYTES, &mut |chunk| tx.blocking_send(chunk).is_ok())
    });
    tokio::spawn(async move {
        if let Err(e) = rendering.await {
            // The response ends short of its body; the client sees it broken.
            tracing::error!(error = %e, "rendering {what} failed");
        }
    });
    axum::body::Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), rx))
    }))
}

/// A JSON array of strings.
pub(crate) fn string_array<S: AsRef<str>>(items: &[S]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + items.iter().map(|s| s.as_ref().len() + 3).sum::<usize>());
    out.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        escape_into(&mut out, s.as_ref());
        out.push(b'"');
    }
    out.push(b']');
    out
}

/// The key's tags as an object. Tags are sorted by (key, value), so a key that occurs with
/// several values (`a:1` and `a:2`) has them adjacent; a JSON object with a repeated key would
/// let the last one silently win in most decoders, so such values are joined with "," under
/// one key instead (`"a":"1,2"`).
fn write_tags(out: &mut Vec<u8>, p: &Datapoint) {
    out.push(b'{');
    let mut prev: Option<&str> = None;
    for (k, v) in p.key.tags() {
        if prev == Some(k) {
            out.push(b',');
        } else {
            if prev.is_some() {
                out.extend_from_slice(b"\",");
            }
            out.push(b'"');
            escape_into(out, k);
            out.extend_from_slice(b"\":\"");
            prev = Some(k);
        }
        escape_into(out, v);
    }
    if prev.is_some() {
        out.push(b'"');
    }
    out.push(b'}');
}

/// Integral values below 2^53 are written as integers (`4476928`, not `4476928.0`), as the Go
/// encoder of dcos-metrics did; other finite values in ryu's shortest round-trip form. NaN and
/// infinities cannot be JSON numbers, so they are written as strings.
pub(crate) fn write_value(out: &mut Vec<u8>, v: f64) {
    const EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else if v.fract() == 0.0 && v.abs() < EXACT_INT_LIMIT {
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    }
}

/// Escape action per byte: 0 = copy as is, `u` = `\u00XX`, otherwise the letter after `\`.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Appends `s` escaped as the inside of a JSON string (same escapes as serde_json).
pub(crate) fn escape_into(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc = ESCAPE[b as usize];
        if esc == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if esc == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_make_the_same_body() {
        use corral_model::{Kind, SeriesKey, Source, Stat, Unit};
        use std::sync::Arc;
        let points: Vec<Datapoint> = (0..500)
            .map(|i| {
                let key = SeriesKey::new(&format!("m{i}"), [("k", "v\"")]);
                let p = Datapoint::new(key, Stat::Mean, Unit::None, i as f64);
                // Every third a counter without samples, which is left out.
                if i % 3 == 0 {
                    Datapoint::counter(p.key, 0.0, 5.0)
                } else {
                    p.with_kind(Kind::Gauge)
                }
            })
            .collect();
        let batch = MetricBatch {
            source: Source::App,
            container_id: None,
            dimensions: Arc::default(),
            timestamp: UNIX_EPOCH,
            points,
        };
        let whole = metrics_body(&batch, &batch.points);
        serde_json::from_slice::<serde_json::Value>(&whole).expect("JSON");
        for chunk in [1, 64, 1000] {
            let mut parts = Vec::new();
            metrics_body_chunks(&batch, &batch.points, chunk, &mut |c| {
                parts.push(c);
                true
            });
            assert!(parts.len() > 1);
            assert_eq!(parts.concat(), whole, "chunks of {chunk} bytes");
        }
        let mut calls = 0;
        metrics_body_chunks(&batch, &batch.points, 64, &mut |_| {
            calls += 1;
            calls < 2
        });
        assert_eq!(calls, 2);
    }

    fn value(v: f64) -> String {
        let mut out = Vec::new();
        write_value(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values() {
        assert_eq!(value(4476928.0), "4476928");
        assert_eq!(value(0.0), "0");
        assert_eq!(value(-0.0), "0");
        assert_eq!(value(-3.0), "-3");
        assert_eq!(value(0.5), "0.5");
        assert_eq!(value(-1.25), "-1.25");
        assert_eq!(value(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(value(9_007_199_254_740_991.0), "9007199254740991");
        assert_eq!(
            value(9_007_199_254_740_992.0),
            serde_json::to_string(&9_007_199_254_740_992.0f64).unwrap()
        );
        assert_eq!(value(1e300), "1e300");
        assert_eq!(value(1.5e-9), "1.5e-9");
        assert_eq!(value(f64::NAN), "\"NaN\"");
        assert_eq!(value(f64::INFINITY), "\"Infinity\"");
        assert_eq!(value(f64::NEG_INFINITY), "\"-Infinity\"");
        for v in [1e300, 1.5e-9, 0.1, 123456.789, f64::MAX, f64::MIN_POSITIVE] {
            assert_eq!(value(v).parse::<f64>().unwrap(), v);
        }
    }

    #[test]
    fn escaping_matches_serde_json() {
        let mut all: String = (0u8..=0x7f).map(char::from).collect();
        all.push_str("é☃𝄞\u{2028}");
        for s in [all.as_str(), "", "plain", "a\"b\\c", "\n"] {
            let mut out = vec![b'"'];
            escape_into(&mut out, s);
            out.push(b'"');
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    #[test]
    fn string_arrays() {
        let empty: [&str; 0] = [];
        assert_eq!(string_array(&empty), b"[]");
        assert_eq!(string_array(&["a", "b\"c"]), br#"["a","b\"c"]"#);
    }
}
