//! The line parser: one StatsD/DogStatsD line to a borrowed [`Parsed`], or the [`Reject`]
//! reason it was dropped for. No heap allocation: the result borrows the input, and the value
//! and tag sections are only validated here (their iterators re-walk them lazily). A line's
//! one `#` section of under 64 bytes, the common case, is counted from its `,` and `:` bit
//! masks, which the result keeps so that walking its tags finds no delimiter again.
//!
//! Metric lines are parsed by hand over the bytes of the whole line. Plain decimals of up to
//! 8 bytes are read as one word ([`number`]), other numbers by a digit loop or fast-float2;
//! the rarer DogStatsD event and service-check headers use nom. Delimiters are found
//! by [`scan`]: bit masks for lines of up to 128 bytes, inline 16-byte SSE2 compares beyond
//! (memchr's per-call dispatch costs more than these short searches).
//!
//! Choices for input the dialect leaves open:
//!
//! - The name is the text before the first `:`, provided no `|` comes before that `:`; a line
//!   whose text before its first `|` holds no `:` (`a|b:1|c`, `abc`, `|c`) is `NoValue`.
//! - Checks run in line order and the first failure wins: name (`EmptyName`, `NameTooLong`),
//!   an empty value section (`a:`, `a:|c` are `NoValue`), the type (`a:1` is `UnknownType`),
//!   the values (`NoValue` when every packed slot is empty, else `BadValue`), then the fields.
//! - Empty fields (`a:1|c||#x`) and unknown fields are ignored.
//! - When a field is repeated, the last `@`, `c:` and `T` win (`@` decides both the rate and
//!   `bad_sample_rate`); every `#` field adds tags.
//! - Any field starting with `T` is a timestamp: `Tabc` is `BadValue`, not an unknown field.
//!   `T` digits that overflow `u64` are `BadValue` too.
//! - A line starting with `_e{` is an event and one starting with `_sc|` a service check,
//!   whatever follows: a metric named like that cannot be sent.
//! - Events: the title must not be empty; both lengths are byte lengths and must end on
//!   character boundaries; the text must be followed by the end of the line or by `|`.
//!   Fields other than `#` (`d:`, `h:`, `p:`, `t:`, `k:`, `s:`, ...) are ignored.
//! - Service checks: the status is exactly one digit `0`..=`3`; `d:` must be a non-negative
//!   integer and `c:` non-empty (else `BadServiceCheck`); everything after `|m:` is the
//!   message, so tags must come before it.
//! - Tag limits apply to events and service checks too (`TooManyTags`, `TagTooLong`), and so
//!   does the name limit to service checks (`NameTooLong`).

use nom::bytes::complete::{tag, take_till};
use nom::character::complete::{char, digit1, one_of};
use nom::combinator::map_res;
use nom::sequence::{delimited, preceded, separated_pair};
use nom::{IResult, Parser};

use crate::line::*;

mod number;
mod scan;

pub(crate) use scan::{find, Delim, Delims, Masks, Scan, WideMasks};
use scan::{find_in, is_ascii};

/// Splits a datagram into its non-empty lines, with a trailing `\r` stripped from each.
#[inline]
pub fn lines(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    Lines {
        data: datagram,
        pos: 0,
        block: 0,
        newlines: newlines(datagram, 0),
    }
}

struct Lines<'a> {
    data: &'a [u8],
    /// Start of the next line; past the end when done.
    pos: usize,
    /// The 64-byte block of `data` being walked, and its newlines not yet consumed (bit `i`
    /// for `data[block + i]`): one classification serves the one or two lines in a block.
    block: usize,
    newlines: u64,
}

/// The `\n` mask of `data[block..]`, up to 64 bytes.
#[inline(always)]
fn newlines(data: &[u8], block: usize) -> u64 {
    let span = &data[block.min(data.len())..];
    Masks::eq64(&span[..span.len().min(64)], b'\n')
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = self.data.len();
        while self.pos < len {
            while self.newlines == 0 && self.block + 64 < len {
                self.block += 64;
                self.newlines = newlines(self.data, self.block);
            }
            let end = if self.newlines == 0 {
                len
            } else {
                let end = self.block + self.newlines.trailing_zeros() as usize;
                self.newlines &= self.newlines - 1;
                end
            };
            let line = &self.data[self.pos..end];
            self.pos = end + 1;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                return Some(line);
            }
        }
        None
    }
}

impl std::iter::FusedIterator for Lines<'_> {}

/// Parses one line (without its `\n`).
#[inline(always)]
pub fn parse(line: &[u8]) -> Result<Parsed<'_>, Reject> {
    if line.len() <= Masks::MAX_LEN {
        let masks = Masks::new(line);
        let line = to_str(line, masks.is_ascii())?;
        parse_any(line, &masks)
    } else if line.len() <= WideMasks::MAX_WIDE_LEN {
        let masks = Masks::wide(line);
        let line = to_str(line, masks.is_ascii())?;
        parse_any(line, &masks)
    } else {
        let line = to_str(line, is_ascii(line))?;
        parse_any(line, &Scan(line.as_bytes()))
    }
}

#[inline(always)]
fn to_str(line: &[u8], ascii: bool) -> Result<&str, Reject> {
    if ascii {
        // SAFETY: every byte is ASCII, and ASCII is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(line) })
    } else {
        std::str::from_utf8(line).map_err(|_| Reject::NotUtf8)
    }
}

/// Parses a line known to be UTF-8, whose delimiters `delims` finds.
#[inline(always)]
fn parse_any<'a, D: Delims>(line: &'a str, delims: &D) -> Result<Parsed<'a>, Reject> {
    if line.as_bytes().first() == Some(&b'_') {
        if line.starts_with("_e{") {
            return parse_event(line).map(Parsed::Event);
        }
        if line.starts_with("_sc|") {
            return parse_service_check(line).map(Parsed::ServiceCheck);
        }
    }
    parse_metric(line, delims).map(Parsed::Metric)
}

/// Parses a finite number with an optional leading `+` or `-`; `None` for NaN, infinities
/// (including overflow) and anything that is not entirely a decimal number.
#[inline(always)]
pub(crate) fn parse_number(s: &[u8]) -> Option<f64> {
    match parse_short_decimal(s) {
        Some(v) => Some(v),
        None => parse_other_number(s),
    }
}

/// [`parse_number`] of `b[start..end]`: read as one word when that can be done.
#[inline(always)]
fn parse_number_in(b: &[u8], start: usize, end: usize) -> Option<f64> {
    match number::word_decimal(b, start, end) {
        Some(v) => Some(v),
        None => parse_number(&b[start..end]),
    }
}

/// [`parse_number`] for what is not a short decimal.
#[inline(never)]
fn parse_other_number(s: &[u8]) -> Option<f64> {
    // fast-float2 takes the sign itself, so `++1` and `+-1` stay invalid.
    let v: f64 = fast_float2::parse(s).ok()?;
    v.is_finite().then_some(v)
}

/// The common shape of StatsD values, `[+-]digits[.digits]` with at most 15 digits, else
/// `None`. The digits make an integer below 2^53 and the divisor is an exact power of ten, so
/// the one division is correctly rounded: the same result as fast-float2, for less work.
#[inline(always)]
fn parse_short_decimal(s: &[u8]) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, digits) = match *s.first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut mantissa = 0u64;
    let mut dot = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => mantissa = mantissa * 10 + u64::from(c - b'0'),
            b'.' if dot.is_none() && i > 0 => dot = Some(i),
            _ => return None,
        }
    }
    let fraction_digits = match dot {
        Some(dot) => digits.len() - dot - 1,
        None if digits.len() > 15 => return None,
        None => 0,
    };
    let value = mantissa as f64 / POW10[fraction_digits];
    Some(if negative { -value } else { value })
}

// The metric parser works with indexes into the whole line, which `Delims` searches.
// Delimiters are ASCII and never occur inside a multi-byte UTF-8 sequence, so slicing the
// `&str` at them cannot fail.

#[inline(always)]
fn parse_metric<'a, D: Delims>(line: &'a str, d: &D) -> Result<Line<'a>, Reject> {
    let b = line.as_bytes();
    let len = b.len();
    // The name ends at the first `:`, which no `|` may precede: the value then ends at the
    // first `|` and the type at the second, and the value holds another `:` when the second
    // one comes before its end. All four are found at once.
    let (colon, second_colon) = d.first_two(len, Delim::Colon);
    let (pipe, second_pipe, third_pipe) = d.first_three(len, Delim::Pipe);
    if colon >= pipe {
        return Err(Reject::NoValue);
    }
    let name = &line[..colon];
    check_name(name)?;

    let value_start = colon + 1;
    let value_end = pipe;
    if value_end == value_start {
        return Err(Reject::NoValue);
    }
    if value_end == len {
        return Err(Reject::UnknownType);
    }
    let type_start = value_end + 1;
    let type_end = second_pipe;
    let kind = metric_type(b, type_start, type_end)?;
    // A set member is any non-empty text, already checked above.
    let single = if kind != MetricType::Set {
        check_numbers(b, d, value_start, value_end, second_colon > value_end)?
    } else {
        None
    };

    let mut out = Line {
        name,
        kind,
        values: Values {
            raw: &line[value_start..value_end],
            kind,
            single,
        },
        sample_rate: 1.0,
        bad_sample_rate: false,
        tags: Tags::default(),
        container_id: None,
        timestamp: None,
    };
    if type_end < len {
        let field = type_end + 1;
        if third_pipe == len && b.get(field) == Some(&b'#') && len - field <= SHORT_SECTION {
            // One short `#` field, the line's last (the common tagged line): what
            // `metric_fields` would find, without its walk.
            let (commas, colons) = d.commas_colons(field + 1, len);
            out.tags = Tags::in_section(&line[field + 1..], commas, colons);
        } else {
            metric_fields(line, d, field, &mut out)?;
        }
    }
    Ok(out)
}

#[inline]
fn check_name(name: &str) -> Result<(), Reject> {
    if name.is_empty() {
        Err(Reject::EmptyName)
    } else if name.len() > MAX_NAME_BYTES {
        Err(Reject::NameTooLong)
    } else {
        Ok(())
    }
}

/// The metric types in discriminant order.
const TYPES: [MetricType; 6] = [
    MetricType::Counter,
    MetricType::Gauge,
    MetricType::Timer,
    MetricType::Histogram,
    MetricType::Distribution,
    MetricType::Set,
];

/// For each byte, 1 + the discriminant of the one-byte type it names, else 0.
const ONE_BYTE_TYPES: [u8; 256] = {
    let mut table = [0; 256];
    table[b'c' as usize] = MetricType::Counter as u8 + 1;
    table[b'g' as usize] = MetricType::Gauge as u8 + 1;
    table[b'h' as usize] = MetricType::Histogram as u8 + 1;
    table[b'd' as usize] = MetricType::Distribution as u8 + 1;
    table[b's' as usize] = MetricType::Set as u8 + 1;
    table
};

/// The type named by `b[start..end]`. Computed from a table and compares rather than by
/// branching on the bytes: the types of successive lines vary, and a mispredicted branch costs
/// more than the whole lookup.
#[inline(always)]
fn metric_type(b: &[u8], start: usize, end: usize) -> Result<MetricType, Reject> {
    let n = end - start;
    let first = b.get(start).copied().unwrap_or(0);
    // Read in bounds whether or not the type has a second byte (a type ending the line has
    // none), so that which it is takes no branch; the byte only counts when `n == 2`.
    let second = b
        .get((start + 1).min(b.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    let one_byte = ONE_BYTE_TYPES[usize::from(first)] * u8::from(n == 1);
    let timer = (MetricType::Timer as u8 + 1)
        * (u8::from(n == 2) & u8::from(first == b'm') & u8::from(second == b's'));
    match (one_byte | timer).checked_sub(1) {
        Some(i) => Ok(TYPES[usize::from(i)]),
        None => Err(Reject::UnknownType),
    }
}

/// Validates the non-empty numeric value section `b[start..end]`: packed slots, empty ones
/// skipped, at least one present. Must accept exactly what `ValuesIter` yields. Returns the
/// value when the section is exactly one number; `one_slot` says the section holds no `:`.
#[inline(always)]
fn check_numbers<D: Delims>(
    b: &[u8],
    d: &D,
    start: usize,
    end: usize,
    one_slot: bool,
) -> Result<Option<f64>, Reject> {
    if one_slot {
        return match parse_number_in(b, start, end) {
            Some(v) => Ok(Some(v)),
            None => Err(Reject::BadValue),
        };
    }
    let mut any = false;
    let mut slot = start;
    loop {
        let slot_end = d.find(slot, end, Delim::Colon);
        if slot_end > slot {
            let v = parse_number_in(b, slot, slot_end).ok_or(Reject::BadValue)?;
            if slot == start && slot_end == end {
                return Ok(Some(v));
            }
            any = true;
        }
        if slot_end == end {
            break;
        }
        slot = slot_end + 1;
    }
    if any {
        Ok(None)
    } else {
        Err(Reject::NoValue)
    }
}

/// Walks the fields of a metric line, from `start` (after the type's `|`) to the end.
#[inline(always)]
fn metric_fields<'a, D: Delims>(
    line: &'a str,
    d: &D,
    start: usize,
    out: &mut Line<'a>,
) -> Result<(), Reject> {
    let b = line.as_bytes();
    let len = b.len();
    // Tags of the `#` sections other than `single`.
    let mut tags = 0;
    // The first `#` section while it is the only one and short: its bounds and its `,` and
    // `:` masks. Its tags are not counted while it stays alone (they are within the limits).
    let mut single = None;
    let mut sections = 0;
    let mut field = start;
    loop {
        let end = d.find(field, len, Delim::Pipe);
        if end > field {
            match b[field] {
                b'#' => {
                    sections += 1;
                    if let Some((from, to, commas, colons)) = single.take() {
                        tags = count_short_section(commas, colons, to - from, tags)?;
                    }
                    if end - field <= SHORT_SECTION {
                        let (commas, colons) = d.commas_colons(field + 1, end);
                        if sections == 1 {
                            single = Some((field + 1, end, commas, colons));
                        } else {
                            tags = count_short_section(commas, colons, end - field - 1, tags)?;
                        }
                    } else {
                        tags = count_tags(b, d, field + 1, end, tags)?;
                    }
                }
                b'@' => match parse_number(&b[field + 1..end]) {
                    Some(rate) if rate > 0.0 && rate <= 1.0 => {
                        out.sample_rate = rate;
                        out.bad_sample_rate = false;
                    }
                    _ => {
                        out.sample_rate = 1.0;
                        out.bad_sample_rate = true;
                    }
                },
                b'c' if end > field + 1 && b[field + 1] == b':' => {
                    if end == field + 2 {
                        return Err(Reject::BadField);
                    }
                    out.container_id = Some(&line[field + 2..end]);
                }
                b'T' => {
                    out.timestamp = Some(parse_u64(&b[field + 1..end]).ok_or(Reject::BadValue)?);
                }
                _ => {}
            }
        }
        if end == len {
            break;
        }
        field = end + 1;
    }
    out.tags = match single {
        Some((from, to, commas, colons)) => Tags::in_section(&line[from..to], commas, colons),
        None => Tags::in_fields(&line[start..], tags),
    };
    Ok(())
}

/// The longest `#` field (with its `#`) whose tags are counted, and later walked, by bit masks.
const SHORT_SECTION: usize = 64;

/// [`count_tags`] for a section of `n` bytes (under 64) given its `,` and `:` masks: the
/// entries end at the commas and at `n` ([`section_tags`]).
#[inline(always)]
fn count_short_section(commas: u64, colons: u64, n: usize, before: usize) -> Result<usize, Reject> {
    debug_assert!(n < 64);
    // No entry of a short section is over `MAX_TAG_BYTES`.
    let count = before + section_tags(commas | 1 << n, colons).1.count_ones() as usize;
    if count > MAX_TAGS {
        return Err(Reject::TooManyTags);
    }
    Ok(count)
}

/// Counts the tags of the `#` section `b[start..end]` (without the `#`) on top of `before`
/// tags already seen, checking the limits. Must count exactly what `TagsIter` yields: empty
/// entries and `:` alone are skipped.
#[inline(always)]
fn count_tags<D: Delims>(
    b: &[u8],
    d: &D,
    start: usize,
    end: usize,
    before: usize,
) -> Result<usize, Reject> {
    let mut count = before;
    let mut tag = start;
    loop {
        let tag_end = d.find(tag, end, Delim::Comma);
        let n = tag_end - tag;
        if n > 1 || (n == 1 && b[tag] != b':') {
            if n > MAX_TAG_BYTES {
                return Err(Reject::TagTooLong);
            }
            count += 1;
            if count > MAX_TAGS {
                return Err(Reject::TooManyTags);
            }
        }
        if tag_end == end {
            return Ok(count);
        }
        tag = tag_end + 1;
    }
}

/// [`count_tags`] for a whole `#` section of an event or a service check.
fn count_section(section: &str, before: usize) -> Result<usize, Reject> {
    let b = section.as_bytes();
    count_tags(b, &Scan(b), 0, b.len(), before)
}

/// A non-empty run of ASCII digits that fits a `u64`.
#[inline]
fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &c| {
        if c.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

/// `_e{title_len,text_len}:`, returning both lengths.
fn event_header(input: &str) -> IResult<&str, (usize, usize)> {
    fn length(input: &str) -> IResult<&str, usize> {
        map_res(digit1, str::parse::<usize>).parse(input)
    }
    delimited(
        tag("_e{"),
        separated_pair(length, char(','), length),
        tag("}:"),
    )
    .parse(input)
}

fn parse_event(line: &str) -> Result<Event<'_>, Reject> {
    let (body, (title_len, text_len)) = event_header(line).map_err(|_| Reject::BadEvent)?;
    if title_len == 0 {
        return Err(Reject::BadEvent);
    }
    // `get` fails on lengths past the end or inside a character.
    let title = body.get(..title_len).ok_or(Reject::BadEvent)?;
    let rest = body[title_len..]
        .strip_prefix('|')
        .ok_or(Reject::BadEvent)?;
    let text = rest.get(..text_len).ok_or(Reject::BadEvent)?;
    let rest = &rest[text_len..];
    let fields = if rest.is_empty() {
        ""
    } else {
        rest.strip_prefix('|').ok_or(Reject::BadEvent)?
    };
    let mut count = 0;
    for field in fields.split('|') {
        if let Some(section) = field.strip_prefix('#') {
            count = count_section(section, count)?;
        }
    }
    Ok(Event {
        title,
        text,
        tags: Tags::in_fields(fields, count),
    })
}

/// `_sc|name|status`, returning the name and the status digit.
fn service_check_header(input: &str) -> IResult<&str, (&str, char)> {
    preceded(
        tag("_sc|"),
        separated_pair(take_till(|c| c == '|'), char('|'), one_of("0123")),
    )
    .parse(input)
}

fn parse_service_check(line: &str) -> Result<ServiceCheck<'_>, Reject> {
    let (rest, (name, status)) = service_check_header(line).map_err(|_| Reject::BadServiceCheck)?;
    if name.is_empty() {
        return Err(Reject::BadServiceCheck);
    }
    check_name(name)?;
    let fields = if rest.is_empty() {
        ""
    } else {
        rest.strip_prefix('|').ok_or(Reject::BadServiceCheck)?
    };

    let mut check = ServiceCheck {
        name,
        status: status as u8 - b'0',
        tags: Tags::default(),
        container_id: None,
        timestamp: None,
    };
    // Tags are only looked for before the message, which may itself hold `|#`.
    let mut tag_fields = fields;
    let mut count = 0;
    let mut start = 0;
    while start <= fields.len() {
        let end = find_in(fields.as_bytes(), start, fields.len(), b'|');
        let field = &fields[start..end];
        if field.starts_with("m:") {
            tag_fields = &fields[..start.saturating_sub(1)];
            break;
        }
        if let Some(section) = field.strip_prefix('#') {
            count = count_section(section, count)?;
        } else if let Some(ts) = field.strip_prefix("d:") {
            check.timestamp = Some(parse_u64(ts.as_bytes()).ok_or(Reject::BadServiceCheck)?);
        } else if let Some(id) = field.strip_prefix("c:") {
            if id.is_empty() {
                return Err(Reject::BadServiceCheck);
            }
            check.container_id = Some(id);
        }
        start = end + 1;
    }
    check.tags = Tags::in_fields(tag_fields, count);
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_lines(datagram: &[u8]) -> Vec<&[u8]> {
        lines(datagram).collect()
    }

    #[test]
    fn lines_split_strip_and_skip() {
        assert_eq!(all_lines(b""), Vec::<&[u8]>::new());
        assert_eq!(all_lines(b"\n\r\n\n"), Vec::<&[u8]>::new());
        assert_eq!(all_lines(b"a:1|c"), vec![&b"a:1|c"[..]]);
        assert_eq!(
            all_lines(b"a:1|c\r\nb:2|g\n\nc:3|ms\r"),
            vec![&b"a:1|c"[..], b"b:2|g", b"c:3|ms"]
        );
        // Only one trailing `\r` is stripped, and only at the end.
        assert_eq!(all_lines(b"a\r\r\nb\rc"), vec![&b"a\r"[..], b"b\rc"]);
    }

    #[test]
    fn numbers() {
        for ok in [
            "0", "1", "+1", "-1", "1.5", ".5", "5.", "-0", "4.696E+5", "-1e10", "1e-300",
        ] {
            assert!(parse_number(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in [
            "", "+", "-", "++1", "+-1", "--1", "nan", "NaN", "+nan", "inf", "-inf", "Infinity",
            "1e999", "-1e999", "0x10", " 1", "1 ", "1,5", "1e", "1.2.3", "e5", ".",
        ] {
            assert!(parse_number(bad.as_bytes()).is_none(), "{bad}");
        }
        assert_eq!(parse_number(b"+2.5"), Some(2.5));
        assert_eq!(parse_number(b"-1e2"), Some(-100.0));
    }

    #[test]
    fn short_decimals_match_fast_float() {
        let mut rng = crate::Xorshift::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next();
        let mut checked = 0;
        for _ in 0..200_000 {
            let digits = 1 + next() % 17;
            let mut text: String = (0..digits)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            if next() % 2 == 0 {
                let dot = (next() % (digits + 1)) as usize;
                text.insert(dot, '.');
            }
            match next() % 3 {
                0 => text.insert(0, '-'),
                1 => text.insert(0, '+'),
                _ => {}
            }
            let slow = fast_float2::parse::<f64, _>(&text).ok();
            if let Some(fast) = parse_short_decimal(text.as_bytes()) {
                assert_eq!(Some(fast.to_bits()), slow.map(f64::to_bits), "{text}");
                checked += 1;
            }
            assert_eq!(
                parse_number(text.as_bytes()).map(f64::to_bits),
                slow.map(f64::to_bits)
            );
        }
        assert!(checked > 100_000);
        assert_eq!(
            parse_short_decimal(b"-0").map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
        for other in [
            "",
            "-",
            "+",
            ".5",
            "5.",
            "1e3",
            "1.2.3",
            "0x1",
            "1234567890123456",
        ] {
            assert_eq!(
                parse_short_decimal(other.as_bytes()).is_some(),
                other == "5.",
                "{other}"
            );
        }
    }

    #[test]
    fn unsigned_integers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"0017"), Some(17));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        for bad in [&b""[..], b"-1", b"+1", b"1.0", b"1a", b" 1"] {
            assert_eq!(parse_u64(bad), None);
        }
    }

    #[test]
    fn types() {
        let of = |ty: &[u8]| metric_type(ty, 0, ty.len());
        for (ty, kind) in [
            (&b"c"[..], MetricType::Counter),
            (b"g", MetricType::Gauge),
            (b"ms", MetricType::Timer),
            (b"h", MetricType::Histogram),
            (b"d", MetricType::Distribution),
            (b"s", MetricType::Set),
        ] {
            assert_eq!(of(ty), Ok(kind));
            // Only `start..end` is looked at.
            let line = [b"x|", ty, b"|c"].concat();
            assert_eq!(metric_type(&line, 2, 2 + ty.len()), Ok(kind));
        }
        for bad in [
            &b""[..],
            b"C",
            b"t",
            b"e",
            b"m",
            b"msx",
            b"cc",
            b" c",
            b"sm",
            b"mm",
            b"ss",
            b"c\0",
        ] {
            assert_eq!(of(bad), Err(Reject::UnknownType), "{bad:?}");
        }
        // Every byte pair, against a plain match.
        for first in 0..=255u8 {
            for second in 0..=255u8 {
                let pair = [first, second];
                let expect = match &pair[..] {
                    b"ms" => Ok(MetricType::Timer),
                    _ => Err(Reject::UnknownType),
                };
                assert_eq!(of(&pair), expect);
                assert_eq!(metric_type(&pair, 0, 1), of(&pair[..1]));
            }
            let expect = match first {
                b'c' => Ok(MetricType::Counter),
                b'g' => Ok(MetricType::Gauge),
                b'h' => Ok(MetricType::Histogram),
                b'd' => Ok(MetricType::Distribution),
                b's' => Ok(MetricType::Set),
                _ => Err(Reject::UnknownType),
            };
            assert_eq!(of(&[first]), expect);
        }
    }

    #[test]
    fn packed_slots() {
        let check = |raw: &[u8]| {
            let one_slot = !raw.contains(&b':');
            check_numbers(raw, &Scan(raw), 0, raw.len(), one_slot)
        };
        assert_eq!(check(b"1:2:3"), Ok(None));
        assert_eq!(check(b"1::2:"), Ok(None));
        assert_eq!(check(b":1"), Ok(None));
        assert_eq!(check(b"-1.5"), Ok(Some(-1.5)));
        assert_eq!(check(b":"), Err(Reject::NoValue));
        assert_eq!(check(b":::"), Err(Reject::NoValue));
        assert_eq!(check(b"1:x"), Err(Reject::BadValue));
        assert_eq!(check(b"x::"), Err(Reject::BadValue));
        // Only `start..end` is looked at.
        let b = b"a:1:2|x:y";
        assert_eq!(check_numbers(b, &Scan(b), 2, 5, false), Ok(None));
        assert_eq!(check_numbers(b, &Masks::new(b), 2, 5, false), Ok(None));
        assert_eq!(check_numbers(b, &Masks::new(b), 2, 3, true), Ok(Some(1.0)));
        assert_eq!(
            check_numbers(b"a:x|c", &Scan(b"a:x|c"), 2, 3, true),
            Err(Reject::BadValue)
        );
    }

    #[test]
    fn tag_counting_matches_iteration() {
        for section in ["", ",", "a", "a,,b", ":", ":,::,a:", "a:b:c,,d", ",,,x,"] {
            let count = count_section(section, 0).unwrap();
            let fields = format!("#{section}");
            let tags = Tags::in_fields(&fields, count);
            assert_eq!(tags.iter().count(), count, "{section:?}");
        }
        assert_eq!(count_section("a,b", 63), Err(Reject::TooManyTags));
        assert_eq!(count_section("a", 63), Ok(64));
        // Only `start..end` counts.
        let b = b"#a,b|c,d";
        assert_eq!(count_tags(b, &Scan(b), 1, 4, 0), Ok(2));
        assert_eq!(count_tags(b, &Masks::new(b), 1, 4, 0), Ok(2));
    }

    /// Every section of up to 7 bytes over `a`, `:`, `,`, `é`, and longer random ones.
    fn sections() -> Vec<String> {
        let alphabet = ["a", ":", ",", "\u{e9}"];
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..6 {
            last = last
                .iter()
                .flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        let mut rng = crate::Xorshift::new(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let mut s = String::new();
            let len = (rng.next() % 80) as usize;
            while s.len() < len {
                s.push_str(alphabet[(rng.next() % 7).min(3) as usize]);
            }
            all.push(s);
        }
        all
    }

    #[test]
    fn short_section_counting_matches_the_walk() {
        for section in sections() {
            let b = section.as_bytes();
            if b.len() >= 64 {
                continue;
            }
            let masks = Masks::new(b);
            let (commas, colons) = masks.commas_colons(0, b.len());
            for before in [0, 1, 60, 64] {
                assert_eq!(
                    count_short_section(commas, colons, b.len(), before),
                    count_section(&section, before),
                    "{section:?} after {before}"
                );
            }
            let count = count_section(&section, 0).unwrap();
            let fields = format!("#{section}");
            let walked: Vec<_> = Tags::in_fields(&fields, count).iter().collect();
            let by_masks = Tags::in_section(&section, commas, colons);
            assert_eq!(by_masks.iter().collect::<Vec<_>>(), walked, "{section:?}");
            assert_eq!(by_masks.len(), count, "{section:?}");
            assert_eq!(by_masks.is_empty(), count == 0, "{section:?}");
        }
    }

    #[test]
    fn lines_with_one_section_match_the_walk() {
        // The section's tags, as a line with it in its own field parses them (by masks when
        // short), against the walk over the whole fields section.
        for section in sections() {
            for prefix in ["a:1|c|", "a.rather.long.name.for.a.metric.line:1|ms|@0.5|"] {
                for suffix in ["", "|T5", "|c:x"] {
                    let line = format!("{prefix}#{section}{suffix}");
                    let Ok(Parsed::Metric(parsed)) = parse(line.as_bytes()) else {
                        assert!(count_section(&section, 0).is_err(), "{line:?}");
                        continue;
                    };
                    let fields = &line[prefix.find('|').unwrap() + 1..];
                    let fields = &fields[fields.find('|').unwrap() + 1..];
                    let count = count_section(&section, 0).unwrap();
                    let walked: Vec<_> = Tags::in_fields(fields, count).iter().collect();
                    assert_eq!(parsed.tags.len(), count, "{line:?}");
                    assert_eq!(parsed.tags.iter().collect::<Vec<_>>(), walked, "{line:?}");
                }
            }
        }
    }

    /// Lines of up to 140 bytes: metric lines built from valid and invalid parts, and random
    /// bytes over the delimiters and a few others.
    fn assorted_lines() -> Vec<Vec<u8>> {
        let mut rng = crate::Xorshift::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: usize| (rng.next() % n as u64) as usize;
        let names = ["a", "", "app.requests.latency_417", "n|x", "\u{e9}t\u{e9}"];
        let values = ["1", "-1.5", "1:2::3", "", ":", "x", "1e3", "user42"];
        let types = ["c", "ms", "g", "s", "h", "d", "", "x", "cc"];
        let fields = [
            "#env:prod",
            "#a:b,c",
            "#",
            "#,:,",
            "@0.5",
            "@2",
            "c:id",
            "c:",
            "T12",
            "Tx",
            "",
            "#region:us-east-1,q:jobs",
            "#k:\u{fc},\u{e9}",
        ];
        let mut lines = Vec::new();
        for _ in 0..20_000 {
            let mut line = String::new();
            line.push_str(names[next(names.len())]);
            line.push(':');
            line.push_str(values[next(values.len())]);
            line.push('|');
            line.push_str(types[next(types.len())]);
            for _ in 0..next(4) {
                line.push('|');
                line.push_str(fields[next(fields.len())]);
            }
            // A long tag to bring the line to any length up to 140.
            let target = next(141);
            if line.len() + 3 < target {
                line.push_str("|#k:");
                while line.len() < target {
                    line.push(['x', ',', ':'][next(3)]);
                }
            }
            lines.push(line.into_bytes());
        }
        let alphabet = b":|,#@cT1.a\xc3\xa9";
        for _ in 0..20_000 {
            let len = next(141);
            lines.push((0..len).map(|_| alphabet[next(alphabet.len())]).collect());
        }
        lines
    }

    #[test]
    fn delimiter_finders_agree() {
        // The masks of short and of wide lines find what the block-by-block search finds.
        let mut by_masks = [0; 2];
        let mut tagged = [0; 2];
        for line in assorted_lines() {
            let Ok(text) = std::str::from_utf8(&line) else {
                continue;
            };
            let by_scan = parse_any(text, &Scan(&line));
            if let Ok(Parsed::Metric(parsed)) = &by_scan {
                tagged[usize::from(line.len() > 64)] += usize::from(!parsed.tags.is_empty());
            }
            if line.len() <= Masks::MAX_LEN {
                assert_eq!(parse_any(text, &Masks::new(&line)), by_scan, "{text:?}");
                by_masks[0] += 1;
            }
            if (64..=WideMasks::MAX_WIDE_LEN).contains(&line.len()) {
                assert_eq!(parse_any(text, &Masks::wide(&line)), by_scan, "{text:?}");
                by_masks[1] += 1;
            }
        }
        assert!(by_masks.iter().all(|&n| n > 5_000), "{by_masks:?}");
        assert!(tagged.iter().all(|&n| n > 1_000), "{tagged:?}");
    }

    #[test]
    fn event_header_lengths() {
        assert_eq!(event_header("_e{1,2}:x|yy"), Ok(("x|yy", (1, 2))));
        assert!(event_header("_e{1,}:x|").is_err());
        assert!(event_header("_e{-1,2}:x|").is_err());
        assert!(event_header("_e{99999999999999999999999,1}:x|").is_err());
    }
}
