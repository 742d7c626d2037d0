//! x86-64 SIMD kernels: AVX2+FMA (8 `f32` lanes) and AVX-512F (16 lanes).
//!
//! Each kernel keeps four independent vector accumulators so that consecutive fused
//! multiply-adds do not wait on each other (FMA latency is ~4 cycles with up to two issued per
//! cycle), i.e. it consumes 32 (AVX2) or 64 (AVX-512) floats per iteration. Remainders go through
//! single-vector steps and then a scalar loop (AVX2) or one masked load (AVX-512). All loads are
//! unaligned.
//!
//! Safety design: the `#[target_feature]` implementations are `unsafe fn`s whose only
//! precondition is that the CPU supports the features. Each is wrapped by a private safe function,
//! and those wrappers leave this module only inside the [`Kernels`] tables built by
//! [`avx2_fma_kernels`] / [`avx512_kernels`], which first confirm the features with
//! `is_x86_feature_detected!`. So a wrapper can only ever be called on a CPU that has the features.

use half::f16;

use super::{cosine_from_sums, scalar, Isa, Kernels};

/// Whether this CPU (and OS) supports AVX2 and FMA.
fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Whether this CPU supports F16C (half-precision conversion), which the AVX2 kernels over
/// `f16` vectors need; every AVX2 CPU made so far has it.
fn has_avx2_f16c() -> bool {
    has_avx2_fma() && is_x86_feature_detected!("f16c")
}

/// Whether this CPU (and OS) supports AVX-512F. AVX2, FMA and F16C are checked as well because
/// `target_feature(enable = "avx512f")` implies them (every AVX-512F CPU has them).
fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("f16c") && has_avx2_fma()
}

/// Asks the CPU to start loading the first cache lines of `data` (a hint: never changes results).
#[inline]
pub(super) fn prefetch<T>(data: &[T]) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let ptr = data.as_ptr().cast::<i8>();
    let lines = std::mem::size_of_val(data)
        .div_ceil(64)
        .clamp(1, PREFETCH_MAX_LINES);
    for line in 0..lines {
        // SAFETY: PREFETCHT0 is part of SSE, which every x86-64 CPU has; it never faults, even
        // on an invalid address, and every line prefetched here starts inside the slice.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.wrapping_add(line * 64)) };
    }
}

/// At most this many cache lines are prefetched per call (the hardware prefetcher follows on
/// longer vectors).
const PREFETCH_MAX_LINES: usize = 8;

/// The AVX2+FMA kernel table, or `None` if this CPU lacks AVX2 or FMA.
pub(super) fn avx2_fma_kernels() -> Option<Kernels> {
    has_avx2_fma().then_some(Kernels {
        isa: Isa::Avx2Fma,
        dot: dot_avx2_fma,
        l2_squared: l2_squared_avx2_fma,
        cosine_distance: cosine_distance_avx2_fma,
        dot_f16: if has_avx2_f16c() {
            dot_f16_avx2
        } else {
            scalar::dot_f16
        },
        l2_squared_f16: if has_avx2_f16c() {
            l2_squared_f16_avx2
        } else {
            scalar::l2_squared_f16
        },
    })
}

/// The AVX-512F kernel table, or `None` if this CPU lacks AVX-512F.
pub(super) fn avx512_kernels() -> Option<Kernels> {
    has_avx512().then_some(Kernels {
        isa: Isa::Avx512,
        dot: dot_avx512,
        l2_squared: l2_squared_avx512,
        cosine_distance: cosine_distance_avx512,
        dot_f16: dot_f16_avx512,
        l2_squared_f16: l2_squared_f16_avx512,
    })
}

// ---------------------------------------------------------------------------------------------
// Safe wrappers (only reachable through the tables above).
// ---------------------------------------------------------------------------------------------

/// Defines a private safe wrapper around a `#[target_feature]` kernel.
macro_rules! safe_wrapper {
    ($name:ident => $kernel:path, $detected:ident) => {
        safe_wrapper!($name => $kernel, $detected, f32);
    };
    ($name:ident => $kernel:path, $detected:ident, $stored:ty) => {
        #[doc = concat!("Safe wrapper of [`", stringify!($kernel), "`].")]
        fn $name(a: &[f32], b: &[$stored]) -> f32 {
            debug_assert!($detected());
            // SAFETY: this function is private and only escapes this module inside the kernel
            // table built after runtime detection (`$detected`) confirmed the CPU features the
            // kernel is compiled for.
            unsafe { $kernel(a, b) }
        }
    };
}

safe_wrapper!(dot_avx2_fma => avx2_fma::dot, has_avx2_fma);
safe_wrapper!(l2_squared_avx2_fma => avx2_fma::l2_squared, has_avx2_fma);
safe_wrapper!(cosine_distance_avx2_fma => avx2_fma::cosine_distance, has_avx2_fma);
safe_wrapper!(dot_avx512 => avx512::dot, has_avx512);
safe_wrapper!(l2_squared_avx512 => avx512::l2_squared, has_avx512);
safe_wrapper!(cosine_distance_avx512 => avx512::cosine_distance, has_avx512);
safe_wrapper!(dot_f16_avx2 => avx2_fma::dot_f16, has_avx2_f16c, f16);
safe_wrapper!(l2_squared_f16_avx2 => avx2_fma::l2_squared_f16, has_avx2_f16c, f16);
safe_wrapper!(dot_f16_avx512 => avx512::dot_f16, has_avx512, f16);
safe_wrapper!(l2_squared_f16_avx512 => avx512::l2_squared_f16, has_avx512, f16);

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA
// ---------------------------------------------------------------------------------------------

/// AVX2+FMA implementations (8 lanes, 4 accumulators).
mod avx2_fma {
    use std::arch::x86_64::*;

    use half::f16;

    use super::cosine_from_sums;

    /// Loads `s[at..at + 8]` (unaligned). The slice index is bounds-checked; in the kernels below
    /// the offsets are constants within fixed-size chunks, so the check compiles away.
    #[inline]
    #[target_feature(enable = "avx")]
    fn load(s: &[f32], at: usize) -> __m256 {
        let s = &s[at..at + 8];
        // SAFETY: `s` holds exactly 8 floats, and `_mm256_loadu_ps` has no alignment requirement.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }

    /// Sums the four accumulators pairwise, then the 8 lanes as a balanced tree
    /// (256 → 128 → 64 → 32 bits) rather than one long chain.
    #[inline]
    #[target_feature(enable = "avx")]
    fn reduce(acc: [__m256; 4]) -> f32 {
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Dot product with AVX2+FMA; uses the common prefix if lengths differ.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [_mm256_setzero_ps(); 4];
        let (mut ca, mut cb) = (a.chunks_exact(32), b.chunks_exact(32));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(load(x, 8 * k), load(y, 8 * k), *acc);
            }
        }
        let (mut ca, mut cb) = (
            ca.remainder().chunks_exact(8),
            cb.remainder().chunks_exact(8),
        );
        for (k, (x, y)) in (&mut ca).zip(&mut cb).enumerate() {
            acc[k] = _mm256_fmadd_ps(load(x, 0), load(y, 0), acc[k]);
        }
        let mut sum = reduce(acc);
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            sum += x * y;
        }
        sum
    }

    /// Squared Euclidean distance with AVX2+FMA; uses the common prefix if lengths differ.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [_mm256_setzero_ps(); 4];
        let (mut ca, mut cb) = (a.chunks_exact(32), b.chunks_exact(32));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for (k, acc) in acc.iter_mut().enumerate() {
                let d = _mm256_sub_ps(load(x, 8 * k), load(y, 8 * k));
                *acc = _mm256_fmadd_ps(d, d, *acc);
            }
        }
        let (mut ca, mut cb) = (
            ca.remainder().chunks_exact(8),
            cb.remainder().chunks_exact(8),
        );
        for (k, (x, y)) in (&mut ca).zip(&mut cb).enumerate() {
            let d = _mm256_sub_ps(load(x, 0), load(y, 0));
            acc[k] = _mm256_fmadd_ps(d, d, acc[k]);
        }
        let mut sum = reduce(acc);
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            let d = x - y;
            sum += d * d;
        }
        sum
    }

    /// Cosine distance with AVX2+FMA, computing `a·b`, `|a|²` and `|b|²` in one pass; uses the
    /// common prefix if lengths differ.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut ab = [_mm256_setzero_ps(); 4];
        let mut aa = [_mm256_setzero_ps(); 4];
        let mut bb = [_mm256_setzero_ps(); 4];
        let (mut ca, mut cb) = (a.chunks_exact(32), b.chunks_exact(32));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for k in 0..4 {
                let (vx, vy) = (load(x, 8 * k), load(y, 8 * k));
                ab[k] = _mm256_fmadd_ps(vx, vy, ab[k]);
                aa[k] = _mm256_fmadd_ps(vx, vx, aa[k]);
                bb[k] = _mm256_fmadd_ps(vy, vy, bb[k]);
            }
        }
        let (mut ca, mut cb) = (
            ca.remainder().chunks_exact(8),
            cb.remainder().chunks_exact(8),
        );
        for (k, (x, y)) in (&mut ca).zip(&mut cb).enumerate() {
            let (vx, vy) = (load(x, 0), load(y, 0));
            ab[k] = _mm256_fmadd_ps(vx, vy, ab[k]);
            aa[k] = _mm256_fmadd_ps(vx, vx, aa[k]);
            bb[k] = _mm256_fmadd_ps(vy, vy, bb[k]);
        }
        let (mut sab, mut saa, mut sbb) = (reduce(ab), reduce(aa), reduce(bb));
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            sab += x * y;
            saa += x * x;
            sbb += y * y;
        }
        cosine_from_sums(sab, saa, sbb)
    }

    /// Loads `s[at..at + 8]` half floats (unaligned), widened to `f32`.
    #[inline]
    #[target_feature(enable = "avx,f16c")]
    fn load_f16(s: &[f16], at: usize) -> __m256 {
        let s = &s[at..at + 8];
        // SAFETY: `s` holds exactly 8 half floats (16 bytes; `f16` is a transparent `u16`), and
        // `_mm_loadu_si128` has no alignment requirement.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(s.as_ptr().cast()) })
    }

    /// Dot product of `f32` `a` and half-precision `b` with AVX2+FMA+F16C; uses the common
    /// prefix if lengths differ.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [_mm256_setzero_ps(); 4];
        let (mut ca, mut cb) = (a.chunks_exact(32), b.chunks_exact(32));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(load(x, 8 * k), load_f16(y, 8 * k), *acc);
            }
        }
        let (mut ca, mut cb) = (
            ca.remainder().chunks_exact(8),
            cb.remainder().chunks_exact(8),
        );
        for (k, (x, y)) in (&mut ca).zip(&mut cb).enumerate() {
            acc[k] = _mm256_fmadd_ps(load(x, 0), load_f16(y, 0), acc[k]);
        }
        let mut sum = reduce(acc);
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            sum += x * y.to_f32();
        }
        sum
    }

    /// Squared Euclidean distance between `f32` `a` and half-precision `b` with
    /// AVX2+FMA+F16C; uses the common prefix if lengths differ.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn l2_squared_f16(a: &[f32], b: &[f16]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [_mm256_setzero_ps(); 4];
        let (mut ca, mut cb) = (a.chunks_exact(32), b.chunks_exact(32));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for (k, acc) in acc.iter_mut().enumerate() {
                let d = _mm256_sub_ps(load(x, 8 * k), load_f16(y, 8 * k));
                *acc = _mm256_fmadd_ps(d, d, *acc);
            }
        }
        let (mut ca, mut cb) = (
            ca.remainder().chunks_exact(8),
            cb.remainder().chunks_exact(8),
        );
        for (k, (x, y)) in (&mut ca).zip(&mut cb).enumerate() {
            let d = _mm256_sub_ps(load(x, 0), load_f16(y, 0));
            acc[k] = _mm256_fmadd_ps(d, d, acc[k]);
        }
        let mut sum = reduce(acc);
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            let d = x - y.to_f32();
            sum += d * d;
        }
        sum
    }
}

// ---------------------------------------------------------------------------------------------
// AVX-512F
// ---------------------------------------------------------------------------------------------

/// AVX-512F implementations (16 lanes, 4 accumulators, masked tail).
mod avx512 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::cosine_from_sums;

    /// Loads `s[at..at + 16]` (unaligned). The slice index is bounds-checked; in the kernels below
    /// the offsets are constants within fixed-size chunks, so the check compiles away.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load(s: &[f32], at: usize) -> __m512 {
        let s = &s[at..at + 16];
        // SAFETY: `s` holds exactly 16 floats, and `_mm512_loadu_ps` has no alignment requirement.
        unsafe { _mm512_loadu_ps(s.as_ptr()) }
    }

    /// Loads the first `min(s.len(), 16)` floats of `s` into the low lanes, zeroing the others.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_partial(s: &[f32]) -> __m512 {
        let len = s.len().min(16);
        let mask = ((1u32 << len) - 1) as __mmask16;
        // SAFETY: a masked load only accesses the lanes whose mask bit is set (faults on the
        // others are suppressed), i.e. the first `len <= s.len()` floats of `s`; no alignment is
        // required.
        unsafe { _mm512_maskz_loadu_ps(mask, s.as_ptr()) }
    }

    /// Sums the four accumulators pairwise, then the 16 lanes as a balanced tree
    /// (512 → 256 → 128 → 64 → 32 bits). Uses only AVX-512F (no AVX-512DQ extract).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn reduce(acc: [__m512; 4]) -> f32 {
        let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        let v = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Dot product with AVX-512F; uses the common prefix if lengths differ.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F (and therefore AVX2 and FMA).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [_mm512_setzero_ps(); 4];
        let (mut ca, mut cb) = (a.chunks_exact(64), b.chunks_exact(64));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(load(x, 16 * k), load(y, 16 * k), *acc);
            }
        }
        let (mut ca, mut cb) = (
            ca.remainder().chunks_exact(16),
            cb.remainder().chunks_exact(16),
        );
        for (k, (x, y)) in (&mut ca).zip(&mut cb).enumerate() {
            acc[k] = _mm512_fmadd_ps(load(x, 0), load(y, 0), acc[k]);
        }
        let (x, y) = (load_partial(ca.remainder()), load_partial(cb.remainder()));
        acc[3] = _mm512_fmadd_ps(x, y, acc[3]);
        reduce(acc)
    }

    /// Squared Euclidean distance with AVX-512F; uses the common prefix if lengths differ.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F (and therefore AVX2 and FMA).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [_mm512_setzero_ps(); 4];
        let (mut ca, mut cb) = (a.chunks_exact(64), b.chunks_exact(64));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for (k, acc) in acc.iter_mut().enumerate() {
                let d = _mm512_sub_ps(load(x, 16 * k), load(y, 16 * k));
                *acc = _mm512_fmadd_ps(d, d, *acc);
            }
        }
        let (mut ca, mut cb) = (
            ca.remainder().chunks_exact(16),
            cb.remainder().chunks_exact(16),
        );
        for (k, (x, y)) in (&mut ca).zip(&mut cb).enumerate() {
            let d = _mm512_sub_ps(load(x, 0), load(y, 0));
            acc[k] = _mm512_fmadd_ps(d, d, acc[k]);
        }
        let d = _mm512_sub_ps(load_partial(ca.remainder()), load_partial(cb.remainder()));
        acc[3] = _mm512_fmadd_ps(d, d, acc[3]);
        reduce(acc)
    }

    /// Cosine distance with AVX-512F, computing `a·b`, `|a|²` and `|b|²` in one pass; uses the
    /// common prefix if lengths differ.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F (and therefore AVX2 and FMA).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut ab = [_mm512_setzero_ps(); 4];
        let mut aa = [_mm512_setzero_ps(); 4];
        let mut bb = [_mm512_setzero_ps(); 4];
        let (mut ca, mut cb) = (a.chunks_exact(64), b.chunks_exact(64));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for k in 0..4 {
                let (vx, vy) = (load(x, 16 * k), load(y, 16 * k));
                ab[k] = _mm512_fmadd_ps(vx, vy, ab[k]);
                aa[k] = _mm512_fmadd_ps(vx, vx, aa[k]);
                bb[k] = _mm512_fmadd_ps(vy, vy, bb[k]);
            }
        }
        let (mut ca, mut cb) = (
            ca.remainder().chunks_exact(16),
            cb.remainder().chunks_exact(16),
        );
        for (k, (x, y)) in (&mut ca).zip(&mut cb).enumerate() {
            let (vx, vy) = (load(x, 0), load(y, 0));
            ab[k] = _mm512_fmadd_ps(vx, vy, ab[k]);
            aa[k] = _mm512_fmadd_ps(vx, vx, aa[k]);
            bb[k] = _mm512_fmadd_ps(vy, vy, bb[k]);
        }
        let (vx, vy) = (load_partial(ca.remainder()), load_partial(cb.remainder()));
        ab[3] = _mm512_fmadd_ps(vx, vy, ab[3]);
        aa[3] = _mm512_fmadd_ps(vx, vx, aa[3]);
        bb[3] = _mm512_fmadd_ps(vy, vy, bb[3]);
        cosine_from_sums(reduce(ab), reduce(aa), reduce(bb))
    }

    /// Loads `s[at..at + 16]` half floats (unaligned), widened to `f32`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_f16(s: &[f16], at: usize) -> __m512 {
        let s = &s[at..at + 16];
        // SAFETY: `s` holds exactly 16 half floats (32 bytes; `f16` is a transparent `u16`), and
        // `_mm256_loadu_si256` has no alignment requirement.
        _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(s.as_ptr().cast()) })
    }

    /// Loads the first `min(s.len(), 16)` half floats of `s`, widened, zeroing the other lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load_partial_f16(s: &[f16]) -> __m512 {
        let mut lanes = [f16::ZERO; 16];
        let len = s.len().min(16);
        lanes[..len].copy_from_slice(&s[..len]);
        load_f16(&lanes, 0)
    }

    /// Dot product of `f32` `a` and half-precision `b` with AVX-512F; uses the common prefix
    /// if lengths differ.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [_mm512_setzero_ps(); 4];
        let (mut ca, mut cb) = (a.chunks_exact(64), b.chunks_exact(64));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for (k, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(load(x, 16 * k), load_f16(y, 16 * k), *acc);
            }
        }
        let (mut ca, mut cb) = (
            ca.remainder().chunks_exact(16),
            cb.remainder().chunks_exact(16),
        );
        for (k, (x, y)) in (&mut ca).zip(&mut cb).enumerate() {
            acc[k] = _mm512_fmadd_ps(load(x, 0), load_f16(y, 0), acc[k]);
        }
        let (x, y) = (
            load_partial(ca.remainder()),
            load_partial_f16(cb.remainder()),
        );
        acc[3] = _mm512_fmadd_ps(x, y, acc[3]);
        reduce(acc)
    }

    /// Squared Euclidean distance between `f32` `a` and half-precision `b` with AVX-512F; uses
    /// the common prefix if lengths differ.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn l2_squared_f16(a: &[f32], b: &[f16]) -> f32 {
        debug_assert_eq!(a.len(), b.len(), "distance kernels need equal lengths");
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [_mm512_setzero_ps(); 4];
        let (mut ca, mut cb) = (a.chunks_exact(64), b.chunks_exact(64));
        for (x, y) in (&mut ca).zip(&mut cb) {
            for (k, acc) in acc.iter_mut().enumerate() {
                let d = _mm512_sub_ps(load(x, 16 * k), load_f16(y, 16 * k));
                *acc = _mm512_fmadd_ps(d, d, *acc);
            }
        }
        let (mut ca, mut cb) = (
            ca.remainder().chunks_exact(16),
            cb.remainder().chunks_exact(16),
        );
        for (k, (x, y)) in (&mut ca).zip(&mut cb).enumerate() {
            let d = _mm512_sub_ps(load(x, 0), load_f16(y, 0));
            acc[k] = _mm512_fmadd_ps(d, d, acc[k]);
        }
        let d = _mm512_sub_ps(
            load_partial(ca.remainder()),
            load_partial_f16(cb.remainder()),
        );
        acc[3] = _mm512_fmadd_ps(d, d, acc[3]);
        reduce(acc)
    }
}
