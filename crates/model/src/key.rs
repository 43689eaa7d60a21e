//! Series keys: a metric name and its tags in one immutable, shared string.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use triomphe::ThinArc;

/// A metric name plus its sorted, de-duplicated tags, stored as one shared string behind a
/// thin (one-word) pointer: every datapoint and aggregator entry holds one, so its size counts.
///
/// Layout: `name` followed by `"\n" key ":" value` per tag, tags sorted by (key, value). A newline
/// can never occur inside a StatsD line, a tag key never holds `:`, so the layout is unambiguous.
/// A bare tag is stored with an empty value.
#[derive(Clone)]
pub struct SeriesKey(ThinArc<(), u8>);

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        self.encoded() == other.encoded()
    }
}

impl Eq for SeriesKey {}

impl PartialOrd for SeriesKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SeriesKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.encoded().cmp(other.encoded())
    }
}

impl SeriesKey {
    /// A key with no tags.
    pub fn plain(name: &str) -> Self {
        Self::from_encoded(name)
    }

    /// Builds a key from a name and tags in any order, possibly with duplicates.
    pub fn new<'a, I>(name: &str, tags: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut tags: Vec<(&str, &str)> = tags.into_iter().collect();
        tags.sort_unstable();
        tags.dedup();
        Self::from_sorted(name, &tags)
    }

    /// Builds a key from tags that are already sorted and de-duplicated.
    pub fn from_sorted(name: &str, tags: &[(&str, &str)]) -> Self {
        let len = name.len()
            + tags
                .iter()
                .map(|(k, v)| k.len() + v.len() + 2)
                .sum::<usize>();
        let mut s = String::with_capacity(len);
        s.push_str(name);
        for (k, v) in tags {
            s.push('\n');
            s.push_str(k);
            s.push(':');
            s.push_str(v);
        }
        Self::from_encoded(&s)
    }

    /// Wraps an already encoded key (see the type's layout). Used by the aggregator, which
    /// encodes keys itself without an intermediate vector.
    pub fn from_encoded(encoded: &str) -> Self {
        SeriesKey(ThinArc::from_header_and_slice((), encoded.as_bytes()))
    }

    /// The encoded form: name, then `\nkey:value` per tag.
    pub fn encoded(&self) -> &str {
        // SAFETY: keys are only ever built from `&str` (see the constructors), so the bytes are
        // valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0.slice) }
    }

    pub fn name(&self) -> &str {
        let s = self.encoded();
        match s.find('\n') {
            Some(i) => &s[..i],
            None => s,
        }
    }

    pub fn has_tags(&self) -> bool {
        self.encoded().contains('\n')
    }

    /// The tags in sorted order.
    pub fn tags(&self) -> TagIter<'_> {
        let s = self.encoded();
        let rest = match s.find('\n') {
            Some(i) => &s[i + 1..],
            None => "",
        };
        TagIter {
            rest,
            done: rest.is_empty(),
        }
    }

    /// The address of the key's heap allocation, read without dereferencing it: for
    /// prefetching.
    #[inline]
    pub fn heap_addr(&self) -> *const u8 {
        // SAFETY: `ThinArc` is `repr(transparent)` over the non-null pointer to its allocation,
        // so a `SeriesKey` can be read as that pointer.
        unsafe { *(&self.0 as *const ThinArc<(), u8>).cast::<*const u8>() }
    }

    /// Bytes of heap this key holds (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.encoded().len() + 2 * std::mem::size_of::<usize>()
    }
}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.encoded().hash(state)
    }
}

impl fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        let mut first = true;
        for (k, v) in self.tags() {
            f.write_str(if first { "|#" } else { "," })?;
            first = false;
            write!(f, "{k}:{v}")?;
        }
        Ok(())
    }
}

/// Iterator over the `(key, value)` tags of a [`SeriesKey`].
pub struct TagIter<'a> {
    rest: &'a str,
    done: bool,
}

impl<'a> Iterator for TagIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (tag, rest) = match self.rest.find('\n') {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => {
                self.done = true;
                (self.rest, "")
            }
        };
        self.rest = rest;
        Some(match tag.find(':') {
            Some(i) => (&tag[..i], &tag[i + 1..]),
            None => (tag, ""),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_and_dedups_tags() {
        let a = SeriesKey::new("m", [("b", "2"), ("a", "1"), ("b", "2")]);
        let b = SeriesKey::new("m", [("a", "1"), ("b", "2")]);
        assert_eq!(a, b);
        assert_eq!(a.name(), "m");
        assert_eq!(a.tags().collect::<Vec<_>>(), vec![("a", "1"), ("b", "2")]);
    }

    #[test]
    fn values_may_hold_colons_and_be_empty() {
        let k = SeriesKey::new("m", [("url", "http://x:1"), ("bare", "")]);
        assert_eq!(
            k.tags().collect::<Vec<_>>(),
            vec![("bare", ""), ("url", "http://x:1")]
        );
        let p = SeriesKey::plain("m");
        assert!(!p.has_tags());
        assert_eq!(p.tags().count(), 0);
    }

    #[test]
    fn a_key_is_one_word() {
        assert_eq!(
            std::mem::size_of::<SeriesKey>(),
            std::mem::size_of::<usize>()
        );
        assert_eq!(
            std::mem::size_of::<Option<SeriesKey>>(),
            std::mem::size_of::<usize>()
        );
    }
}
