//! A tiny deterministic pseudo-random generator (SplitMix64, Steele et al. 2014) for seeded
//! work: training samples and seeds, demo and benchmark data. Not for anything secret.

/// SplitMix64: the state is the seed.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    /// The next number of the sequence.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A number in `0..n` (`n > 0`; modulo bias is negligible for the sizes used here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_seeded_and_in_range() {
        let mut a = SplitMix(7);
        let mut b = SplitMix(7);
        assert_eq!(a.next(), b.next());
        for _ in 0..1000 {
            assert!(a.below(10) < 10);
            let x = a.next_f64();
            assert!((0.0..1.0).contains(&x));
        }
        assert_ne!(SplitMix(1).next(), SplitMix(2).next());
    }
}
