use std::time::{SystemTime, UNIX_EPOCH};

/// RFC 3339 UTC with milliseconds, as `2026-01-01T00:00:00.123Z`.
/// Times before 1970 (a clock set wrong) are written as the epoch rather than failing.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t.max(UNIX_EPOCH)).to_string()
}

pub fn unix_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}
