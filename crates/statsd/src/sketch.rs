//! Bounded-memory summaries for series that outgrow exact storage in one interval.
//!
//! [`Sketch`] is a DDSketch-style log-bucket histogram: every value lands in the bucket
//! `ceil(log_gamma(|v|))`, and a quantile is answered with the bucket's midpoint, which is within
//! `ALPHA` (1%) relative error of a real sample of that rank. Memory is bounded by collapsing the
//! lowest buckets when there are more than `MAX_BUCKETS` of them (only extreme low quantiles
//! lose accuracy then, as in DDSketch).
//!
//! [`Hll`] is a HyperLogLog (precision 14, ~0.8% standard error) for sets with more distinct
//! members than can be kept exactly.

use std::collections::BTreeMap;

const ALPHA: f64 = 0.01;
const MAX_BUCKETS: usize = 4096;

#[derive(Clone, Debug)]
pub struct Sketch {
    gamma_ln: f64,
    /// Bucket index -> count, for positive values.
    positive: BTreeMap<i32, u64>,
    /// Bucket index -> count, for the absolute values of negative values.
    negative: BTreeMap<i32, u64>,
    zeros: u64,
    count: u64,
}

impl Default for Sketch {
    fn default() -> Self {
        Self::new()
    }
}

/// Values closer to zero than this are counted as zero.
const MIN_MAGNITUDE: f64 = 1e-12;

impl Sketch {
    pub fn new() -> Self {
        let gamma = (1.0 + ALPHA) / (1.0 - ALPHA);
        Sketch {
            gamma_ln: gamma.ln(),
            positive: BTreeMap::new(),
            negative: BTreeMap::new(),
            zeros: 0,
            count: 0,
        }
    }

    fn index(&self, magnitude: f64) -> i32 {
        (magnitude.ln() / self.gamma_ln).ceil() as i32
    }

    fn value_of(&self, index: i32) -> f64 {
        // The midpoint (in relative terms) of (gamma^(i-1), gamma^i].
        let gamma = self.gamma_ln.exp();
        2.0 * (self.gamma_ln * index as f64).exp() / (gamma + 1.0)
    }

    pub fn add(&mut self, v: f64) {
        self.add_n(v, 1);
    }

    pub fn add_n(&mut self, v: f64, n: u64) {
        self.count += n;
        if v.abs() < MIN_MAGNITUDE {
            self.zeros += n;
        } else if v > 0.0 {
            let i = self.index(v);
            *self.positive.entry(i).or_insert(0) += n;
            Self::bound(&mut self.positive);
        } else {
            let i = self.index(-v);
            *self.negative.entry(i).or_insert(0) += n;
            Self::bound(&mut self.negative);
        }
    }

    fn bound(store: &mut BTreeMap<i32, u64>) {
        while store.len() > MAX_BUCKETS {
            // Fold the lowest bucket into the next one up.
            if let Some((_, n)) = store.pop_first() {
                if let Some(mut next) = store.first_entry() {
                    *next.get_mut() += n;
                }
            }
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        for (&i, &n) in &other.positive {
            *self.positive.entry(i).or_insert(0) += n;
        }
        for (&i, &n) in &other.negative {
            *self.negative.entry(i).or_insert(0) += n;
        }
        Self::bound(&mut self.positive);
        Self::bound(&mut self.negative);
        self.zeros += other.zeros;
        self.count += other.count;
    }

    /// The value of 1-based rank `rank` in sorted order (`1 <= rank <= count`).
    pub fn value_at_rank(&self, rank: u64) -> f64 {
        let mut seen = 0u64;
        // Negative values, most negative first: highest magnitude bucket first.
        for (&i, &n) in self.negative.iter().rev() {
            seen += n;
            if seen >= rank {
                return -self.value_of(i);
            }
        }
        seen += self.zeros;
        if seen >= rank {
            return 0.0;
        }
        for (&i, &n) in &self.positive {
            seen += n;
            if seen >= rank {
                return self.value_of(i);
            }
        }
        // Rank beyond count: the largest bucket.
        self.positive
            .last_key_value()
            .map(|(&i, _)| self.value_of(i))
            .unwrap_or(0.0)
    }
}

/// HyperLogLog with 2^14 registers.
#[derive(Clone)]
pub struct Hll {
    registers: Box<[u8; HLL_M]>,
}

const HLL_P: u32 = 14;
const HLL_M: usize = 1 << HLL_P;

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hll(~{})", self.estimate())
    }
}

impl Default for Hll {
    fn default() -> Self {
        Self::new()
    }
}

impl Hll {
    pub fn new() -> Self {
        Hll {
            registers: Box::new([0; HLL_M]),
        }
    }

    /// Adds a member by its 64-bit hash.
    pub fn add_hash(&mut self, h: u64) {
        let idx = (h >> (64 - HLL_P)) as usize;
        let rest = (h << HLL_P) | (1 << (HLL_P - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        if self.registers[idx] < rank {
            self.registers[idx] = rank;
        }
    }

    pub fn merge(&mut self, other: &Hll) {
        for (a, b) in self.registers.iter_mut().zip(other.registers.iter()) {
            *a = (*a).max(*b);
        }
    }

    pub fn estimate(&self) -> f64 {
        let m = HLL_M as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &r in self.registers.iter() {
            sum += 1.0 / (1u64 << r) as f64;
            if r == 0 {
                zeros += 1;
            }
        }
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            // Linear counting for small cardinalities.
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_quantiles_within_one_percent() {
        let mut s = Sketch::new();
        let mut exact: Vec<f64> = (1..=100_000).map(|i| i as f64 * 0.37).collect();
        for v in &exact {
            s.add(*v);
        }
        exact.sort_by(f64::total_cmp);
        for rank in [1u64, 500, 50_000, 90_000, 99_000, 99_900, 100_000] {
            let want = exact[rank as usize - 1];
            let got = s.value_at_rank(rank);
            assert!(
                (got - want).abs() <= want * ALPHA + 1e-9,
                "rank {rank}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn sketch_handles_negatives_and_zero() {
        let mut s = Sketch::new();
        for v in [-5.0, -1.0, 0.0, 1.0, 5.0] {
            s.add(v);
        }
        assert!((s.value_at_rank(1) + 5.0).abs() < 0.05);
        assert_eq!(s.value_at_rank(3), 0.0);
        assert!((s.value_at_rank(5) - 5.0).abs() < 0.05);
    }

    #[test]
    fn sketch_memory_is_bounded() {
        let mut s = Sketch::new();
        let mut v = 1e-9;
        while v < 1e300 {
            s.add(v);
            v *= 1.001;
        }
        assert!(s.positive.len() <= MAX_BUCKETS);
    }

    #[test]
    fn hll_estimates() {
        let mut h = Hll::new();
        for i in 0..200_000u64 {
            h.add_hash(foldhash::quality::FixedState::with_seed(7).hash_one(i));
        }
        let e = h.estimate();
        assert!((e - 200_000.0).abs() / 200_000.0 < 0.03, "{e}");
    }

    use std::hash::BuildHasher;
}
