//! `process.count`: the numeric (PID) entries of `/proc`. dcos-metrics counted every entry,
//! `self`, `sys` and the rest included.

use std::ffi::OsStr;

use corral_model::{Datapoint, Unit};

use super::point::gauge;

/// Counts the names that are process ids.
pub fn count<I, S>(names: I) -> usize
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    names
        .into_iter()
        .filter(|n| {
            let b = n.as_ref().as_encoded_bytes();
            !b.is_empty() && b.iter().all(u8::is_ascii_digit)
        })
        .count()
}

pub fn points(n: usize) -> Vec<Datapoint> {
    vec![gauge("process.count", Unit::Count, n as f64)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_pids() {
        let names = [
            "1",
            "self",
            "42",
            "thread-self",
            "sys",
            "1337",
            "",
            "12a",
            "net",
        ];
        assert_eq!(count(names), 3);
    }
}
