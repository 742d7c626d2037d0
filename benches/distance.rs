//! Distance kernel benchmarks: the plain scalar loop (`quiverdb::distance::scalar`) against every
//! SIMD kernel table this CPU supports, at typical embedding dimensions.
//!
//! Run with `cargo bench --bench distance`. Benchmark ids are `<dims>/<kernel>/<isa>`, e.g.
//! `1024/dot/avx512`; `dot_f16` and `l2_squared_f16` take the second vector in half precision. Measurement is kept short so the whole run takes a few minutes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiverdb::distance::{available_isas, f16, scalar, Isa, Kernels};

const DIMS: [usize; 5] = [128, 384, 768, 1024, 1536];

/// The kernel tables to compare: the plain scalar reference loops, then each SIMD ISA available.
fn tables() -> Vec<Kernels> {
    let plain = Kernels {
        isa: Isa::Scalar,
        dot: scalar::dot,
        l2_squared: scalar::l2_squared,
        cosine_distance: scalar::cosine_distance,
        dot_f16: scalar::dot_f16,
        l2_squared_f16: scalar::l2_squared_f16,
    };
    let simd = available_isas()
        .into_iter()
        .filter(|&isa| isa != Isa::Scalar)
        .filter_map(Kernels::for_isa);
    std::iter::once(plain).chain(simd).collect()
}

/// Deterministic pseudo-random vector with values in `[-1, 1)`.
fn vector(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn bench_distance(c: &mut Criterion) {
    let tables = tables();
    for dims in DIMS {
        let a = vector(dims, 0x1234_5678);
        let b = vector(dims, 0x9abc_def0);
        let b_half: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
        let mut group = c.benchmark_group(dims.to_string());
        group
            .throughput(Throughput::Elements(dims as u64))
            .sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2));
        for k in &tables {
            let kernels = [
                ("dot", k.dot),
                ("l2_squared", k.l2_squared),
                ("cosine", k.cosine_distance),
            ];
            for (name, f) in kernels {
                group.bench_function(BenchmarkId::new(name, k.isa.name()), |bench| {
                    bench.iter(|| f(black_box(&a), black_box(&b)))
                });
            }
            for (name, f) in [("dot_f16", k.dot_f16), ("l2_squared_f16", k.l2_squared_f16)] {
                group.bench_function(BenchmarkId::new(name, k.isa.name()), |bench| {
                    bench.iter(|| f(black_box(&a), black_box(&b_half)))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench_distance);
criterion_main!(benches);
