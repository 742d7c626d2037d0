//! Seeded randomness shared by the examples (each example uses the part it needs).
#![allow(dead_code)]

use std::collections::HashSet;

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and good enough for a synthetic corpus.
#[derive(Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// An independent stream for one part of the generation (so that, e.g., changing the number
    /// of queries leaves the corpus unchanged).
    pub fn stream(seed: u64, tag: u64) -> Self {
        let mut mixer = SplitMix64(seed ^ tag.wrapping_mul(Self::GOLDEN));
        SplitMix64(mixer.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GOLDEN);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A standard normal sample (Box–Muller).
    pub fn gaussian(&mut self) -> f32 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// A uniformly random unit vector of `dim` coordinates.
    pub fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| self.gaussian()).collect();
        normalise(&mut v);
        v
    }

    /// A uniformly random element.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Shuffles in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    /// `count` distinct values of `0..n`, in random order (`count <= n`).
    pub fn sample(&mut self, n: usize, count: usize) -> Vec<usize> {
        if count * 4 <= n {
            // Few of many: rejection, without materialising `0..n`.
            let mut seen = HashSet::with_capacity(count);
            let mut picked = Vec::with_capacity(count);
            while picked.len() < count {
                let i = self.below(n);
                if seen.insert(i) {
                    picked.push(i);
                }
            }
            return picked;
        }
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..count {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(count);
        all
    }
}

/// Scales `v` to unit length (left as is if zero).
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}
