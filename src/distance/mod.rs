//! Vector distance kernels with runtime SIMD dispatch.
//!
//! Three kernels are provided — [`dot`], [`l2_squared`] and [`cosine_distance`] — each in a
//! portable scalar version ([`scalar`]) and, on `x86_64`, AVX2+FMA and AVX-512F versions. The best
//! instruction set the CPU supports is detected once at first use ([`detected_isa`]) and the
//! matching [`Kernels`] table is cached ([`kernels`]); the free functions dispatch through it.
//!
//! Contract shared by every kernel: both slices should have the same length (checked with
//! `debug_assert!`); in release builds only the common prefix (the shorter length) is used, so a
//! length mismatch never reads out of bounds nor panics. Empty slices give 0 (cosine distance:
//! 1.0). Sums are accumulated in `f32`; the SIMD kernels add in a different order than the scalar
//! loop (and use fused multiply-add), so results agree to rounding error, not bit for bit. Inputs
//! containing NaN or infinities, or whose squared norms overflow `f32`, give unspecified
//! (non-finite) results.

pub mod adc;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

pub use half::f16;

use crate::types::Metric;

/// Which instruction set the kernels run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable scalar loops ([`scalar`]); available everywhere.
    Scalar,
    /// x86-64 AVX2 with FMA: 8 `f32` lanes.
    Avx2Fma,
    /// x86-64 AVX-512F: 16 `f32` lanes.
    Avx512,
}

impl Isa {
    /// Short lowercase name: `"scalar"`, `"avx2+fma"` or `"avx512"`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Avx512 => "avx512",
        }
    }
}

/// A table of kernel function pointers for one ISA.
///
/// Tables for SIMD ISAs are only handed out by [`Kernels::for_isa`] after runtime detection has
/// confirmed the CPU supports them, so calling any of the (safe) function pointers is always sound.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// The instruction set these kernels use.
    pub isa: Isa,
    /// Dot product, see [`dot`].
    pub dot: fn(&[f32], &[f32]) -> f32,
    /// Squared Euclidean distance, see [`l2_squared`].
    pub l2_squared: fn(&[f32], &[f32]) -> f32,
    /// Cosine distance, see [`cosine_distance`].
    pub cosine_distance: fn(&[f32], &[f32]) -> f32,
    /// Dot product with a half-precision vector, see [`dot_f16`].
    pub dot_f16: fn(&[f32], &[f16]) -> f32,
    /// Squared Euclidean distance to a half-precision vector, see [`l2_squared_f16`].
    pub l2_squared_f16: fn(&[f32], &[f16]) -> f32,
}

/// The portable scalar table.
const SCALAR_KERNELS: Kernels = Kernels {
    isa: Isa::Scalar,
    dot: scalar::dot,
    l2_squared: scalar::l2_squared,
    cosine_distance: scalar::cosine_distance,
    dot_f16: scalar::dot_f16,
    l2_squared_f16: scalar::l2_squared_f16,
};

impl Kernels {
    /// The kernels for `isa`, or `None` if this CPU (or target architecture) lacks it.
    pub fn for_isa(isa: Isa) -> Option<Kernels> {
        match isa {
            Isa::Scalar => Some(SCALAR_KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => x86::avx2_fma_kernels(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => x86::avx512_kernels(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2Fma | Isa::Avx512 => None,
        }
    }
}

/// The kernels of [`detected_isa`], selected once on first use.
pub fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(|| {
        [Isa::Avx512, Isa::Avx2Fma]
            .into_iter()
            .find_map(Kernels::for_isa)
            .unwrap_or(SCALAR_KERNELS)
    })
}

/// The best ISA this CPU supports (AVX-512F, then AVX2+FMA, then scalar), detected once.
pub fn detected_isa() -> Isa {
    kernels().isa
}

/// ISAs available on this CPU, in increasing order of preference; always starts with [`Isa::Scalar`].
pub fn available_isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2Fma, Isa::Avx512]
        .into_iter()
        .filter(|&isa| Kernels::for_isa(isa).is_some())
        .collect()
}

/// Dot product `Σ a[i]·b[i]` with the fastest available kernel; 0 for empty slices.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// Squared Euclidean distance `Σ (a[i] - b[i])²` with the fastest available kernel.
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2_squared)(a, b)
}

/// `1 - cos(a, b)` for arbitrary (not necessarily normalised) vectors, in `[0, 2]`; 1.0 if either
/// vector has zero norm (including empty slices).
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    (kernels().cosine_distance)(a, b)
}

/// Dot product of `a` with the half-precision vector `b` (widened exactly to `f32`).
pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    (kernels().dot_f16)(a, b)
}

/// Squared Euclidean distance between `a` and the half-precision vector `b`.
pub fn l2_squared_f16(a: &[f32], b: &[f16]) -> f32 {
    (kernels().l2_squared_f16)(a, b)
}

/// Scales `v` in place to unit L2 norm; returns `false` (leaving `v` unchanged) if the norm is 0
/// or not finite (including empty `v` and `v` containing NaN or infinities).
pub fn normalize(v: &mut [f32]) -> bool {
    let squared = dot(v, v);
    let inv_norm = if squared.is_finite() && squared >= f32::MIN_POSITIVE {
        1.0 / f64::from(squared).sqrt()
    } else {
        // The f32 sum overflowed, underflowed or saw a non-finite value: redo it in f64, where the
        // square of any finite f32 is finite and non-zero unless the value is zero.
        let squared: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        if !(squared.is_finite() && squared > 0.0) {
            return false;
        }
        1.0 / squared.sqrt()
    };
    for x in v.iter_mut() {
        *x = (f64::from(*x) * inv_norm) as f32;
    }
    true
}

/// Hints the CPU to start loading `data` into cache before it is used (graph traversals call it
/// on the next neighbour's vector). No effect on results; a no-op off x86-64.
#[inline]
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    x86::prefetch(data);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Turns the sums `a·b`, `|a|²`, `|b|²` of a cosine pass into `1 - cos(a, b)`, clamped to `[0, 2]`
/// (rounding can push `|cos|` slightly above 1); 1.0 if either norm is zero.
fn cosine_from_sums(ab: f32, aa: f32, bb: f32) -> f32 {
    if aa == 0.0 || bb == 0.0 {
        return 1.0;
    }
    // In f64, |a|²·|b|² can neither overflow nor underflow.
    let cos = f64::from(ab) / (f64::from(aa) * f64::from(bb)).sqrt();
    (1.0 - cos.clamp(-1.0, 1.0)) as f32
}

/// The distance of one metric, as indexes compute it: on stored vectors that were prepared
/// with [`MetricDistance::prepare`] (normalised for cosine, so cosine distance is `1 − dot`).
/// Smaller is closer.
#[derive(Clone, Copy)]
pub struct MetricDistance {
    metric: Metric,
    kernels: &'static Kernels,
}

impl MetricDistance {
    /// The distance of `metric` on the detected kernels.
    pub fn new(metric: Metric) -> Self {
        MetricDistance {
            metric,
            kernels: kernels(),
        }
    }

    /// Distance between two prepared vectors.
    #[inline]
    pub fn distance(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.metric {
            // Rounding can push the dot of two unit vectors slightly above 1.
            Metric::Cosine => (1.0 - (self.kernels.dot)(a, b)).max(0.0),
            Metric::L2 => (self.kernels.l2_squared)(a, b),
            Metric::Dot => -(self.kernels.dot)(a, b),
        }
    }

    /// Distance between a prepared query and a prepared vector stored in half precision.
    #[inline]
    pub fn distance_f16(&self, a: &[f32], b: &[f16]) -> f32 {
        match self.metric {
            Metric::Cosine => (1.0 - (self.kernels.dot_f16)(a, b)).max(0.0),
            Metric::L2 => (self.kernels.l2_squared_f16)(a, b),
            Metric::Dot => -(self.kernels.dot_f16)(a, b),
        }
    }

    /// A copy of `v` ready to store or to query with (normalised for cosine); `None` for a
    /// vector that cannot be normalised.
    pub fn prepare(&self, v: &[f32]) -> Option<Vec<f32>> {
        let mut out = v.to_vec();
        (self.metric != Metric::Cosine || normalize(&mut out)).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kernels() -> Vec<Kernels> {
        available_isas()
            .into_iter()
            .map(|isa| Kernels::for_isa(isa).expect("available ISA has kernels"))
            .collect()
    }

    #[test]
    fn names() {
        assert_eq!(Isa::Scalar.name(), "scalar");
        assert_eq!(Isa::Avx2Fma.name(), "avx2+fma");
        assert_eq!(Isa::Avx512.name(), "avx512");
    }

    #[test]
    fn tables_match_their_isa_and_detection_picks_the_best() {
        let isas = available_isas();
        assert_eq!(isas[0], Isa::Scalar);
        for &isa in &isas {
            assert_eq!(Kernels::for_isa(isa).unwrap().isa, isa);
        }
        assert_eq!(detected_isa(), *isas.last().unwrap());
        assert_eq!(kernels().isa, detected_isa());
    }

    #[test]
    fn empty_slices() {
        for k in all_kernels() {
            assert_eq!((k.dot)(&[], &[]), 0.0, "{:?}", k.isa);
            assert_eq!((k.l2_squared)(&[], &[]), 0.0, "{:?}", k.isa);
            assert_eq!((k.cosine_distance)(&[], &[]), 1.0, "{:?}", k.isa);
        }
    }

    #[test]
    fn length_one() {
        for k in all_kernels() {
            assert_eq!((k.dot)(&[3.0], &[-2.0]), -6.0, "{:?}", k.isa);
            assert_eq!((k.l2_squared)(&[3.0], &[-2.0]), 25.0, "{:?}", k.isa);
            assert_eq!((k.cosine_distance)(&[3.0], &[-2.0]), 2.0, "{:?}", k.isa);
            assert_eq!((k.cosine_distance)(&[3.0], &[2.0]), 0.0, "{:?}", k.isa);
        }
    }

    #[test]
    fn small_integer_vectors_are_exact_at_every_length() {
        // Integer-valued inputs make every partial sum exact, so all ISAs must agree exactly
        // whatever their summation order; lengths 0..=200 cover every tail path of every kernel.
        for n in 0..=200usize {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 2.0).collect();
            let want_dot: f32 = (0..n).map(|i| a[i] * b[i]).sum();
            let want_l2: f32 = (0..n).map(|i| (a[i] - b[i]) * (a[i] - b[i])).sum();
            for k in all_kernels() {
                assert_eq!((k.dot)(&a, &b), want_dot, "{:?} n={n}", k.isa);
                assert_eq!((k.l2_squared)(&a, &b), want_l2, "{:?} n={n}", k.isa);
                assert_eq!(
                    (k.cosine_distance)(&a, &b),
                    scalar::cosine_distance(&a, &b),
                    "{:?} n={n}",
                    k.isa
                );
            }
        }
    }

    #[test]
    fn half_precision_kernels_equal_the_f32_kernels_on_the_widened_vector() {
        // Half floats widen to f32 exactly, so each f16 kernel must match the f32 kernel of the
        // same ISA run on the widened vector (same summation order) at every tail length, and
        // every ISA must match the scalar reference on integer-valued inputs exactly.
        for n in 0..=200usize {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f16> = (0..n)
                .map(|i| f16::from_f32((i % 5) as f32 - 2.0))
                .collect();
            let wide: Vec<f32> = b.iter().map(|x| x.to_f32()).collect();
            for k in all_kernels() {
                assert_eq!((k.dot_f16)(&a, &b), (k.dot)(&a, &wide), "{:?} n={n}", k.isa);
                assert_eq!(
                    (k.l2_squared_f16)(&a, &b),
                    (k.l2_squared)(&a, &wide),
                    "{:?} n={n}",
                    k.isa
                );
                assert_eq!(
                    (k.dot_f16)(&a, &b),
                    scalar::dot(&a, &wide),
                    "{:?} n={n}",
                    k.isa
                );
            }
        }
    }

    #[test]
    fn zero_vector_cosine_is_one() {
        let zero = [0.0f32; 37];
        let other: Vec<f32> = (0..37).map(|i| i as f32 + 1.0).collect();
        for k in all_kernels() {
            assert_eq!((k.cosine_distance)(&zero, &other), 1.0, "{:?}", k.isa);
            assert_eq!((k.cosine_distance)(&other, &zero), 1.0, "{:?}", k.isa);
            assert_eq!((k.cosine_distance)(&zero, &zero), 1.0, "{:?}", k.isa);
        }
    }

    #[test]
    fn cosine_of_parallel_and_opposite_vectors() {
        let a: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let scaled: Vec<f32> = a.iter().map(|x| x * 3.5).collect();
        let opposite: Vec<f32> = a.iter().map(|x| -x).collect();
        for k in all_kernels() {
            let same = (k.cosine_distance)(&a, &scaled);
            assert!((0.0..1e-6).contains(&same), "{:?} {same}", k.isa);
            let opp = (k.cosine_distance)(&a, &opposite);
            assert!(opp <= 2.0 && opp > 2.0 - 1e-6, "{:?} {opp}", k.isa);
        }
    }

    #[test]
    fn wrappers_dispatch_to_detected_kernels() {
        let a: Vec<f32> = (0..77).map(|i| i as f32 * 0.25 - 9.0).collect();
        let b: Vec<f32> = (0..77).map(|i| 4.0 - i as f32 * 0.125).collect();
        let k = kernels();
        assert_eq!(dot(&a, &b).to_bits(), (k.dot)(&a, &b).to_bits());
        assert_eq!(
            l2_squared(&a, &b).to_bits(),
            (k.l2_squared)(&a, &b).to_bits()
        );
        assert_eq!(
            cosine_distance(&a, &b).to_bits(),
            (k.cosine_distance)(&a, &b).to_bits()
        );
    }

    #[test]
    fn normalize_scales_to_unit_norm() {
        let mut v = vec![3.0f32, 4.0];
        assert!(normalize(&mut v));
        assert_eq!(v, [0.6, 0.8]);

        let mut w: Vec<f32> = (0..300).map(|i| (i as f32).cos() * 10.0).collect();
        assert!(normalize(&mut w));
        let norm: f64 = w.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }

    #[test]
    fn normalize_handles_f32_overflow_and_underflow() {
        // Squares overflow f32 (1e30² = 1e60) or underflow it (1e-30² = 1e-60): the f64 fallback.
        for scale in [1e30f32, 1e-30] {
            let mut v = vec![3.0 * scale, 4.0 * scale];
            assert!(normalize(&mut v), "{scale}");
            assert!(
                (v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6,
                "{v:?}"
            );
        }
    }

    #[test]
    fn normalize_rejects_zero_empty_and_non_finite() {
        let mut empty: [f32; 0] = [];
        assert!(!normalize(&mut empty));
        let mut zero = [0.0f32; 5];
        assert!(!normalize(&mut zero));
        assert_eq!(zero, [0.0; 5]);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = [1.0, bad, 2.0];
            assert!(!normalize(&mut v));
            assert_eq!(v[0], 1.0);
            assert_eq!(v[2], 2.0);
        }
    }
}
