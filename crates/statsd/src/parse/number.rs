//! Decimal values of up to 8 bytes, read as one word.
//!
//! Most StatsD values are a few digits with perhaps a `.` (`1`, `250`, `12.5`), and their
//! length follows the metric type, which varies from line to line. A byte loop over them
//! ends after a number of steps the branch predictor often gets wrong; here the value is
//! loaded as one `u64` and checked and combined with the same word operations whatever its
//! length.

/// `0x01` in every byte.
const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
/// `0x80` in every byte.
const HIGHS: u64 = ONES << 7;

/// Powers of ten up to the most fraction digits a word can hold.
const POW10: [f64; 8] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7];

/// The value of `b[start..end]` when it is `digits[.digits]`, at most 8 bytes, with a digit
/// first, and `b` holds at least 8 bytes; else `None`, also for many valid numbers (signed,
/// longer, `.5`, exponents), which the caller parses otherwise. The digits make an integer
/// below 10^8 and the divisor is an exact power of ten, so the one division is correctly
/// rounded: the same result as any exact parser.
#[inline(always)]
pub(crate) fn word_decimal(b: &[u8], start: usize, end: usize) -> Option<f64> {
    let len = b.len();
    let n = end.wrapping_sub(start);
    if n.wrapping_sub(1) >= 8 || len < 8 || end > len {
        return None;
    }
    // The 8 bytes from `start`, or the last 8 of `b` shifted down to start there: the value
    // ends at or before the end of `b`, so it is whole either way. Then only its `n` bytes.
    let at = start.min(len - 8);
    let value_bytes = u64::MAX >> (64 - 8 * n);
    let word =
        (u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) >> (8 * (start - at))) & value_bytes;

    // `0x80` in the byte of each `.` (the zeros past the value are not `.`).
    let dots = zero_bytes(word ^ (ONES * u64::from(b'.')));
    // The value with its `.` read as `0` and `0` past its end must be all digits, and hold
    // one `.` at most, not first.
    let as_digits =
        (word ^ ((dots >> 7) * u64::from(b'.' ^ b'0'))) | ((ONES * 0x30) & !value_bytes);
    if !all_digits(as_digits) || dots & (dots.wrapping_sub(1) | 0x80) != 0 {
        return None;
    }
    // Byte `p` is the `.`, 8 when there is none. The bytes after it move down over it.
    let p = dots.trailing_zeros() as usize / 8;
    let before = u64::MAX >> (64 - 8 * p);
    let digits = (word & before) | ((word >> 8) & !before);
    let count = n - usize::from(dots != 0);
    // Right-aligned, the first digit most significant; the zero bytes before read as `0`.
    let mantissa = eight_digits(digits << (8 * (8 - count)));
    let fraction = if dots != 0 { n - 1 - p } else { 0 };
    // At most 6 digits follow the `.` (one precedes it); the mask only spares a bounds check.
    Some(mantissa as f64 / POW10[fraction & 7])
}

/// `0x80` in each byte of `word` that is zero, else `0`: exact, with no carries between bytes.
#[inline(always)]
fn zero_bytes(word: u64) -> u64 {
    !(((word & !HIGHS) + !HIGHS) | word) & HIGHS
}

/// True when every byte of `word` is an ASCII digit.
#[inline(always)]
fn all_digits(word: u64) -> bool {
    // A digit's high nibble is 3 and stays 3 when 6 is added to it. A carry out of a byte of
    // `0xfa` or more changes the next byte, but such a byte already fails the first half.
    const NIBBLES: u64 = ONES * 0xf0;
    (word & NIBBLES) | ((word.wrapping_add(ONES * 6) & NIBBLES) >> 4) == ONES * 0x33
}

/// The number written by 8 digits, the first in the lowest byte; only the low nibble of each
/// byte is read, so zero bytes read as `0`.
#[inline(always)]
fn eight_digits(word: u64) -> u64 {
    // Pairs of digits, then of pairs, then of quads, each a multiply-shift.
    let word = (word & (ONES * 0x0f)).wrapping_mul(10 << 8 | 1) >> 8;
    let word = (word & 0x00ff_00ff_00ff_00ff).wrapping_mul(100 << 16 | 1) >> 16;
    (word & 0x0000_ffff_0000_ffff).wrapping_mul(10_000 << 32 | 1) >> 32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the word must agree with: fast-float2, whenever the word gives a value.
    fn exact(s: &[u8]) -> Option<u64> {
        fast_float2::parse::<f64, _>(s)
            .ok()
            .filter(|v: &f64| v.is_finite())
            .map(f64::to_bits)
    }

    /// Whether the word must give a value for `value` (in a line of at least 8 bytes).
    fn handled(value: &[u8]) -> bool {
        value.len() <= 8
            && value.first().is_some_and(u8::is_ascii_digit)
            && value.iter().filter(|&&c| c == b'.').count() <= 1
            && value.iter().all(|&c| c.is_ascii_digit() || c == b'.')
    }

    /// The word's results for `value` in lines of at least 8 bytes with `fill` bytes before
    /// and after it; shorter lines must be refused.
    fn in_lines(value: &[u8], fill: u8) -> Vec<Option<u64>> {
        let mut results = Vec::new();
        for before in [0, 3, 9] {
            for after in [0, 2, 8] {
                let mut line = vec![fill; before];
                line.extend_from_slice(value);
                line.extend(std::iter::repeat_n(fill, after));
                let end = before + value.len();
                let got = word_decimal(&line, before, end).map(f64::to_bits);
                if line.len() < 8 {
                    assert_eq!(got, None);
                } else {
                    results.push(got);
                }
            }
        }
        results
    }

    fn check(value: &[u8], fill: u8) -> usize {
        let expect = exact(value);
        let must = handled(value);
        let mut checked = 0;
        for got in in_lines(value, fill) {
            let text = String::from_utf8_lossy(value);
            if must {
                assert_eq!(got, expect, "{text:?} in {:?}", fill as char);
                checked += 1;
            } else {
                assert!(got.is_none() || got == expect, "{text:?}");
            }
        }
        checked
    }

    #[test]
    fn every_short_value_over_a_small_alphabet() {
        // Every string of up to 5 bytes over these and a sample of longer ones, between digits
        // or other bytes: the word gives fast-float2's value for every plain decimal, and
        // nothing else.
        let alphabet = b"019.-+e:";
        let base = alphabet.len() as u64;
        let mut rng = crate::Xorshift::new(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        let mut value = Vec::new();
        for n in 1..=9u32 {
            let all = base.pow(n);
            for i in 0..all.min(20_000) {
                let mut code = if all <= 20_000 { i } else { rng.next() % all };
                value.clear();
                for _ in 0..n {
                    value.push(alphabet[(code % base) as usize]);
                    code /= base;
                }
                for fill in [b'7', b'.', b'|'] {
                    checked += check(&value, fill);
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn random_decimals_match_fast_float() {
        let mut rng = crate::Xorshift::new(0x2545_f491_4f6c_dd1d);
        let mut next = move || rng.next();
        let mut checked = 0;
        for _ in 0..100_000 {
            let len = 1 + next() % 8;
            let mut text: Vec<u8> = (0..len).map(|_| b'0' + (next() % 10) as u8).collect();
            if next() % 2 == 0 && len > 1 {
                let dot = 1 + (next() % (len - 1)) as usize;
                text[dot] = b'.';
            }
            checked += check(&text, b'|');
        }
        assert!(checked > 500_000, "{checked}");
    }

    #[test]
    fn values_and_refusals() {
        let at = |s: &str| word_decimal(format!("{s}|c|#a:b").as_bytes(), 0, s.len());
        assert_eq!(at("1"), Some(1.0));
        assert_eq!(at("12345678"), Some(12345678.0));
        assert_eq!(at("1234.567"), Some(1234.567));
        assert_eq!(at("0.000001"), Some(1e-6));
        assert_eq!(at("5."), Some(5.0));
        assert_eq!(at("007"), Some(7.0));
        for other in [
            "",
            "-1",
            "+1",
            "-0",
            ".",
            ".5",
            "1e3",
            "1.2.3",
            "1..2",
            "123456789",
            "1 ",
            "1,5",
        ] {
            assert_eq!(at(other), None, "{other:?}");
        }
        // Lines of under 8 bytes are left to the caller, and only `start..end` counts.
        assert_eq!(word_decimal(b"a:1|c", 2, 3), None);
        assert_eq!(word_decimal(b"a:12|ms|", 2, 3), Some(1.0));
        assert_eq!(word_decimal(b"a:12|ms|", 3, 4), Some(2.0));
        assert_eq!(word_decimal(b"xx:9.75|g", 3, 7), Some(9.75));
        assert_eq!(word_decimal(b"a:1|c|#x:y", 2, 3), Some(1.0));
    }
}
