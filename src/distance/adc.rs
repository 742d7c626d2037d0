//! Asymmetric distance computation (ADC) for product-quantised codes: the lookup-table
//! accumulation kernel, and the kernels that build the tables.
//!
//! A query's ADC table holds `m × 256` floats (one row of 256 per sub-space, see
//! [`crate::index::pq::ProductQuantizer::l2_table`]); the distance to a code of `m` bytes is
//! `Σ_j table[j * 256 + code[j]]`. [`adc_scan`] computes it for a run of codes, dispatching once
//! (cached) to an AVX-512F, AVX2 or scalar kernel among those the CPU supports, like the other
//! distance kernels — except that the choice is made by timing (see [`adc_isa`]), because
//! gathers are slower than the scalar loop on some CPUs.
//!
//! The SIMD kernels process 16 (AVX-512F) or 8 (AVX2) codes at a time, one code per lane: a
//! 32-bit gather fetches four consecutive code bytes of every lane at once, then for each of those
//! sub-spaces the table entries are gathered and added. Each lane adds its entries in sub-space
//! order starting from 0, exactly like the scalar loop, so **every kernel returns bit-identical
//! results** (search results do not depend on the CPU). The codes that do not fill a whole group
//! of lanes go through the scalar loop.
//!
//! Shape contract (checked by every kernel, `debug_assert!`ed): `table.len() >= m × 256` and
//! `codes.len() >= out.len() × m`. With fewer codes, only the complete codes are scored and the
//! remaining outputs are set to `f32::INFINITY` (so they rank last); with a shorter table, only
//! the sub-spaces it covers completely are summed. Nothing is ever read out of bounds and no
//! input makes a kernel panic in release builds.
//!
//! Tables are built by [`l2_squared_transposed`] / [`dot_transposed`]: one short vector (a
//! sub-vector of the query) against all 256 centroids of a sub-space stored dimension-major,
//! vectorised across centroids (AVX2 when available) — also the k-means assignment kernel for
//! short vectors. They too are bit-identical to the scalar reference on every CPU.

use std::sync::OnceLock;
use std::time::Instant;

use super::Isa;

/// Entries per sub-space in an ADC table (8-bit codes).
pub const KSUB: usize = 256;

/// The signature of an ADC kernel: `(table, m, codes, out)`, see [`adc_scan`].
pub type AdcFn = fn(&[f32], usize, &[u8], &mut [f32]);

/// For each of the `out.len()` codes in `codes` (row-major, `m` bytes each),
/// `out[i] = Σ_j table[j * 256 + codes[i * m + j]]`, with the fastest kernel for this CPU
/// (chosen once and cached, see [`adc_isa`]). `m == 0` gives zeros.
///
/// Requires `table.len() >= m × 256` and `codes.len() >= out.len() × m`; see the module
/// documentation for what happens otherwise. Results are bit-identical to [`adc_scan_scalar`].
pub fn adc_scan(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
    best().1(table, m, codes, out)
}

/// The ISA [`adc_scan`] runs on, chosen once on first use.
///
/// Gathers are fast on some CPUs and slow on others (on AMD Zen 4 the gather kernels run at about
/// half the speed of the scalar loop, and Intel's 2023 "Downfall" microcode slowed gathers too),
/// so feature detection alone cannot pick the kernel. Instead the kernels this CPU supports are
/// timed once on a small synthetic scan (m = 16, 4096 codes; well under a millisecond), and a
/// SIMD kernel is chosen only if it beats the scalar loop by more than 10%. Since every kernel
/// returns bit-identical results, the choice affects speed only, never results.
pub fn adc_isa() -> Isa {
    best().0
}

/// The chosen kernel and its ISA.
fn best() -> &'static (Isa, AdcFn) {
    static BEST: OnceLock<(Isa, AdcFn)> = OnceLock::new();
    BEST.get_or_init(calibrate)
}

/// Times each available kernel on a synthetic scan and returns the fastest, preferring the
/// scalar loop unless a SIMD kernel is more than 10% faster.
fn calibrate() -> (Isa, AdcFn) {
    const M: usize = 16;
    const CODES: usize = 4096;
    const ROUNDS: usize = 5;
    let scalar: (Isa, AdcFn) = (Isa::Scalar, adc_scan_scalar);
    let simd: Vec<(Isa, AdcFn)> = [Isa::Avx2Fma, Isa::Avx512]
        .into_iter()
        .filter_map(|isa| adc_scan_for(isa).map(|f| (isa, f)))
        .collect();
    if simd.is_empty() {
        return scalar;
    }
    let mut state = 0x9e37_79b9u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let table: Vec<f32> = (0..M * KSUB).map(|_| (next() % 4096) as f32).collect();
    let codes: Vec<u8> = (0..M * CODES).map(|_| next() as u8).collect();
    let mut out = vec![0f32; CODES];
    let mut time = |f: AdcFn| {
        f(&table, M, &codes, &mut out); // Warm up caches and branch predictors.
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                f(&table, M, &codes, &mut out);
                std::hint::black_box(&mut out);
                start.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let scalar_time = time(scalar.1);
    let mut chosen = (scalar, scalar_time.mul_f64(0.9));
    for candidate in simd {
        let t = time(candidate.1);
        if t < chosen.1 {
            chosen = (candidate, t);
        }
    }
    chosen.0
}

/// The kernel for an explicit ISA if this CPU supports it (for tests and benches); the
/// [`Isa::Scalar`] kernel is always available. Every returned kernel is safe to call with any
/// input and returns the same results as [`adc_scan_scalar`].
pub fn adc_scan_for(isa: Isa) -> Option<AdcFn> {
    match isa {
        Isa::Scalar => Some(adc_scan_scalar),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => x86::avx2_kernel(),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::avx512_kernel(),
        #[cfg(not(target_arch = "x86_64"))]
        Isa::Avx2Fma | Isa::Avx512 => None,
    }
}

/// The scalar reference of [`adc_scan`]: one sequential `f32` sum per code, in sub-space order.
pub fn adc_scan_scalar(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
    check_shape(table, m, codes, out);
    if m == 0 {
        out.fill(0.0);
        return;
    }
    let n = complete_codes(m, codes, out);
    scalar_kernel(table, m, &codes[..n * m], &mut out[..n]);
    out[n..].fill(f32::INFINITY);
}

/// `debug_assert!`s the shape contract.
#[inline]
fn check_shape(table: &[f32], m: usize, codes: &[u8], out: &[f32]) {
    debug_assert!(
        m.checked_mul(KSUB).is_some_and(|len| table.len() >= len),
        "ADC table holds {} floats, fewer than m × 256 = {m} × 256",
        table.len()
    );
    debug_assert!(
        out.len()
            .checked_mul(m)
            .is_some_and(|len| codes.len() >= len),
        "{} code bytes cannot hold {} codes of {m} bytes",
        codes.len(),
        out.len()
    );
}

/// How many of the `out.len()` codes are complete in `codes` (`m > 0`).
#[inline]
fn complete_codes(m: usize, codes: &[u8], out: &[f32]) -> usize {
    out.len().min(codes.len() / m)
}

/// The scalar loop on `out.len()` codes of `m > 0` bytes (`codes` holds at least that many); sums
/// the sub-spaces `table` covers completely.
#[inline]
fn scalar_kernel(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
    for (o, code) in out.iter_mut().zip(codes.chunks_exact(m)) {
        let mut sum = 0.0f32;
        for (row, &c) in table.chunks_exact(KSUB).zip(code) {
            sum += row[usize::from(c)];
        }
        *o = sum;
    }
}

// ---------------------------------------------------------------------------------------------
// Table kernels: one short vector against many centroids stored dimension-major.
// ---------------------------------------------------------------------------------------------

/// The signature of a transposed-centroid kernel: `(x, centroids_t, out)`, see
/// [`l2_squared_transposed`].
type TransposedFn = fn(&[f32], &[f32], &mut [f32]);

/// The table kernels of one ISA.
#[derive(Clone, Copy)]
struct TableKernels {
    l2: TransposedFn,
    dot: TransposedFn,
}

/// The table kernels for this CPU (AVX2 if available, else the portable loop), chosen once.
fn table_kernels() -> &'static TableKernels {
    static TABLE: OnceLock<TableKernels> = OnceLock::new();
    TABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if let Some(kernels) = x86::avx2_table_kernels() {
            return kernels;
        }
        TableKernels {
            l2: l2_transposed_portable,
            dot: dot_transposed_portable,
        }
    })
}

/// Squared L2 distances from `x` to the `k = out.len()` centroids of `centroids_t`, stored
/// dimension-major (`centroids_t[d * k + c]` is coordinate `d` of centroid `c`):
/// `out[c] = Σ_d (x[d] − centroids_t[d * k + c])²`.
///
/// This is how ADC tables ([`crate::index::pq::ProductQuantizer::l2_table`]) and nearest-centroid
/// searches over short vectors are computed: the loop runs across centroids, 8 at a time with
/// AVX2, instead of reducing one short vector at a time. Each `out[c]` is summed in coordinate
/// order with separate multiplies and adds, exactly like [`super::scalar::l2_squared`] of `x`
/// and centroid `c`, so the result is bit-identical to it on every CPU.
///
/// `centroids_t.len()` should be `x.len() × k` (`debug_assert!`ed); otherwise only the
/// coordinates both cover completely are used.
pub fn l2_squared_transposed(x: &[f32], centroids_t: &[f32], out: &mut [f32]) {
    (table_kernels().l2)(x, centroids_t, out)
}

/// Inner products of `x` with the `k = out.len()` centroids of `centroids_t` (dimension-major,
/// as for [`l2_squared_transposed`]): `out[c] = Σ_d x[d] · centroids_t[d * k + c]`, summed in
/// coordinate order (bit-identical to [`super::scalar::dot`]). Same length contract.
pub fn dot_transposed(x: &[f32], centroids_t: &[f32], out: &mut [f32]) {
    (table_kernels().dot)(x, centroids_t, out)
}

/// The coordinates of `x` that `centroids_t` covers for `k` centroids, and the rows to use.
#[inline(always)]
fn transposed_rows<'a>(x: &'a [f32], centroids_t: &'a [f32], k: usize) -> (&'a [f32], &'a [f32]) {
    debug_assert_eq!(
        Some(centroids_t.len()),
        x.len().checked_mul(k),
        "transposed centroids are not dim × k"
    );
    let dims = centroids_t
        .len()
        .checked_div(k)
        .map_or(0, |rows| rows.min(x.len()));
    (&x[..dims], &centroids_t[..dims * k])
}

/// Body of [`l2_squared_transposed`], inlined into each ISA's version (LLVM vectorises the inner
/// loop across centroids; it neither reassociates nor contracts float operations, so every
/// version computes the same values).
#[inline(always)]
fn l2_transposed_body(x: &[f32], centroids_t: &[f32], out: &mut [f32]) {
    let k = out.len();
    let (x, rows) = transposed_rows(x, centroids_t, k);
    out.fill(0.0);
    if k == 0 {
        return;
    }
    for (&xd, row) in x.iter().zip(rows.chunks_exact(k)) {
        for (o, &c) in out.iter_mut().zip(row) {
            let d = xd - c;
            *o += d * d;
        }
    }
}

/// Body of [`dot_transposed`] (see [`l2_transposed_body`]).
#[inline(always)]
fn dot_transposed_body(x: &[f32], centroids_t: &[f32], out: &mut [f32]) {
    let k = out.len();
    let (x, rows) = transposed_rows(x, centroids_t, k);
    out.fill(0.0);
    if k == 0 {
        return;
    }
    for (&xd, row) in x.iter().zip(rows.chunks_exact(k)) {
        for (o, &c) in out.iter_mut().zip(row) {
            *o += xd * c;
        }
    }
}

/// [`l2_squared_transposed`] for the baseline target.
fn l2_transposed_portable(x: &[f32], centroids_t: &[f32], out: &mut [f32]) {
    l2_transposed_body(x, centroids_t, out)
}

/// [`dot_transposed`] for the baseline target.
fn dot_transposed_portable(x: &[f32], centroids_t: &[f32], out: &mut [f32]) {
    dot_transposed_body(x, centroids_t, out)
}

/// x86-64 kernels: ADC gathers and the AVX2 builds of the table kernels.
///
/// Safety design (as in `distance::x86`): the `#[target_feature]` implementations are
/// `unsafe fn`s whose only precondition is that the CPU supports the features — they validate
/// the shapes themselves. Each is wrapped by a private safe function that only leaves this module
/// through [`avx2_kernel`] / [`avx512_kernel`] / [`avx2_table_kernels`], after
/// `is_x86_feature_detected!` confirmed the features.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{
        check_shape, complete_codes, dot_transposed_body, l2_transposed_body, scalar_kernel, AdcFn,
        TableKernels, KSUB,
    };

    /// The SIMD kernels need `16 × m` to fit an `i32` gather offset; larger `m` (never seen in
    /// practice) goes through the scalar loop.
    const MAX_SIMD_M: usize = (i32::MAX as usize) / 32;

    /// Whether this CPU supports AVX2 and FMA (the [`super::Isa::Avx2Fma`] level; the kernel
    /// itself needs only AVX2).
    fn has_avx2_fma() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// Whether this CPU supports AVX-512F (and AVX2+FMA, which every AVX-512F CPU has).
    fn has_avx512() -> bool {
        is_x86_feature_detected!("avx512f") && has_avx2_fma()
    }

    /// The AVX2 kernel, or `None` if this CPU lacks AVX2 or FMA.
    pub(super) fn avx2_kernel() -> Option<AdcFn> {
        has_avx2_fma().then_some(adc_scan_avx2 as AdcFn)
    }

    /// The AVX-512F kernel, or `None` if this CPU lacks AVX-512F.
    pub(super) fn avx512_kernel() -> Option<AdcFn> {
        has_avx512().then_some(adc_scan_avx512 as AdcFn)
    }

    /// The AVX2 table kernels, or `None` if this CPU lacks AVX2 or FMA.
    pub(super) fn avx2_table_kernels() -> Option<TableKernels> {
        has_avx2_fma().then_some(TableKernels {
            l2: l2_transposed_avx2,
            dot: dot_transposed_avx2,
        })
    }

    /// [`super::l2_squared_transposed`] compiled for AVX2.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn l2_transposed_avx2_impl(x: &[f32], centroids_t: &[f32], out: &mut [f32]) {
        l2_transposed_body(x, centroids_t, out)
    }

    /// [`super::dot_transposed`] compiled for AVX2.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_transposed_avx2_impl(x: &[f32], centroids_t: &[f32], out: &mut [f32]) {
        dot_transposed_body(x, centroids_t, out)
    }

    /// Safe wrapper of [`l2_transposed_avx2_impl`].
    fn l2_transposed_avx2(x: &[f32], centroids_t: &[f32], out: &mut [f32]) {
        debug_assert!(has_avx2_fma());
        // SAFETY: this function is private and only leaves this module inside the table built by
        // `avx2_table_kernels` after runtime detection confirmed AVX2 and FMA.
        unsafe { l2_transposed_avx2_impl(x, centroids_t, out) }
    }

    /// Safe wrapper of [`dot_transposed_avx2_impl`].
    fn dot_transposed_avx2(x: &[f32], centroids_t: &[f32], out: &mut [f32]) {
        debug_assert!(has_avx2_fma());
        // SAFETY: this function is private and only leaves this module inside the table built by
        // `avx2_table_kernels` after runtime detection confirmed AVX2 and FMA.
        unsafe { dot_transposed_avx2_impl(x, centroids_t, out) }
    }

    /// Safe wrapper of [`avx2::adc_scan`].
    fn adc_scan_avx2(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
        debug_assert!(has_avx2_fma());
        // SAFETY: this function is private and only leaves this module through `avx2_kernel`,
        // which returns it only after runtime detection confirmed AVX2 (and FMA); the kernel
        // has no other precondition.
        unsafe { avx2::adc_scan(table, m, codes, out) }
    }

    /// Safe wrapper of [`avx512::adc_scan`].
    fn adc_scan_avx512(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) {
        debug_assert!(has_avx512());
        // SAFETY: this function is private and only leaves this module through
        // `avx512_kernel`, which returns it only after runtime detection confirmed AVX-512F;
        // the kernel has no other precondition.
        unsafe { avx512::adc_scan(table, m, codes, out) }
    }

    /// Validates the shape for the SIMD path: `Some(n)` complete codes when `4 <= m <=
    /// MAX_SIMD_M` and the table covers all `m` sub-spaces; `None` sends the call to the scalar
    /// reference (which handles every other case). Also sets the outputs of missing codes to
    /// infinity.
    #[inline]
    fn simd_shape(table: &[f32], m: usize, codes: &[u8], out: &mut [f32]) -> Option<usize> {
        check_shape(table, m, codes, out);
        if !(4..=MAX_SIMD_M).contains(&m) || table.len() < m * KSUB {
            return None;
        }
        let n = complete_codes(m, codes, out);
        out[n..].fill(f32::INFINITY);
        Some(n)
    }

    /// AVX2 implementation: 8 codes per step.
    mod avx2 {
        use std::arch::x86_64::*;

        use super::{scalar_kernel, simd_shape, KSUB};

        /// ADC accumulation with AVX2 gathers; any shape (the scalar reference handles the ones
        /// the gathers do not).
        ///
        /// # Safety
        ///
        /// The CPU must support AVX2.
        #[target_feature(enable = "avx2")]
        pub(in super::super) unsafe fn adc_scan(
            table: &[f32],
            m: usize,
            codes: &[u8],
            out: &mut [f32],
        ) {
            let Some(n) = simd_shape(table, m, codes, out) else {
                return super::super::adc_scan_scalar(table, m, codes, out);
            };
            // From here: 4 <= m <= MAX_SIMD_M, table.len() >= m * 256, codes.len() >= n * m.
            let (codes, out) = (&codes[..n * m], &mut out[..n]);
            const LANES: usize = 8;
            // Byte offset of lane i's code within a group: i * m (fits i32: m <= MAX_SIMD_M).
            let lane_offsets = _mm256_mullo_epi32(
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                _mm256_set1_epi32(m as i32),
            );
            let low_byte = _mm256_set1_epi32(0xff);
            let tables = table.as_ptr();
            let mut groups_out = out.chunks_exact_mut(LANES);
            let mut groups = codes.chunks_exact(LANES * m);
            for (group_out, group) in (&mut groups_out).zip(&mut groups) {
                let base = group.as_ptr();
                let mut acc = _mm256_setzero_ps();
                let mut j = 0;
                while j < m {
                    // The 4 code bytes j0..j0 + 4 of every lane; j0 = min(j, m - 4) keeps the
                    // read inside each code (the last step re-reads bytes already summed).
                    let j0 = j.min(m - 4);
                    // SAFETY: lane i reads the 4 bytes `group[i * m + j0 .. i * m + j0 + 4]`,
                    // inside `group` (i < 8, j0 + 4 <= m, group.len() == 8 * m); `base + j0`
                    // is inside `group` too; gathers need no alignment.
                    let words =
                        unsafe { _mm256_i32gather_epi32::<1>(base.add(j0).cast(), lane_offsets) };
                    for t in j - j0..4 {
                        let shift = _mm256_set1_epi32(8 * t as i32);
                        let idx = _mm256_and_si256(_mm256_srlv_epi32(words, shift), low_byte);
                        // SAFETY: every lane of `idx` is in 0..256 and sub-space j0 + t < m, so
                        // the gathered floats lie in `table[(j0 + t) * 256..][..256]`, within
                        // `table.len() >= m * 256`.
                        let values =
                            unsafe { _mm256_i32gather_ps::<4>(tables.add((j0 + t) * KSUB), idx) };
                        acc = _mm256_add_ps(acc, values);
                    }
                    j = j0 + 4;
                }
                // SAFETY: `group_out` holds exactly 8 floats; no alignment is required.
                unsafe { _mm256_storeu_ps(group_out.as_mut_ptr(), acc) };
            }
            scalar_kernel(table, m, groups.remainder(), groups_out.into_remainder());
        }
    }

    /// AVX-512F implementation: 16 codes per step.
    mod avx512 {
        use std::arch::x86_64::*;

        use super::{scalar_kernel, simd_shape, KSUB};

        /// ADC accumulation with AVX-512F gathers; any shape (the scalar reference handles the
        /// ones the gathers do not).
        ///
        /// # Safety
        ///
        /// The CPU must support AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub(in super::super) unsafe fn adc_scan(
            table: &[f32],
            m: usize,
            codes: &[u8],
            out: &mut [f32],
        ) {
            let Some(n) = simd_shape(table, m, codes, out) else {
                return super::super::adc_scan_scalar(table, m, codes, out);
            };
            // From here: 4 <= m <= MAX_SIMD_M, table.len() >= m * 256, codes.len() >= n * m.
            let (codes, out) = (&codes[..n * m], &mut out[..n]);
            const LANES: usize = 16;
            // Byte offset of lane i's code within a group: i * m (fits i32: m <= MAX_SIMD_M).
            let lane_offsets = _mm512_mullo_epi32(
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                _mm512_set1_epi32(m as i32),
            );
            let low_byte = _mm512_set1_epi32(0xff);
            let tables = table.as_ptr();
            let mut groups_out = out.chunks_exact_mut(LANES);
            let mut groups = codes.chunks_exact(LANES * m);
            for (group_out, group) in (&mut groups_out).zip(&mut groups) {
                let base = group.as_ptr();
                let mut acc = _mm512_setzero_ps();
                let mut j = 0;
                while j < m {
                    // The 4 code bytes j0..j0 + 4 of every lane; j0 = min(j, m - 4) keeps the
                    // read inside each code (the last step re-reads bytes already summed).
                    let j0 = j.min(m - 4);
                    // SAFETY: lane i reads the 4 bytes `group[i * m + j0 .. i * m + j0 + 4]`,
                    // inside `group` (i < 16, j0 + 4 <= m, group.len() == 16 * m); `base + j0`
                    // is inside `group` too; gathers need no alignment.
                    let words =
                        unsafe { _mm512_i32gather_epi32::<1>(lane_offsets, base.add(j0).cast()) };
                    for t in j - j0..4 {
                        let shift = _mm512_set1_epi32(8 * t as i32);
                        let idx = _mm512_and_si512(_mm512_srlv_epi32(words, shift), low_byte);
                        // SAFETY: every lane of `idx` is in 0..256 and sub-space j0 + t < m, so
                        // the gathered floats lie in `table[(j0 + t) * 256..][..256]`, within
                        // `table.len() >= m * 256`.
                        let values =
                            unsafe { _mm512_i32gather_ps::<4>(idx, tables.add((j0 + t) * KSUB)) };
                        acc = _mm512_add_ps(acc, values);
                    }
                    j = j0 + 4;
                }
                // SAFETY: `group_out` holds exactly 16 floats; no alignment is required.
                unsafe { _mm512_storeu_ps(group_out.as_mut_ptr(), acc) };
            }
            scalar_kernel(table, m, groups.remainder(), groups_out.into_remainder());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::available_isas;

    fn kernels() -> Vec<(Isa, AdcFn)> {
        available_isas()
            .into_iter()
            .map(|isa| {
                (
                    isa,
                    adc_scan_for(isa).expect("available ISA has an ADC kernel"),
                )
            })
            .collect()
    }

    /// A table whose entries are distinct and a set of codes, deterministic.
    fn sample(m: usize, n: usize, seed: u32) -> (Vec<f32>, Vec<u8>) {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        let table = (0..m * KSUB)
            .map(|_| (next() % 10_000) as f32 * 0.37 - 1000.0)
            .collect();
        let codes = (0..n * m).map(|_| next() as u8).collect();
        (table, codes)
    }

    #[test]
    fn every_kernel_is_bit_identical_to_scalar() {
        for m in 0..=40 {
            for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100] {
                let (table, codes) = sample(m, n, (m * 1000 + n) as u32);
                let mut want = vec![0f32; n];
                adc_scan_scalar(&table, m, &codes, &mut want);
                for (i, w) in want.iter().enumerate() {
                    let direct: f32 = (0..m)
                        .map(|j| table[j * KSUB + usize::from(codes[i * m + j])])
                        .fold(0.0, |a, b| a + b);
                    assert_eq!(w.to_bits(), direct.to_bits());
                }
                for (isa, f) in kernels() {
                    let mut got = vec![f32::NAN; n];
                    f(&table, m, &codes, &mut got);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa:?} m={m} n={n}: {got:?} vs {want:?}");
                }
                let mut got = vec![f32::NAN; n];
                adc_scan(&table, m, &codes, &mut got);
                assert!(got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
        assert!(available_isas().contains(&adc_isa()));
    }

    /// Every build of the table kernels this CPU runs.
    fn table_builds() -> Vec<(&'static str, TableKernels)> {
        let mut builds = vec![(
            "portable",
            TableKernels {
                l2: l2_transposed_portable,
                dot: dot_transposed_portable,
            },
        )];
        #[cfg(target_arch = "x86_64")]
        builds.extend(x86::avx2_table_kernels().map(|k| ("avx2", k)));
        builds
    }

    #[test]
    fn transposed_kernels_are_bit_identical_to_the_scalar_reference() {
        let mut state = 0x1234_5678u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 20_000) as f32 * 0.001 - 10.0
        };
        for dim in [0, 1, 2, 3, 5, 8, 16, 33] {
            for k in [0, 1, 7, 8, 17, 256] {
                let x: Vec<f32> = (0..dim).map(|_| next()).collect();
                let rows: Vec<f32> = (0..k * dim).map(|_| next()).collect();
                let mut t = vec![0f32; k * dim];
                for c in 0..k {
                    for d in 0..dim {
                        t[d * k + c] = rows[c * dim + d];
                    }
                }
                let want_l2: Vec<u32> = rows
                    .chunks_exact(dim.max(1))
                    .take(k)
                    .map(|r| crate::distance::scalar::l2_squared(&x, &r[..dim]).to_bits())
                    .collect();
                let want_dot: Vec<u32> = rows
                    .chunks_exact(dim.max(1))
                    .take(k)
                    .map(|r| crate::distance::scalar::dot(&x, &r[..dim]).to_bits())
                    .collect();
                let want_l2 = if dim == 0 { vec![0; k] } else { want_l2 };
                let want_dot = if dim == 0 { vec![0; k] } else { want_dot };
                let mut builds = table_builds();
                builds.push((
                    "dispatched",
                    TableKernels {
                        l2: l2_squared_transposed,
                        dot: dot_transposed,
                    },
                ));
                for (name, kernels) in builds {
                    let mut out = vec![f32::NAN; k];
                    (kernels.l2)(&x, &t, &mut out);
                    let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want_l2, "{name} l2 dim={dim} k={k}");
                    (kernels.dot)(&x, &t, &mut out);
                    let got: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want_dot, "{name} dot dim={dim} k={k}");
                }
            }
        }
    }

    #[test]
    fn transposed_kernels_use_the_common_prefix_in_release() {
        if cfg!(debug_assertions) {
            return; // The debug_asserts fire by design.
        }
        // 3 centroids of 2 coordinates stored, but x has 4: only 2 coordinates are used.
        let t = [1.0f32, 2.0, 3.0, 0.0, 0.0, 1.0];
        for (name, kernels) in table_builds() {
            let mut out = [f32::NAN; 3];
            (kernels.l2)(&[1.0, 1.0, 9.0, 9.0], &t, &mut out);
            assert_eq!(out, [1.0, 2.0, 4.0], "{name}");
            (kernels.dot)(&[1.0, 1.0, 9.0, 9.0], &t[..5], &mut out);
            assert_eq!(out, [1.0, 2.0, 3.0], "{name}"); // 5 floats: one complete row of 3
            let mut empty: [f32; 0] = [];
            (kernels.l2)(&[1.0], &t, &mut empty);
        }
    }

    #[test]
    fn extra_code_bytes_are_ignored() {
        let (table, codes) = sample(8, 20, 3);
        let mut want = vec![0f32; 19];
        adc_scan_scalar(&table, 8, &codes[..19 * 8], &mut want);
        for (isa, f) in kernels() {
            let mut got = vec![0f32; 19];
            f(&table, 8, &codes, &mut got);
            assert_eq!(got, want, "{isa:?}");
        }
    }

    #[test]
    fn short_inputs_never_read_out_of_bounds_in_release() {
        if cfg!(debug_assertions) {
            return; // The debug_asserts fire by design.
        }
        let (table, codes) = sample(8, 20, 5);
        for (isa, f) in kernels() {
            // Too few codes: the complete ones are scored, the rest are infinite.
            let mut out = vec![0f32; 20];
            f(&table, 8, &codes[..17 * 8 + 3], &mut out);
            let mut want = vec![0f32; 17];
            adc_scan_scalar(&table, 8, &codes[..17 * 8], &mut want);
            assert_eq!(out[..17], want[..], "{isa:?}");
            assert!(out[17..].iter().all(|x| *x == f32::INFINITY), "{isa:?}");
            // Short table: only the complete sub-spaces are summed.
            let mut out = vec![0f32; 20];
            f(&table[..5 * KSUB + 10], 8, &codes, &mut out);
            for (i, o) in out.iter().enumerate() {
                let want: f32 = (0..5)
                    .map(|j| table[j * KSUB + usize::from(codes[i * 8 + j])])
                    .fold(0.0, |a, b| a + b);
                assert_eq!(*o, want, "{isa:?}");
            }
            let mut out = vec![1f32; 3];
            f(&[], 0, &[], &mut out);
            assert_eq!(out, [0.0; 3]);
            f(&[], 4, &[], &mut out);
            assert!(out.iter().all(|x| *x == f32::INFINITY));
        }
    }
}
