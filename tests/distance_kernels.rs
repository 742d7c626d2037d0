//! Property tests: every SIMD kernel available on this CPU agrees with the scalar reference loop
//! and with an `f64` computation, for random lengths (covering every tail path) and values.
//!
//! Tolerances. A float sum's rounding error is bounded relative to the sum of the *magnitudes*
//! of its terms, `Σ|tᵢ|`, not relative to the result: a dot product can cancel to ~0 while its
//! terms are large, and then no kernel can be relatively accurate. So for `dot` and `l2_squared`
//! we require `|got - want| <= 1e-4 · max(|want|, Σ|tᵢ|)` (for `l2_squared` all terms are
//! non-negative, so this is a plain relative error). The SIMD kernels sum in a different order and
//! use fused multiply-add, so they differ from the scalar loop in the last bits; with `f32`
//! (ε ≈ 6e-8) and n ≤ 2048 the typical error is ~√n·ε ≈ 3e-6 of the scale, well inside 1e-4.
//! Cosine distance lies in `[0, 2]`, and `cos = a·b / (|a||b|)` with `|a||b| ≥ Σ|aᵢbᵢ|`, so the
//! same relative bound on the sums becomes an absolute bound of ~1e-4 on the distance.

use proptest::collection::vec;
use proptest::prelude::*;
use quiverdb::distance::{self, available_isas, scalar, Isa, Kernels};

const REL: f64 = 1e-4;

/// The kernel tables of every ISA this CPU supports.
fn all_kernels() -> Vec<Kernels> {
    available_isas()
        .into_iter()
        .map(|isa| Kernels::for_isa(isa).expect("an available ISA has kernels"))
        .collect()
}

/// `(value, Σ|terms|)` of the dot product, in f64.
fn dot_f64(a: &[f32], b: &[f32]) -> (f64, f64) {
    let terms = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y));
    terms.fold((0.0, 0.0), |(s, m), t| (s + t, m + t.abs()))
}

/// `Σ (aᵢ - bᵢ)²` in f64 (all terms are non-negative, so it is its own scale).
fn l2_f64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum()
}

/// `1 - cos(a, b)` in f64, clamped to `[0, 2]`; 1.0 if a norm is zero.
fn cosine_f64(a: &[f32], b: &[f32]) -> f64 {
    let (ab, _) = dot_f64(a, b);
    let (aa, _) = dot_f64(a, a);
    let (bb, _) = dot_f64(b, b);
    if aa == 0.0 || bb == 0.0 {
        return 1.0;
    }
    1.0 - (ab / (aa * bb).sqrt()).clamp(-1.0, 1.0)
}

/// Checks every kernel of every available ISA against the scalar reference and against f64.
fn check_all(a: &[f32], b: &[f32]) -> Result<(), TestCaseError> {
    let (dot64, dot_scale) = dot_f64(a, b);
    let l2_64 = l2_f64(a, b);
    let cos64 = cosine_f64(a, b);
    let dot_ref = f64::from(scalar::dot(a, b));
    let l2_ref = f64::from(scalar::l2_squared(a, b));
    let cos_ref = f64::from(scalar::cosine_distance(a, b));

    // The scalar reference itself must be accurate.
    prop_assert!((dot_ref - dot64).abs() <= REL * dot_scale.max(dot64.abs()));
    prop_assert!((l2_ref - l2_64).abs() <= REL * l2_64);
    prop_assert!((cos_ref - cos64).abs() <= REL);

    for k in all_kernels() {
        let isa = k.isa.name();
        let n = a.len();
        let dot = f64::from((k.dot)(a, b));
        let tol = REL * dot_scale.max(dot_ref.abs());
        prop_assert!(
            (dot - dot_ref).abs() <= tol,
            "{isa} dot n={n}: {dot} vs scalar {dot_ref} (tol {tol})"
        );
        prop_assert!(
            (dot - dot64).abs() <= REL * dot_scale.max(dot64.abs()),
            "{isa} dot n={n}: {dot} vs f64 {dot64}"
        );

        let l2 = f64::from((k.l2_squared)(a, b));
        prop_assert!(
            (l2 - l2_ref).abs() <= REL * l2_ref,
            "{isa} l2 n={n}: {l2} vs scalar {l2_ref}"
        );
        prop_assert!(
            (l2 - l2_64).abs() <= REL * l2_64,
            "{isa} l2 n={n}: {l2} vs f64 {l2_64}"
        );

        let cos = f64::from((k.cosine_distance)(a, b));
        prop_assert!((0.0..=2.0).contains(&cos), "{isa} cosine n={n}: {cos}");
        prop_assert!(
            (cos - cos_ref).abs() <= REL,
            "{isa} cosine n={n}: {cos} vs scalar {cos_ref}"
        );
        prop_assert!(
            (cos - cos64).abs() <= REL,
            "{isa} cosine n={n}: {cos} vs f64 {cos64}"
        );
    }
    Ok(())
}

/// Two vectors of the same random length in `1..2048`, elements drawn from `elem`.
fn pair<S>(elem: S) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)>
where
    S: Strategy<Value = f32> + Clone,
{
    (1usize..2048).prop_flat_map(move |n| (vec(elem.clone(), n), vec(elem.clone(), n)))
}

/// Values `m · 10^e` with `|m| < 10` and `e` in `-8..=8`: magnitudes spanning ~17 orders, so
/// sums are dominated by a few large terms while many small ones get absorbed. The exponent range
/// keeps squares well inside `f32`'s normal range.
fn wide_range() -> impl Strategy<Value = f32> + Clone {
    (-10.0f32..10.0, -8i32..=8).prop_map(|(m, e)| m * 10f32.powi(e))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn kernels_match_reference_uniform((a, b) in pair(-10.0f32..10.0)) {
        check_all(&a, &b)?;
    }

    #[test]
    fn kernels_match_reference_wide_dynamic_range((a, b) in pair(wide_range())) {
        check_all(&a, &b)?;
    }

    /// `b` close to `±a`: cosine distance near 0 (or 2), small L2 between large vectors.
    #[test]
    fn kernels_match_reference_near_duplicates(
        (a, noise) in pair(-10.0f32..10.0),
        flip in any::<bool>(),
    ) {
        let sign = if flip { -1.0 } else { 1.0 };
        let b: Vec<f32> = a.iter().zip(&noise).map(|(x, e)| sign * x + e * 1e-3).collect();
        check_all(&a, &b)?;
    }

    /// The public wrappers use the detected ISA and give exactly its kernels' results.
    #[test]
    fn wrappers_use_detected_kernels((a, b) in pair(-10.0f32..10.0)) {
        let k = Kernels::for_isa(distance::detected_isa()).unwrap();
        prop_assert_eq!(distance::dot(&a, &b).to_bits(), (k.dot)(&a, &b).to_bits());
        prop_assert_eq!(distance::l2_squared(&a, &b).to_bits(), (k.l2_squared)(&a, &b).to_bits());
        prop_assert_eq!(
            distance::cosine_distance(&a, &b).to_bits(),
            (k.cosine_distance)(&a, &b).to_bits()
        );
    }

    /// The half-precision kernels compute on `b` rounded to `f16` (widening back is exact): they
    /// must match the f64 value on the rounded vector under the same bounds as the f32 kernels,
    /// and the public wrappers must use the detected ISA's kernels.
    #[test]
    fn half_precision_kernels_match_reference((a, b) in pair(-10.0f32..10.0)) {
        let half: Vec<distance::f16> = b.iter().map(|&x| distance::f16::from_f32(x)).collect();
        let wide: Vec<f32> = half.iter().map(|x| x.to_f32()).collect();
        for (&x, &y) in b.iter().zip(&wide) {
            prop_assert!((x - y).abs() <= x.abs() / 1024.0 + 1e-7, "{} rounded to {}", x, y);
        }
        let (dot64, dot_scale) = dot_f64(&a, &wide);
        let l2_64 = l2_f64(&a, &wide);
        for k in all_kernels() {
            let dot = f64::from((k.dot_f16)(&a, &half));
            let l2 = f64::from((k.l2_squared_f16)(&a, &half));
            prop_assert!((dot - dot64).abs() <= REL * dot64.abs().max(dot_scale), "{:?} dot {} vs {}", k.isa, dot, dot64);
            prop_assert!((l2 - l2_64).abs() <= REL * l2_64, "{:?} l2 {} vs {}", k.isa, l2, l2_64);
        }
        let k = Kernels::for_isa(distance::detected_isa()).unwrap();
        prop_assert_eq!(distance::dot_f16(&a, &half).to_bits(), (k.dot_f16)(&a, &half).to_bits());
        prop_assert_eq!(
            distance::l2_squared_f16(&a, &half).to_bits(),
            (k.l2_squared_f16)(&a, &half).to_bits()
        );
    }

    /// normalize gives unit norm and preserves direction.
    #[test]
    fn normalize_gives_unit_vectors((a, _) in pair(wide_range())) {
        let mut v = a.clone();
        if distance::normalize(&mut v) {
            let (norm2, _) = dot_f64(&v, &v);
            prop_assert!((norm2 - 1.0).abs() <= 1e-5, "|v|² = {norm2}");
            prop_assert!(cosine_f64(&a, &v) <= 1e-6);
        } else {
            prop_assert!(a.iter().all(|&x| x == 0.0), "rejected a non-zero vector");
            prop_assert_eq!(v, a);
        }
    }
}

/// Every length 0..=300 (all combinations of full blocks, single-vector steps and tails for both
/// AVX2 and AVX-512) with deterministic pseudo-random values.
#[test]
fn every_short_length() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 20.0 - 10.0
    };
    for n in 0..=300 {
        let a: Vec<f32> = (0..n).map(|_| next()).collect();
        let b: Vec<f32> = (0..n).map(|_| next()).collect();
        if let Err(e) = check_all(&a, &b) {
            panic!("n={n}: {e}");
        }
    }
}

/// On this machine the SIMD paths must actually be exercised by the tests above: the ISA list
/// has to contain what the CPU supports.
#[cfg(target_arch = "x86_64")]
#[test]
fn available_isas_reflect_cpu_features() {
    let isas = available_isas();
    assert_eq!(isas.first(), Some(&Isa::Scalar));
    let avx2_fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    assert_eq!(isas.contains(&Isa::Avx2Fma), avx2_fma, "{isas:?}");
    if is_x86_feature_detected!("avx512f") {
        assert!(isas.contains(&Isa::Avx512), "{isas:?}");
        assert_eq!(distance::detected_isa(), Isa::Avx512);
    }
    for isa in isas {
        assert_eq!(Kernels::for_isa(isa).map(|k| k.isa), Some(isa));
    }
}

/// Only scalar kernels exist off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[test]
fn available_isas_reflect_cpu_features() {
    assert_eq!(available_isas(), [Isa::Scalar]);
    assert!(Kernels::for_isa(Isa::Avx2Fma).is_none());
    assert!(Kernels::for_isa(Isa::Avx512).is_none());
}

/// Guards against a table silently pointing at the scalar loop: SIMD kernels sum in a different
/// order (with FMA), so on random inputs their results must differ from the scalar loop's in the
/// last bits at least sometimes, while staying within tolerance (checked above).
#[test]
fn simd_kernels_are_not_the_scalar_loop() {
    let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.731).sin() * 7.0).collect();
    for k in all_kernels().into_iter().filter(|k| k.isa != Isa::Scalar) {
        let differing = (1..=100)
            .filter(|&n| {
                let b: Vec<f32> = (0..1000).map(|i| ((i * n) as f32 * 0.113).cos()).collect();
                (k.dot)(&a, &b).to_bits() != scalar::dot(&a, &b).to_bits()
            })
            .count();
        assert!(differing > 0, "{} dot always equals scalar", k.isa.name());
    }
}

/// Release builds use the common prefix when lengths differ (debug builds assert instead).
#[cfg(not(debug_assertions))]
#[test]
fn mismatched_lengths_use_common_prefix_in_release() {
    let a: Vec<f32> = (0..100).map(|i| i as f32 * 0.5 - 20.0).collect();
    let b: Vec<f32> = (0..77).map(|i| 3.0 - i as f32 * 0.25).collect();
    for k in all_kernels() {
        for (x, y) in [(&a[..], &b[..]), (&b[..], &a[..])] {
            let m = x.len().min(y.len());
            let (xp, yp) = (&x[..m], &y[..m]);
            assert_eq!((k.dot)(x, y), (k.dot)(xp, yp), "{:?}", k.isa);
            assert_eq!((k.l2_squared)(x, y), (k.l2_squared)(xp, yp), "{:?}", k.isa);
            assert_eq!(
                (k.cosine_distance)(x, y),
                (k.cosine_distance)(xp, yp),
                "{:?}",
                k.isa
            );
        }
    }
}

/// Debug builds reject mismatched lengths.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "equal lengths")]
fn mismatched_lengths_panic_in_debug() {
    distance::dot(&[1.0, 2.0], &[1.0]);
}
