//! Property tests of the product-quantisation kernels: every ADC kernel available on this CPU
//! agrees with the scalar reference for random shapes (including code counts that leave SIMD
//! tails), and ADC over a trained quantiser's lookup tables gives the distances to the decoded
//! vectors.
//!
//! The ADC kernels add each code's table entries in sub-space order starting from 0, whatever the
//! ISA, so they are in fact bit-identical; the tests only require a relative 1e-5 so that a future
//! kernel summing in another order still passes.
//!
//! The table kernels that build ADC tables (`l2_squared_transposed`, `dot_transposed`) must
//! match the scalar reference bit for bit.
//!
//! `cargo test --release --test pq_kernels -- --ignored --nocapture` prints a rough SIMD/scalar
//! timing of the ADC scan (no assertion).

use std::sync::OnceLock;
use std::time::Instant;

use proptest::collection::vec;
use proptest::prelude::*;
use quiverdb::distance::adc::{
    adc_isa, adc_scan, adc_scan_for, adc_scan_scalar, dot_transposed, l2_squared_transposed, AdcFn,
};
use quiverdb::distance::{available_isas, dot, l2_squared, scalar, Isa};
use quiverdb::index::pq::ProductQuantizer;

const REL: f32 = 1e-5;

/// The ADC kernels of every ISA this CPU supports.
fn all_kernels() -> Vec<(Isa, AdcFn)> {
    available_isas()
        .into_iter()
        .map(|isa| {
            (
                isa,
                adc_scan_for(isa).expect("an available ISA has an ADC kernel"),
            )
        })
        .collect()
}

/// A random ADC problem: `m` in 1..=64, 0..=100 codes, a table of `m × 256` entries.
fn problem() -> impl Strategy<Value = (usize, Vec<f32>, Vec<u8>, usize)> {
    (1usize..=64, 0usize..=100).prop_flat_map(|(m, n)| {
        (
            Just(m),
            vec(-100.0f32..100.0, m * 256),
            vec(any::<u8>(), n * m),
            Just(n),
        )
    })
}

/// `|got − want| <= REL · Σ|terms|` for each code (the sum's rounding scale).
fn check_against_scalar(
    table: &[f32],
    m: usize,
    codes: &[u8],
    n: usize,
    got: &[f32],
    want: &[f32],
) -> Result<(), TestCaseError> {
    for i in 0..n {
        let scale: f32 = (0..m)
            .map(|j| table[j * 256 + usize::from(codes[i * m + j])].abs())
            .sum();
        prop_assert!(
            (got[i] - want[i]).abs() <= REL * scale.max(f32::MIN_POSITIVE),
            "code {i} of {n}, m={m}: {} vs scalar {}",
            got[i],
            want[i]
        );
    }
    Ok(())
}

/// Quantisers trained once on random data (training is the slow part): several `m`, `dim` 48.
fn quantisers() -> &'static (Vec<f32>, Vec<ProductQuantizer>) {
    static PQS: OnceLock<(Vec<f32>, Vec<ProductQuantizer>)> = OnceLock::new();
    PQS.get_or_init(|| {
        let dim = 48;
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let data: Vec<f32> = (0..600 * dim)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                // A little structure (per-row offset) plus noise.
                ((i / dim) % 17) as f32 * 0.3 + noise * 4.0
            })
            .collect();
        let pqs = [1, 3, 4, 6, 8, 12, 16, 24, 48]
            .iter()
            .map(|&m| ProductQuantizer::train(&data, dim, m, 7).expect("training succeeds"))
            .collect();
        (data, pqs)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every available kernel (and the dispatching `adc_scan`) matches the scalar reference.
    #[test]
    fn every_isa_matches_scalar((m, table, codes, n) in problem()) {
        let mut want = vec![f32::NAN; n];
        adc_scan_scalar(&table, m, &codes, &mut want);
        for (isa, kernel) in all_kernels() {
            let mut got = vec![f32::NAN; n];
            kernel(&table, m, &codes, &mut got);
            check_against_scalar(&table, m, &codes, n, &got, &want)
                .map_err(|e| TestCaseError::fail(format!("{}: {e}", isa.name())))?;
        }
        let mut got = vec![f32::NAN; n];
        adc_scan(&table, m, &codes, &mut got);
        check_against_scalar(&table, m, &codes, n, &got, &want)?;
    }

    /// The table kernels (one vector against dimension-major centroids) give exactly the scalar
    /// reference's distances and inner products.
    #[test]
    fn transposed_kernels_match_scalar_exactly(
        (dim, k, x, rows) in (1usize..=40, 0usize..=300).prop_flat_map(|(dim, k)| {
            (Just(dim), Just(k), vec(-50.0f32..50.0, dim), vec(-50.0f32..50.0, dim * k))
        })
    ) {
        let mut t = vec![0f32; dim * k];
        for c in 0..k {
            for d in 0..dim {
                t[d * k + c] = rows[c * dim + d];
            }
        }
        let mut l2s = vec![f32::NAN; k];
        let mut dots = vec![f32::NAN; k];
        l2_squared_transposed(&x, &t, &mut l2s);
        dot_transposed(&x, &t, &mut dots);
        for (c, row) in rows.chunks_exact(dim).enumerate() {
            prop_assert_eq!(l2s[c].to_bits(), scalar::l2_squared(&x, row).to_bits());
            prop_assert_eq!(dots[c].to_bits(), scalar::dot(&x, row).to_bits());
        }
    }

    /// ADC with a quantiser's L2 table equals the squared distance to the decoded vectors, and
    /// with its dot table the inner product with them.
    #[test]
    fn adc_over_pq_tables_matches_decoded_distances(
        which in 0usize..9,
        query in vec(-3.0f32..8.0, 48),
        raw_codes in vec(any::<u8>(), 0..=48 * 40),
    ) {
        let (_, pqs) = quantisers();
        let pq = &pqs[which];
        let (m, dim) = (pq.code_size(), pq.dim());
        let n = raw_codes.len() / m;
        let codes = &raw_codes[..n * m];
        let mut l2_table = vec![0f32; m * 256];
        let mut dot_table = vec![0f32; m * 256];
        pq.l2_table(&query, &mut l2_table);
        pq.dot_table(&query, &mut dot_table);
        let mut l2s = vec![0f32; n];
        let mut dots = vec![0f32; n];
        adc_scan(&l2_table, m, codes, &mut l2s);
        adc_scan(&dot_table, m, codes, &mut dots);
        let mut decoded = vec![0f32; dim];
        for (i, code) in codes.chunks_exact(m).enumerate() {
            pq.decode(code, &mut decoded);
            let want = l2_squared(&query, &decoded);
            prop_assert!(
                (l2s[i] - want).abs() <= 1e-4 * want.max(1e-3),
                "m={m} code {i}: adc {} vs l2 {want}", l2s[i]
            );
            let want = dot(&query, &decoded);
            let scale: f32 = query.iter().zip(&decoded).map(|(a, b)| (a * b).abs()).sum();
            prop_assert!(
                (dots[i] - want).abs() <= 1e-4 * scale.max(1e-3),
                "m={m} code {i}: adc {} vs dot {want}", dots[i]
            );
        }
    }
}

/// Encoding then scanning: the code ADC ranks first for a data point is the code of that point's
/// own reconstruction (distance to itself ≈ the reconstruction error).
#[test]
fn adc_distance_of_own_code_is_the_reconstruction_error() {
    let (data, pqs) = quantisers();
    for pq in pqs {
        let (m, dim) = (pq.code_size(), pq.dim());
        let codes = pq.encode_many(data);
        let mut table = vec![0f32; m * 256];
        let mut out = vec![0f32; codes.len() / m];
        let mut decoded = vec![0f32; dim];
        for (i, x) in data.chunks_exact(dim).enumerate().step_by(37) {
            pq.l2_table(x, &mut table);
            adc_scan(&table, m, &codes, &mut out);
            pq.decode(&codes[i * m..(i + 1) * m], &mut decoded);
            let own = l2_squared(x, &decoded);
            assert!((out[i] - own).abs() <= 1e-4 * own.max(1e-3), "m={m}");
        }
    }
}

/// The dispatcher picks one of the available ISAs (by timing; see `adc_isa`) and gives exactly
/// its results.
#[test]
fn dispatch_uses_an_available_isa() {
    let isa = adc_isa();
    assert!(available_isas().contains(&isa), "{isa:?}");
    let kernel = adc_scan_for(isa).expect("the chosen ISA is available");
    let table: Vec<f32> = (0..16 * 256).map(|i| (i % 251) as f32 * 0.5).collect();
    let codes: Vec<u8> = (0..16 * 37).map(|i| (i * 7 % 256) as u8).collect();
    let (mut a, mut b) = (vec![0f32; 37], vec![0f32; 37]);
    adc_scan(&table, 16, &codes, &mut a);
    kernel(&table, 16, &codes, &mut b);
    assert_eq!(a, b);
}

/// Rough timing of each available kernel on a list-sized scan (prints only).
#[test]
#[ignore = "timing; run with --ignored --nocapture"]
fn adc_timing() {
    for m in [8usize, 16, 32, 64] {
        let n = 1 << 16;
        let mut state = 12345u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let table: Vec<f32> = (0..m * 256).map(|_| (next() % 1000) as f32).collect();
        let codes: Vec<u8> = (0..n * m).map(|_| next() as u8).collect();
        let mut out = vec![0f32; n];
        let mut scalar_ns = 0.0;
        let mut runs: Vec<(String, AdcFn)> = all_kernels()
            .into_iter()
            .map(|(isa, f)| (isa.name().to_string(), f))
            .collect();
        runs.push((format!("adc_scan ({})", adc_isa().name()), adc_scan));
        for (name, kernel) in runs {
            kernel(&table, m, &codes, &mut out); // warm up
            let reps = 40;
            let start = Instant::now();
            for _ in 0..reps {
                kernel(&table, m, &codes, &mut out);
                std::hint::black_box(&mut out);
            }
            let ns = start.elapsed().as_nanos() as f64 / (reps * n) as f64;
            if scalar_ns == 0.0 {
                scalar_ns = ns; // The first run is the scalar kernel.
            }
            println!(
                "m={m:2} {name:20}: {ns:6.2} ns/code  ({:.2}x scalar)",
                scalar_ns / ns
            );
        }
    }
}
