//! The line parser. (Being written.)

use crate::line::*;

/// Splits a datagram into its non-empty lines, with a trailing `\r` stripped from each.
pub fn lines(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    datagram.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).filter(|l| !l.is_empty())
}

/// Parses one line.
pub fn parse(_line: &[u8]) -> Result<Parsed<'_>, Reject> {
    Err(Reject::NoValue)
}

/// Parses a finite number (a leading `+` is allowed); `None` for NaN, infinities and garbage.
pub(crate) fn parse_number(s: &[u8]) -> Option<f64> {
    let s = s.strip_prefix(b"+").unwrap_or(s);
    let v: f64 = fast_float2::parse(s).ok()?;
    v.is_finite().then_some(v)
}
