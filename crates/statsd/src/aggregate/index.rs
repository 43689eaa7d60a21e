//! A series index: an open-addressing table from a series' 32-bit hash to its position in a
//! vector of entries (the aggregator's, and the flush state's counters and gauges).
//!
//! A slot holds the hash next to the position, so a lookup touches one 8-byte slot (usually in
//! cache: 8 bytes per slot, at most half the slots used) and then the one entry whose hash
//! matches. The home slot of a hash is known before the lookup, which lets the aggregator
//! prefetch the slots of a whole batch of lines first and overlap their cache misses.
//!
//! Linear probing, no deletion: entries only leave at a flush, and the aggregator then rebuilds
//! the index from what remains.

/// An empty slot.
const EMPTY: u64 = 0;
/// Fewest slots held.
const MIN_SLOTS: usize = 1024;

pub(super) struct Index {
    /// `EMPTY`, or `hash << 32 | (position + 1)`.
    slots: Vec<u64>,
    mask: usize,
    len: usize,
}

#[inline]
fn pack(hash: u32, position: u32) -> u64 {
    debug_assert!(position < u32::MAX);
    (u64::from(hash) << 32) | (u64::from(position) + 1)
}

#[inline]
fn hash_of(slot: u64) -> u32 {
    (slot >> 32) as u32
}

#[inline]
fn position_of(slot: u64) -> u32 {
    (slot as u32).wrapping_sub(1)
}

/// Slots for `len` entries: a power of two, at most half used.
fn slots_for(len: usize) -> usize {
    (len.saturating_mul(2)).next_power_of_two().max(MIN_SLOTS)
}

impl Index {
    pub(super) fn new() -> Self {
        Self::with_slots(MIN_SLOTS)
    }

    fn with_slots(n: usize) -> Self {
        debug_assert!(n.is_power_of_two());
        Index {
            slots: vec![EMPTY; n],
            mask: n - 1,
            len: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Bytes held.
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<u64>()
    }

    #[inline]
    fn home(&self, hash: u32) -> usize {
        hash as usize & self.mask
    }

    /// Starts loading the home slot of `hash` into the cache.
    #[inline]
    pub(super) fn prefetch(&self, hash: u32) {
        prefetch(self.slots.as_ptr().wrapping_add(self.home(hash)).cast());
    }

    /// Positions whose hash is `hash`, in probe order.
    #[inline]
    pub(super) fn find(&self, hash: u32) -> Matches<'_> {
        Matches {
            index: self,
            at: self.home(hash),
            hash,
        }
    }

    /// Adds `position` under `hash`; the caller knows it is not there yet.
    pub(super) fn insert(&mut self, hash: u32, position: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            let old = std::mem::take(&mut self.slots);
            *self = Self::with_slots(old.len() * 2);
            for s in old.into_iter().filter(|&s| s != EMPTY) {
                self.place(s);
            }
        }
        self.place(pack(hash, position));
    }

    fn place(&mut self, slot: u64) {
        let mut at = self.home(hash_of(slot));
        while self.slots[at] != EMPTY {
            at = (at + 1) & self.mask;
        }
        self.slots[at] = slot;
        self.len += 1;
    }

    /// Replaces the whole content with `entries` (hash, position), shrinking when far too big.
    pub(super) fn rebuild(&mut self, entries: impl ExactSizeIterator<Item = (u32, u32)>) {
        let want = slots_for(entries.len());
        if self.slots.len() > want * 4 || self.slots.len() < want {
            *self = Self::with_slots(want);
        } else {
            self.slots.fill(EMPTY);
            self.len = 0;
        }
        for (hash, position) in entries {
            self.place(pack(hash, position));
        }
    }
}

pub(super) struct Matches<'a> {
    index: &'a Index,
    at: usize,
    hash: u32,
}

impl Iterator for Matches<'_> {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        loop {
            let slot = self.index.slots[self.at];
            if slot == EMPTY {
                return None;
            }
            self.at = (self.at + 1) & self.index.mask;
            if hash_of(slot) == self.hash {
                return Some(position_of(slot));
            }
        }
    }
}

/// Hints the CPU to load the cache line at `p`. Never faults, whatever `p` is.
#[inline(always)]
pub(super) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it does not access memory architecturally and cannot
    // fault, even for an invalid address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn finds_what_was_inserted_across_growth() {
        let mut index = Index::new();
        // Few distinct hashes: long probe runs and many equal hashes.
        for p in 0..10_000u32 {
            index.insert(p % 97, p);
        }
        assert_eq!(index.len(), 10_000);
        assert!(index.heap_bytes() >= 20_000 * 8);
        for h in 0..97u32 {
            let mut found: Vec<u32> = index.find(h).collect();
            found.sort_unstable();
            let want: Vec<u32> = (0..10_000).filter(|p| p % 97 == h).collect();
            assert_eq!(found, want, "hash {h}");
        }
        assert_eq!(index.find(1000).count(), 0);
    }

    #[test]
    fn rebuild_replaces_and_shrinks() {
        let mut index = Index::new();
        for p in 0..100_000u32 {
            index.insert(p.wrapping_mul(2_654_435_761), p);
        }
        let big = index.heap_bytes();
        index.rebuild([(7u32, 0u32), (7, 1), (9, 2)].into_iter());
        assert_eq!(index.len(), 3);
        assert!(index.heap_bytes() < big / 4);
        assert_eq!(index.find(7).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(index.find(9).collect::<Vec<_>>(), vec![2]);
        assert_eq!(index.find(0).count(), 0);
    }

    #[test]
    fn prefetch_of_any_address_is_harmless() {
        prefetch(std::ptr::null());
        prefetch(usize::MAX as *const u8);
    }

    proptest! {
        #[test]
        fn agrees_with_a_map(hashes in proptest::collection::vec(any::<u32>(), 0..3000)) {
            let mut index = Index::new();
            let mut model: HashMap<u32, Vec<u32>> = HashMap::new();
            for (p, &h) in hashes.iter().enumerate() {
                index.insert(h, p as u32);
                model.entry(h).or_default().push(p as u32);
            }
            for (h, want) in &model {
                let mut got: Vec<u32> = index.find(*h).collect();
                got.sort_unstable();
                prop_assert_eq!(&got, want);
            }
            let kept: Vec<(u32, u32)> = hashes
                .iter()
                .enumerate()
                .filter(|(p, _)| p % 3 == 0)
                .map(|(p, &h)| (h, p as u32))
                .collect();
            index.rebuild(kept.iter().copied());
            prop_assert_eq!(index.len(), kept.len());
            for &(h, p) in &kept {
                prop_assert!(index.find(h).any(|q| q == p));
            }
        }
    }
}
