//! Plain scalar reference kernels.
//!
//! These are deliberately the straightforward loops: one sequential `f32` accumulator, no manual
//! unrolling. Because floating-point addition is not associative, LLVM will not reorder (and so
//! will not vectorise) these reductions without fast-math, which Rust never enables. They are the
//! portable fallback, the reference the SIMD kernels are tested against, and the honest baseline
//! in `benches/distance.rs`.
//!
//! Like every kernel in [`crate::distance`], they expect slices of equal length
//! (`debug_assert`ed); in release builds the common prefix (the shorter length) is used.

use half::f16;

use super::cosine_from_sums;

/// Dot product `Σ a[i]·b[i]`; 0 for empty slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
    let mut sum = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        sum += x * y;
    }
    sum
}

/// Squared Euclidean distance `Σ (a[i] - b[i])²`; 0 for empty slices.
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
    let mut sum = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let d = x - y;
        sum += d * d;
    }
    sum
}

/// Cosine distance `1 - cos(a, b)`, in `[0, 2]`; 1.0 if either vector has zero norm (or is empty).
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
    let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    cosine_from_sums(ab, aa, bb)
}

/// Dot product of `f32` `a` and half-precision `b`; 0 for empty slices.
pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
    let mut sum = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        sum += x * y.to_f32();
    }
    sum
}

/// Squared Euclidean distance between `f32` `a` and half-precision `b`; 0 for empty slices.
pub fn l2_squared_f16(a: &[f32], b: &[f16]) -> f32 {
    debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
    let mut sum = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let d = x - y.to_f32();
        sum += d * d;
    }
    sum
}
