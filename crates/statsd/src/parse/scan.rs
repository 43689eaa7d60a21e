//! Finding delimiters in short byte spans.
//!
//! Lines are a few tens of bytes and the spans between their delimiters a few bytes, so the
//! cost is in the chain of dependent searches, not in the bytes searched. memchr pays an
//! indirect call per search; here every search compares whole 16-byte blocks inline (SSE2 on
//! x86_64), and a line of at most 128 bytes is classified once into bit masks ([`Masks`], 64
//! bits wide up to 64 bytes and 128 beyond), after which each search is a couple of bit
//! operations.

/// The delimiters the metric grammar looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delim {
    Colon,
    Pipe,
    Comma,
}

impl Delim {
    #[inline(always)]
    fn byte(self) -> u8 {
        match self {
            Delim::Colon => b':',
            Delim::Pipe => b'|',
            Delim::Comma => b',',
        }
    }
}

/// Searches one line for delimiters, by index into that line.
pub(crate) trait Delims {
    /// The first index in `from..end` holding `delim`, else `end`. `from <= end <= len`.
    fn find(&self, from: usize, end: usize, delim: Delim) -> usize;

    /// The `,` and `:` masks of `from..end`, fewer than 64 bytes: bit `i` for byte `from + i`.
    fn commas_colons(&self, from: usize, end: usize) -> (u64, u64);

    /// The first and the second index holding `delim`, each `len` (the line's length) when
    /// there is no such.
    #[inline(always)]
    fn first_two(&self, len: usize, delim: Delim) -> (usize, usize) {
        let first = self.find(0, len, delim);
        let second = if first < len {
            self.find(first + 1, len, delim)
        } else {
            len
        };
        (first, second)
    }

    /// The first three indexes holding `delim`, as [`Delims::first_two`].
    #[inline(always)]
    fn first_three(&self, len: usize, delim: Delim) -> (usize, usize, usize) {
        let (first, second) = self.first_two(len, delim);
        let third = if second < len {
            self.find(second + 1, len, delim)
        } else {
            len
        };
        (first, second, third)
    }
}

/// Searches a line of any length block by block.
pub(crate) struct Scan<'a>(pub(crate) &'a [u8]);

impl Delims for Scan<'_> {
    #[inline(always)]
    fn find(&self, from: usize, end: usize, delim: Delim) -> usize {
        find_in(self.0, from, end, delim.byte())
    }

    #[inline(always)]
    fn commas_colons(&self, from: usize, end: usize) -> (u64, u64) {
        let masks = Masks::new(&self.0[from..end]);
        (masks.comma, masks.colon)
    }
}

/// One bit per byte of a classified span: `u64` for spans of up to 64 bytes, `u128` for
/// spans of up to 128.
pub(crate) trait Bits: Copy {
    /// The bits at and above `from`; none when `from` is the width or more.
    fn at_or_after(from: usize) -> Self;
    fn and(self, other: Self) -> Self;
    fn trailing_zeros(self) -> usize;
    /// Bits `from..end` moved down to bit 0; `end - from < 64`, `from` at most the width.
    fn window(self, from: usize, end: usize) -> u64;
    /// Without its lowest set bit.
    fn clear_lowest(self) -> Self;
}

impl Bits for u64 {
    #[inline(always)]
    fn clear_lowest(self) -> u64 {
        self & self.wrapping_sub(1)
    }
    #[inline(always)]
    fn at_or_after(from: usize) -> u64 {
        u64::MAX.checked_shl(from as u32).unwrap_or(0)
    }
    #[inline(always)]
    fn and(self, other: u64) -> u64 {
        self & other
    }
    #[inline(always)]
    fn trailing_zeros(self) -> usize {
        u64::trailing_zeros(self) as usize
    }
    #[inline(always)]
    fn window(self, from: usize, end: usize) -> u64 {
        self.checked_shr(from as u32).unwrap_or(0) & !(u64::MAX << (end - from))
    }
}

impl Bits for u128 {
    #[inline(always)]
    fn clear_lowest(self) -> u128 {
        self & self.wrapping_sub(1)
    }
    #[inline(always)]
    fn at_or_after(from: usize) -> u128 {
        u128::MAX.checked_shl(from as u32).unwrap_or(0)
    }
    #[inline(always)]
    fn and(self, other: u128) -> u128 {
        self & other
    }
    #[inline(always)]
    fn trailing_zeros(self) -> usize {
        u128::trailing_zeros(self) as usize
    }
    #[inline(always)]
    fn window(self, from: usize, end: usize) -> u64 {
        self.checked_shr(from as u32).unwrap_or(0) as u64 & !(u64::MAX << (end - from))
    }
}

/// Where the delimiters of a short span are (bit `i` for byte `i`), and whether all of it is
/// ASCII: [`Masks::new`] for spans of at most 64 bytes, [`Masks::wide`] for at most 128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Masks<W = u64> {
    colon: W,
    pipe: W,
    comma: W,
    /// Not 0 when some byte is not ASCII.
    high: u64,
}

/// [`Masks`] of a span of up to 128 bytes.
pub(crate) type WideMasks = Masks<u128>;

impl<W> Masks<W> {
    /// True when every byte is ASCII.
    #[inline(always)]
    pub(crate) fn is_ascii(&self) -> bool {
        self.high == 0
    }
}

impl Masks<u64> {
    pub(crate) const MAX_LEN: usize = 64;

    /// Classifies `span`, which must be at most [`Masks::MAX_LEN`] bytes.
    ///
    /// Two spans of 16 or 32 bytes, one from each end, cover the line; the bytes they share are
    /// classified alike, so OR-ing their masks is exact. The shifts are then one per mask
    /// whatever the length, and the branches two.
    #[inline(always)]
    pub(crate) fn new(span: &[u8]) -> Masks {
        let len = span.len();
        assert!(len <= Self::MAX_LEN);
        let (head, tail, at) = if len < 16 {
            (classify16(&padded16(span)), [0; 4], 0)
        } else if len < 32 {
            (
                classify16(chunk(span, 0)),
                classify16(chunk(span, len - 16)),
                len - 16,
            )
        } else {
            (classify32(span, 0), classify32(span, len - 32), len - 32)
        };
        let join = |i: usize| u64::from(head[i]) | u64::from(tail[i]) << at;
        Masks {
            colon: join(0),
            pipe: join(1),
            comma: join(2),
            high: u64::from(head[3] | tail[3]),
        }
    }

    /// Bit `i` set when byte `i` of `span` (at most 64 bytes) is `needle`.
    #[inline(always)]
    pub(crate) fn eq64(span: &[u8], needle: u8) -> u64 {
        let len = span.len();
        assert!(len <= Self::MAX_LEN);
        if len < 16 {
            return u64::from(eq16(&padded16(span), needle));
        }
        let mut mask = 0;
        let mut at = 0;
        while at + 16 <= len {
            mask |= u64::from(eq16(chunk(span, at), needle)) << at;
            at += 16;
        }
        if at < len {
            let skip = 16 - (len - at);
            mask |= u64::from(eq16(chunk(span, len - 16), needle) >> skip) << at;
        }
        mask
    }
}

impl Masks<u128> {
    pub(crate) const MAX_WIDE_LEN: usize = 128;

    /// Classifies `span`, of 64 to [`WideMasks::MAX_WIDE_LEN`] bytes, as [`Masks::new`] does a
    /// shorter one: two spans of 64 bytes, one from each end.
    #[inline(always)]
    pub(crate) fn wide(span: &[u8]) -> WideMasks {
        let len = span.len();
        assert!((64..=Self::MAX_WIDE_LEN).contains(&len));
        let head = classify64(span, 0);
        let tail = classify64(span, len - 64);
        let at = len - 64;
        let join = |i: usize| u128::from(head[i]) | u128::from(tail[i]) << at;
        Masks {
            colon: join(0),
            pipe: join(1),
            comma: join(2),
            high: head[3] | tail[3],
        }
    }
}

impl<W: Copy> Masks<W> {
    /// The mask of `delim`.
    #[inline(always)]
    fn of(&self, delim: Delim) -> W {
        match delim {
            Delim::Colon => self.colon,
            Delim::Pipe => self.pipe,
            Delim::Comma => self.comma,
        }
    }
}

impl<W: Bits> Delims for Masks<W> {
    #[inline(always)]
    fn find(&self, from: usize, end: usize, delim: Delim) -> usize {
        let mask = self.of(delim);
        // `from` is at most the length, which `at_or_after` maps to an empty mask at the width.
        (mask.and(W::at_or_after(from)).trailing_zeros()).min(end)
    }

    #[inline(always)]
    fn commas_colons(&self, from: usize, end: usize) -> (u64, u64) {
        debug_assert!(from <= end && end - from < 64);
        (self.comma.window(from, end), self.colon.window(from, end))
    }

    /// Both from the mask at once, rather than the second after the first.
    #[inline(always)]
    fn first_two(&self, len: usize, delim: Delim) -> (usize, usize) {
        let mask = self.of(delim);
        (
            mask.trailing_zeros().min(len),
            mask.clear_lowest().trailing_zeros().min(len),
        )
    }

    #[inline(always)]
    fn first_three(&self, len: usize, delim: Delim) -> (usize, usize, usize) {
        let mask = self.of(delim);
        let after_first = mask.clear_lowest();
        (
            mask.trailing_zeros().min(len),
            after_first.trailing_zeros().min(len),
            after_first.clear_lowest().trailing_zeros().min(len),
        )
    }
}

/// Bit `i` of each mask set when byte `i` of `chunk` is `:`, `|`, `,`, or not ASCII.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn classify16(chunk: &[u8; 16]) -> [u32; 4] {
    use std::arch::x86_64::*;
    // SAFETY: the load reads exactly the 16 bytes of `chunk` (unaligned loads are allowed);
    // the other intrinsics are SSE2, which every x86_64 CPU has.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let eq = |c: u8| _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8))) as u32;
        [eq(b':'), eq(b'|'), eq(b','), _mm_movemask_epi8(v) as u32]
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn classify16(chunk: &[u8; 16]) -> [u32; 4] {
    let mut masks = [0u32; 4];
    for (i, &c) in chunk.iter().enumerate() {
        masks[0] |= u32::from(c == b':') << i;
        masks[1] |= u32::from(c == b'|') << i;
        masks[2] |= u32::from(c == b',') << i;
        masks[3] |= u32::from(c >= 0x80) << i;
    }
    masks
}

/// Bit `i` set when byte `i` of `chunk` is `needle`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn eq16(chunk: &[u8; 16], needle: u8) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: as in `classify16`.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(needle as i8))) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn eq16(chunk: &[u8; 16], needle: u8) -> u32 {
    chunk
        .iter()
        .enumerate()
        .fold(0, |m, (i, &c)| m | (u32::from(c == needle) << i))
}

/// [`classify16`] of the 32 bytes of `span` from `at`.
#[inline(always)]
fn classify32(span: &[u8], at: usize) -> [u32; 4] {
    let lo = classify16(chunk(span, at));
    let hi = classify16(chunk(span, at + 16));
    [0, 1, 2, 3].map(|i| lo[i] | hi[i] << 16)
}

/// [`classify16`] of the 64 bytes of `span` from `at`.
#[inline(always)]
fn classify64(span: &[u8], at: usize) -> [u64; 4] {
    let lo = classify32(span, at);
    let hi = classify32(span, at + 32);
    [0, 1, 2, 3].map(|i| u64::from(lo[i]) | u64::from(hi[i]) << 32)
}

/// Bit `i` set when byte `i` of `chunk` is not ASCII.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn high16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: as in `classify16`.
    unsafe { _mm_movemask_epi8(_mm_loadu_si128(chunk.as_ptr().cast())) as u32 }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn high16(chunk: &[u8; 16]) -> u32 {
    chunk
        .iter()
        .enumerate()
        .fold(0, |m, (i, &c)| m | (u32::from(c >= 0x80) << i))
}

/// `span` (at most 16 bytes) followed by zeros, which match no delimiter and are ASCII. Built
/// from a few overlapping loads picked by length class rather than a byte loop or a memcpy
/// call, whose exit branches would depend on the exact length.
#[inline(always)]
fn padded16(span: &[u8]) -> [u8; 16] {
    let len = span.len();
    let u32_at = |at: usize| u64::from(u32::from_le_bytes(span[at..at + 4].try_into().unwrap()));
    let u64_at = |at: usize| u64::from_le_bytes(span[at..at + 8].try_into().unwrap());
    let (lo, hi) = if len >= 8 {
        // Bytes 8..len come from the last 8, shifted past those already in `lo`.
        (
            u64_at(0),
            u64_at(len - 8)
                .checked_shr(8 * (16 - len) as u32)
                .unwrap_or(0),
        )
    } else if len >= 4 {
        (u32_at(0) | (u32_at(len - 4) >> (8 * (8 - len))) << 32, 0)
    } else if len > 0 {
        let byte = |at: usize| u64::from(span[at]) << (8 * at);
        (byte(0) | byte(len / 2) | byte(len - 1), 0)
    } else {
        (0, 0)
    };
    (u128::from(lo) | u128::from(hi) << 64).to_le_bytes()
}

#[inline(always)]
fn chunk(hay: &[u8], at: usize) -> &[u8; 16] {
    hay[at..at + 16].try_into().unwrap()
}

/// The first index in `from..end` whose byte is `needle`, else `end`. Compares whole 16-byte
/// blocks of `hay`, which may extend past `end` (never past `hay`).
#[inline(always)]
pub(crate) fn find_in(hay: &[u8], from: usize, end: usize, needle: u8) -> usize {
    let len = hay.len();
    if len < 16 {
        // `from` is at most 15 here.
        let m = eq16(&padded16(hay), needle) >> from;
        return (from + m.trailing_zeros() as usize).min(end);
    }
    let mut at = from;
    while at < end {
        let m = if at + 16 <= len {
            eq16(chunk(hay, at), needle)
        } else {
            // The last block overlaps bytes already searched: shift them out.
            eq16(chunk(hay, len - 16), needle) >> (at - (len - 16))
        };
        if m != 0 {
            return (at + m.trailing_zeros() as usize).min(end);
        }
        at += 16;
    }
    end
}

/// The position of the first `needle` in `hay`.
#[inline]
pub(crate) fn find(hay: &[u8], needle: u8) -> Option<usize> {
    let i = find_in(hay, 0, hay.len(), needle);
    (i < hay.len()).then_some(i)
}

#[inline(always)]
pub(crate) fn is_ascii(hay: &[u8]) -> bool {
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let len = hay.len();
    if len < 8 {
        return hay.iter().all(|&c| c < 0x80);
    }
    let word = |at: usize| u64::from_ne_bytes(hay[at..at + 8].try_into().unwrap());
    if len < 16 {
        return (word(0) | word(len - 8)) & HIGH == 0;
    }
    let mut high = high16(chunk(hay, len - 16));
    let mut at = 0;
    while at + 16 <= len {
        high |= high16(chunk(hay, at));
        at += 16;
    }
    high == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random bytes: every delimiter, each delimiter plus one (`;`, `}`, `-`), bytes
    /// with the high bit, and zero.
    fn hay(len: usize) -> Vec<u8> {
        let alphabet = b"a:;|},-\x80\xff\x00";
        let mut rng = crate::Xorshift::new(0x2545_f491_4f6c_dd1d);
        (0..len)
            .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
            .collect()
    }

    fn naive(span: &[u8], from: usize, end: usize, delim: Delim) -> usize {
        span[from..end]
            .iter()
            .position(|&c| c == delim.byte())
            .map_or(end, |i| from + i)
    }

    /// The `,` and `:` masks of `span` (under 64 bytes), byte by byte.
    fn naive_commas_colons(span: &[u8]) -> (u64, u64) {
        let mask = |c: u8| {
            span.iter()
                .enumerate()
                .fold(0u64, |m, (i, &b)| m | u64::from(b == c) << i)
        };
        (mask(b','), mask(b':'))
    }

    const DELIMS: [Delim; 3] = [Delim::Colon, Delim::Pipe, Delim::Comma];

    #[test]
    fn padding() {
        let hay = hay(16);
        for len in 0..=16 {
            let mut expect = [0u8; 16];
            expect[..len].copy_from_slice(&hay[..len]);
            assert_eq!(padded16(&hay[..len]), expect, "{len}");
        }
    }

    #[test]
    fn scan_matches_a_plain_search() {
        let hay = hay(120);
        for len in 0..hay.len() {
            let span = &hay[..len];
            assert_eq!(is_ascii(span), span.is_ascii());
            assert_eq!(find(span, b'\xff'), span.iter().position(|&c| c == b'\xff'));
            for from in 0..=len.min(40) {
                for end in (from..=len).step_by(3) {
                    for delim in DELIMS {
                        assert_eq!(
                            Scan(span).find(from, end, delim),
                            naive(span, from, end, delim)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn commas_and_colons_match_a_plain_search() {
        let hay = hay(200);
        for start in 0..16 {
            for len in 0..=Masks::MAX_LEN {
                let span = &hay[start..start + len];
                let masks = Masks::new(span);
                for from in 0..=len {
                    for end in from..=len.min(from + 63) {
                        let expect = naive_commas_colons(&span[from..end]);
                        assert_eq!(masks.commas_colons(from, end), expect);
                        assert_eq!(Scan(span).commas_colons(from, end), expect);
                    }
                }
            }
        }
        // Long spans go through `Scan` only.
        let span = &hay[..200];
        for from in [0, 1, 63, 64, 65, 100, 137, 150] {
            let end = from + 50;
            let expect = naive_commas_colons(&span[from..end]);
            assert_eq!(Scan(span).commas_colons(from, end), expect);
        }
    }

    #[test]
    fn wide_masks_match_a_plain_search() {
        let hay = hay(300);
        for start in 0..16 {
            for len in 64..=WideMasks::MAX_WIDE_LEN {
                let span = &hay[start * 7..start * 7 + len];
                let masks = Masks::wide(span);
                assert_eq!(masks.is_ascii(), span.is_ascii());
                for from in 0..=len {
                    for end in (from..=len).step_by(5).chain([len]) {
                        for delim in DELIMS {
                            assert_eq!(masks.find(from, end, delim), naive(span, from, end, delim));
                        }
                    }
                    for end in from..=len.min(from + 63) {
                        let expect = naive_commas_colons(&span[from..end]);
                        assert_eq!(masks.commas_colons(from, end), expect);
                    }
                }
            }
        }
    }

    #[test]
    fn masks_match_a_plain_search() {
        let hay = hay(200);
        for start in 0..16 {
            for len in 0..=Masks::MAX_LEN {
                let span = &hay[start..start + len];
                let masks = Masks::new(span);
                assert_eq!(masks.is_ascii(), span.is_ascii());
                let colons = Masks::eq64(span, b':');
                for i in 0..64 {
                    assert_eq!(colons >> i & 1 == 1, span.get(i) == Some(&b':'));
                }
                for from in 0..=len {
                    for end in from..=len {
                        for delim in DELIMS {
                            assert_eq!(masks.find(from, end, delim), naive(span, from, end, delim));
                        }
                    }
                }
            }
        }
    }
}
