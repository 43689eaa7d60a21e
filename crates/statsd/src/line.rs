//! What a parsed StatsD line is: borrowed slices of the input plus the few numbers parsed
//! from it. Nothing here allocates.

use crate::parse::{find, Delim, Delims, Masks, Scan};

/// The StatsD metric types of CONTRACT §2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `c`
    Counter,
    /// `g`
    Gauge,
    /// `ms`
    Timer,
    /// `h`
    Histogram,
    /// `d`
    Distribution,
    /// `s`
    Set,
}

impl MetricType {
    /// Types whose samples are summarised with count/sum/min/max/.../percentiles.
    pub fn is_distribution(self) -> bool {
        matches!(
            self,
            MetricType::Timer | MetricType::Histogram | MetricType::Distribution
        )
    }
}

/// Why a line was dropped. Each reason is a separate self-metric label (`as_str`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reject {
    /// The line is not valid UTF-8.
    NotUtf8,
    /// No `:` value section, or no value in it.
    NoValue,
    /// A value that is not a finite number (NaN, infinities, garbage), or a `T` field that is
    /// not a non-negative integer.
    BadValue,
    /// No `|type`, or a type other than c, g, ms, h, d, s.
    UnknownType,
    /// A malformed field after the type (e.g. `|c:` with no id, an empty `|#` key list is fine).
    BadField,
    /// The metric name is empty.
    EmptyName,
    /// The metric name is over 1024 bytes.
    NameTooLong,
    /// More than 64 tags.
    TooManyTags,
    /// A tag over 1024 bytes.
    TagTooLong,
    /// A malformed `_e{...}` event.
    BadEvent,
    /// A malformed `_sc|...` service check.
    BadServiceCheck,
}

impl Reject {
    pub const ALL: [Reject; 11] = [
        Reject::NotUtf8,
        Reject::NoValue,
        Reject::BadValue,
        Reject::UnknownType,
        Reject::BadField,
        Reject::EmptyName,
        Reject::NameTooLong,
        Reject::TooManyTags,
        Reject::TagTooLong,
        Reject::BadEvent,
        Reject::BadServiceCheck,
    ];

    /// The self-metric label of this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::NotUtf8 => "not_utf8",
            Reject::NoValue => "no_value",
            Reject::BadValue => "bad_value",
            Reject::UnknownType => "unknown_type",
            Reject::BadField => "bad_field",
            Reject::EmptyName => "empty_name",
            Reject::NameTooLong => "name_too_long",
            Reject::TooManyTags => "too_many_tags",
            Reject::TagTooLong => "tag_too_long",
            Reject::BadEvent => "bad_event",
            Reject::BadServiceCheck => "bad_service_check",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Limits of CONTRACT §2.
pub const MAX_NAME_BYTES: usize = 1024;
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_BYTES: usize = 1024;

/// One parsed line.
#[derive(Clone, Debug, PartialEq)]
pub enum Parsed<'a> {
    Metric(Line<'a>),
    Event(Event<'a>),
    ServiceCheck(ServiceCheck<'a>),
}

/// A metric line: `name:value[:value...]|type[|field...]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Line<'a> {
    pub name: &'a str,
    pub kind: MetricType,
    /// The validated values: one sample each.
    pub values: Values<'a>,
    /// The sample rate, `0 < r <= 1`; 1 when absent or invalid.
    pub sample_rate: f64,
    /// True when a `|@` field was present but not a number in `(0, 1]` (counted, treated as 1).
    pub bad_sample_rate: bool,
    pub tags: Tags<'a>,
    /// From a `|c:<container-id>` field.
    pub container_id: Option<&'a str>,
    /// From a `|T<unix-seconds>` field.
    pub timestamp: Option<u64>,
}

/// A DogStatsD event (`_e{title_len,text_len}:title|text|...`): accepted and counted.
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    pub title: &'a str,
    pub text: &'a str,
    pub tags: Tags<'a>,
}

/// A DogStatsD service check (`_sc|name|status|...`): becomes a gauge `name` = status.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceCheck<'a> {
    pub name: &'a str,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub status: u8,
    pub tags: Tags<'a>,
    pub container_id: Option<&'a str>,
    pub timestamp: Option<u64>,
}

/// The value section of a line, already validated by the parser: iterating cannot fail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Values<'a> {
    /// The raw section between the first `:` and the first `|` (e.g. `1:2::3`).
    pub(crate) raw: &'a str,
    pub(crate) kind: MetricType,
    /// The value of a section holding one number (the common case), as the parser already
    /// parsed it: iterating then needs no second parse.
    pub(crate) single: Option<f64>,
}

/// One sample of a line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// A finite number. `signed` is true when the text started with `+` or `-`, which makes a
    /// gauge sample a delta (with `gauge_sign = "delta"`).
    Number { value: f64, signed: bool },
    /// A set member, as written.
    Member(&'a str),
}

impl<'a> Values<'a> {
    /// The raw value text.
    #[inline]
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    #[inline]
    pub fn iter(&self) -> ValuesIter<'a> {
        ValuesIter {
            rest: Some(self.raw),
            kind: self.kind,
            single: self.single,
        }
    }
}

impl<'a> IntoIterator for Values<'a> {
    type Item = Value<'a>;
    type IntoIter = ValuesIter<'a>;
    #[inline]
    fn into_iter(self) -> ValuesIter<'a> {
        self.iter()
    }
}

/// Iterator over the samples of a line.
pub struct ValuesIter<'a> {
    rest: Option<&'a str>,
    kind: MetricType,
    single: Option<f64>,
}

impl<'a> Iterator for ValuesIter<'a> {
    type Item = Value<'a>;

    #[inline]
    fn next(&mut self) -> Option<Value<'a>> {
        if let Some(value) = self.single.take() {
            let signed = matches!(self.rest?.as_bytes().first(), Some(b'+' | b'-'));
            self.rest = None;
            return Some(Value::Number { value, signed });
        }
        loop {
            let rest = self.rest?;
            if self.kind == MetricType::Set {
                // Set members are never packed: the whole section is one member.
                self.rest = None;
                return Some(Value::Member(rest));
            }
            let (slot, tail) = match find(rest.as_bytes(), b':') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            self.rest = tail;
            if slot.is_empty() {
                continue;
            }
            // The parser validated every slot; a failure here would be a parser bug, and is
            // skipped rather than trusted.
            if let Some(value) = crate::parse::parse_number(slot.as_bytes()) {
                let signed = matches!(slot.as_bytes()[0], b'+' | b'-');
                return Some(Value::Number { value, signed });
            }
        }
    }
}

/// The tags of a line: every `|#` field, validated by the parser (count and sizes within the
/// limits). Iterating yields `(key, value)` with empty entries skipped, a bare tag's value
/// `""`, and each tag split at its first `:` only.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Tags<'a> {
    /// The fields section after the type (e.g. `@0.5|#a:b,c|#d`), or `""`; or, when `ends` is
    /// not 0, the text of the line's one short `#` section (`a:b,c`).
    pub(crate) fields: &'a str,
    /// Number of non-empty tags (counted by the parser); 0 when `ends` is not 0.
    pub(crate) count: usize,
    /// For one `#` section of under 64 bytes, as the parser found it: bit `i` set when byte
    /// `i` of `fields` ends an entry (a `,`, and the end of the section); else 0.
    pub(crate) ends: u64,
    /// With `ends`: bit `i` set when byte `i` of `fields` is `:`.
    pub(crate) colons: u64,
}

/// The entries of a short section that are tags, given where its entries end (`ends`) and
/// its `:` (`colons`): bit `i` of the first mask set when a tag starts at byte `i`, of the
/// second when one ends there. Entries start at 0 and after each end; those that are empty
/// (starting where they end) or a `:` alone (starting with `:`, ending one byte on) are not
/// tags.
#[inline(always)]
pub(crate) fn section_tags(ends: u64, colons: u64) -> (u64, u64) {
    let starts = ends << 1 | 1;
    let empty = starts & ends;
    let colon_alone = starts & colons & ends >> 1;
    (
        starts & !(empty | colon_alone),
        ends & !(empty | colon_alone << 1),
    )
}

impl<'a> Tags<'a> {
    /// The tags of the `#` fields within `fields`.
    #[inline(always)]
    pub(crate) fn in_fields(fields: &'a str, count: usize) -> Tags<'a> {
        Tags {
            fields,
            count,
            ends: 0,
            colons: 0,
        }
    }

    /// The tags of one `#` section `section` (without its `#`) of under 64 bytes, with the
    /// `,` and `:` masks of its bytes. They are counted when asked for.
    #[inline(always)]
    pub(crate) fn in_section(section: &'a str, commas: u64, colons: u64) -> Tags<'a> {
        debug_assert!(section.len() < 64);
        Tags {
            fields: section,
            count: 0,
            ends: commas | 1 << section.len(),
            colons,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        if self.ends != 0 {
            section_tags(self.ends, self.colons).1.count_ones() as usize
        } else {
            self.count
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        if self.ends != 0 {
            section_tags(self.ends, self.colons).1 == 0
        } else {
            self.count == 0
        }
    }

    #[inline]
    pub fn iter(&self) -> TagsIter<'a> {
        if self.ends != 0 {
            let (starts, ends) = section_tags(self.ends, self.colons);
            return TagsIter(Walk::Section(SectionIter {
                text: self.fields,
                starts,
                ends,
                colons: self.colons,
            }));
        }
        // Without tags there is nothing to walk: skip classifying the other fields.
        let fields = if self.count == 0 { "" } else { self.fields };
        let bytes = fields.as_bytes();
        let masks = (!bytes.is_empty() && bytes.len() <= Masks::MAX_LEN).then(|| Masks::new(bytes));
        TagsIter(Walk::Fields(FieldsIter {
            fields,
            masks,
            next_field: 0,
            pos: 0,
            section_end: 0,
        }))
    }
}

impl<'a> IntoIterator for Tags<'a> {
    type Item = (&'a str, &'a str);
    type IntoIter = TagsIter<'a>;
    #[inline]
    fn into_iter(self) -> TagsIter<'a> {
        self.iter()
    }
}

/// Iterator over `(key, value)` tags.
pub struct TagsIter<'a>(Walk<'a>);

enum Walk<'a> {
    Section(SectionIter<'a>),
    Fields(FieldsIter<'a>),
}

impl<'a> Iterator for TagsIter<'a> {
    type Item = (&'a str, &'a str);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            Walk::Section(iter) => iter.next(),
            Walk::Fields(iter) => iter.next(),
        }
    }
}

/// Walks one short `#` section by the masks the parser left: a few bit operations per tag,
/// and no branch on what the tag holds.
struct SectionIter<'a> {
    text: &'a str,
    /// Where the tags not yet walked start and end ([`section_tags`]).
    starts: u64,
    ends: u64,
    colons: u64,
}

impl<'a> SectionIter<'a> {
    #[inline(always)]
    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        if self.ends == 0 {
            return None;
        }
        let start = self.starts.trailing_zeros() as usize;
        let end = self.ends.trailing_zeros() as usize;
        self.starts &= self.starts - 1;
        self.ends &= self.ends - 1;
        // The key ends at the first `:` of the tag, else at its end, where the value is "".
        // `start` is below 64 (a tag ends at or after it).
        let colon = ((self.colons & u64::MAX << start).trailing_zeros() as usize).min(end);
        let value_start = (colon + 1).min(end);
        debug_assert!(start <= colon && colon <= value_start && value_start <= end);
        debug_assert!(end <= self.text.len());
        // SAFETY: `start <= colon <= value_start <= end <= text.len()` as computed above, from
        // masks of `text`'s bytes; each bound is 0, the end of `text`, or at or after an ASCII
        // `,` or `:`, so on a character boundary. Checked slicing would branch on whether a
        // bound is 0 or the end, which varies from tag to tag.
        unsafe {
            Some((
                self.text.get_unchecked(start..colon),
                self.text.get_unchecked(value_start..end),
            ))
        }
    }
}

/// Walks indexes into a whole fields section, classified up front when short, so that finding
/// each delimiter is cheap.
struct FieldsIter<'a> {
    fields: &'a str,
    masks: Option<Masks>,
    /// Start of the first field not yet looked at.
    next_field: usize,
    /// Start of the next tag of the `#` section being walked; at or past `section_end` when
    /// that section is done.
    pos: usize,
    section_end: usize,
}

impl<'a> FieldsIter<'a> {
    #[inline(always)]
    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        // Checked first as it ends every walk.
        if self.pos >= self.section_end && self.next_field >= self.fields.len() {
            return None;
        }
        self.walk()
    }

    #[inline(always)]
    fn find_delim(&self, from: usize, end: usize, delim: Delim) -> usize {
        match &self.masks {
            Some(masks) => masks.find(from, end, delim),
            None => Scan(self.fields.as_bytes()).find(from, end, delim),
        }
    }

    #[inline(always)]
    fn walk(&mut self) -> Option<(&'a str, &'a str)> {
        let bytes = self.fields.as_bytes();
        loop {
            while self.pos >= self.section_end {
                // Advance to the next `#` field.
                let start = self.next_field;
                if start >= bytes.len() {
                    return None;
                }
                let end = self.find_delim(start, bytes.len(), Delim::Pipe);
                self.next_field = end + 1;
                if bytes[start] == b'#' {
                    self.pos = start + 1;
                    self.section_end = end;
                }
            }
            let start = self.pos;
            let end = self.find_delim(start, self.section_end, Delim::Comma);
            self.pos = end + 1;
            if end == start {
                continue;
            }
            let (key, value) = match &self.masks {
                Some(masks) => {
                    let colon = masks.find(start, end, Delim::Colon);
                    if colon == end {
                        (&self.fields[start..end], "")
                    } else {
                        (&self.fields[start..colon], &self.fields[colon + 1..end])
                    }
                }
                None => split_tag(&self.fields[start..end]),
            };
            if key.is_empty() && value.is_empty() {
                continue;
            }
            return Some((key, value));
        }
    }
}

/// Splits one tag at its first `:`; a bare tag has the value `""`.
#[inline]
pub(crate) fn split_tag(tag: &str) -> (&str, &str) {
    match find(tag.as_bytes(), b':') {
        Some(i) => (&tag[..i], &tag[i + 1..]),
        None => (tag, ""),
    }
}
