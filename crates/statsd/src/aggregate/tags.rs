//! Series keys: a line's name and its tags sorted and de-duplicated (the [`SeriesKey`] layout),
//! with the sorted form of recently seen tag sections kept for reuse.
//!
//! Senders repeat a small number of tag sets (`env:prod,az:b` on every line of a service), so
//! sorting each line's tags again is wasted work: a small direct-mapped cache, indexed by a
//! hash of the section as written, holds the encoded tags for the last sections seen. A hit
//! copies them; a miss sorts as before and replaces the slot. The cache is exact (a hit
//! requires the same text), and bounded: a fixed number of slots, each holding at most
//! [`MAX_CACHED`] bytes of section text.
//!
//! [`SeriesKey`]: corral_model::SeriesKey

use std::hash::BuildHasher;

use smallvec::SmallVec;

use crate::line::Tags;

/// Slots of the cache (a power of two).
const SLOTS: usize = 128;
/// Longer tag sections are encoded every time (and never held).
const MAX_CACHED: usize = 256;

/// Appends `\nkey:value` for each of the sorted, de-duplicated tags.
fn encode_tags(out: &mut String, tags: Tags<'_>) {
    if tags.is_empty() {
        return;
    }
    let mut sorted: SmallVec<[(&str, &str); 16]> = tags.iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    for (k, v) in sorted {
        out.push('\n');
        out.push_str(k);
        out.push(':');
        out.push_str(v);
    }
}

/// The text `tags` were parsed from, and whether it is one `#` section (rather than a whole
/// fields part): together they decide the tags.
#[inline]
fn source<'a>(tags: &Tags<'a>) -> (&'a str, bool) {
    (tags.fields, tags.ends != 0)
}

#[derive(Default)]
struct Slot {
    /// The section as written (empty: the slot is unused; a line with tags has a non-empty
    /// section).
    raw: String,
    /// Whether `raw` is one `#` section rather than a whole fields part (the two forms a
    /// [`Tags`] can hold).
    section: bool,
    /// What [`encode_tags`] appends for it.
    encoded: String,
}

/// The cache of encoded tag sections.
pub(super) struct TagCache {
    slots: Vec<Slot>,
    hasher: foldhash::fast::RandomState,
}

impl TagCache {
    pub(super) fn new() -> Self {
        Self::with_slots(SLOTS)
    }

    fn with_slots(n: usize) -> Self {
        debug_assert!(n.is_power_of_two());
        TagCache {
            slots: (0..n).map(|_| Slot::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Appends `name` and the sorted, de-duplicated tags in the [`corral_model::SeriesKey`]
    /// layout to `out`, reusing the encoded tags of a section seen before.
    #[inline]
    pub(super) fn encode_key(&mut self, out: &mut String, name: &str, tags: Tags<'_>) {
        out.push_str(name);
        if tags.is_empty() {
            return;
        }
        let (raw, section) = source(&tags);
        if raw.len() > MAX_CACHED {
            encode_tags(out, tags);
            return;
        }
        let at = self.hasher.hash_one(raw.as_bytes()) as usize & (self.slots.len() - 1);
        let slot = &mut self.slots[at];
        if slot.section == section && slot.raw == raw {
            out.push_str(&slot.encoded);
            return;
        }
        let start = out.len();
        encode_tags(out, tags);
        // The slot's strings keep their capacity: replacing an entry allocates nothing once
        // they have grown to the sections seen.
        slot.raw.clear();
        slot.raw.push_str(raw);
        slot.section = section;
        slot.encoded.clear();
        slot.encoded.push_str(&out[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse, Parsed};
    use proptest::prelude::*;

    /// The key without the cache.
    fn encode_key(out: &mut String, name: &str, tags: Tags<'_>) {
        out.push_str(name);
        encode_tags(out, tags);
    }

    fn key_of(cache: Option<&mut TagCache>, line: &str) -> String {
        let Ok(Parsed::Metric(m)) = parse(line.as_bytes()) else {
            panic!("{line}");
        };
        let mut out = String::from("prefix|");
        match cache {
            Some(c) => c.encode_key(&mut out, m.name, m.tags),
            None => encode_key(&mut out, m.name, m.tags),
        }
        out
    }

    #[test]
    fn a_hit_gives_the_sorted_tags_of_its_own_section() {
        let mut cache = TagCache::with_slots(1);
        let first = key_of(Some(&mut cache), "a:1|c|#z:1,a:2,a:2");
        assert_eq!(first, "prefix|a\na:2\nz:1");
        // Same section, other name: from the cache.
        assert_eq!(
            key_of(Some(&mut cache), "b:1|c|#z:1,a:2,a:2"),
            "prefix|b\na:2\nz:1"
        );
        // Another section in the same (only) slot replaces it.
        assert_eq!(key_of(Some(&mut cache), "b:1|c|#y"), "prefix|b\ny:");
        assert_eq!(
            key_of(Some(&mut cache), "b:1|c|#z:1,a:2"),
            "prefix|b\na:2\nz:1"
        );
        // Tags spread over several sections, and with other fields between them.
        assert_eq!(
            key_of(Some(&mut cache), "b:1|c|#z:1|@0.5|#a:2"),
            "prefix|b\na:2\nz:1"
        );
        assert_eq!(key_of(Some(&mut cache), "b:1|c"), "prefix|b");
    }

    proptest! {
        #[test]
        fn cached_keys_equal_keys_sorted_each_time(
            lines in proptest::collection::vec(
                (
                    "[a-c]{1,3}",
                    proptest::collection::vec("[a-c]{0,2}(:[a-c]{0,2})?", 0..5),
                    0..3u8,
                    any::<bool>(),
                ),
                1..60,
            ),
            slots_log2 in 0..4u32,
        ) {
            let mut cache = TagCache::with_slots(1 << slots_log2);
            for (name, tags, form, rate) in lines {
                let mut line = format!("{name}:1|c");
                let joined = tags.join(",");
                let rate = if rate { "|@0.5" } else { "" };
                match form {
                    0 => line.push_str(&format!("|#{joined}{rate}")),
                    1 => line.push_str(&format!("{rate}|#{joined}|#{joined}")),
                    _ => line.push_str(&format!("|#{}{rate}", joined.repeat(30))),
                }
                let Ok(Parsed::Metric(_)) = parse(line.as_bytes()) else { continue };
                prop_assert_eq!(key_of(Some(&mut cache), &line), key_of(None, &line), "{}", line);
            }
        }
    }
}
