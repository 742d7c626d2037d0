//! k-means clustering under the squared Euclidean distance: k-means++ seeding followed by Lloyd
//! iterations, as used by the IVF coarse quantiser and by the product quantiser's codebooks.
//!
//! Everything here is deterministic for a given seed, whatever the number of threads: the work
//! that runs in parallel (assigning each point to its nearest centroid, updating each point's
//! distance during seeding) produces one independent result per point, and every sum over points
//! runs sequentially in a fixed order.
//!
//! Data are row-major `n × dim` slices of `f32`. Distances go through the SIMD kernels of
//! [`crate::distance`]: [`crate::distance::l2_squared`] pair by pair for long vectors, and for
//! short ones (`dim <= 64`, e.g. PQ sub-spaces) [`l2_squared_transposed`], which compares one
//! point with all centroids at once. Ties between equally distant centroids go to the lowest
//! index; a NaN distance never wins.

use rayon::prelude::*;

use crate::distance::adc::l2_squared_transposed;
use crate::distance::kernels;
use crate::error::{Error, Result};
use crate::rng::SplitMix;

/// Lloyd iterations run by [`KMeansParams::new`].
pub const DEFAULT_ITERATIONS: usize = 20;

/// Relative perturbation applied when an empty cluster is re-seeded by splitting another one
/// (the value Faiss uses).
const SPLIT_EPS: f32 = 1.0 / 1024.0;

/// Parameters of a k-means run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KMeansParams {
    /// Number of centroids to train (at least 1, at most the number of points).
    pub k: usize,
    /// Maximum number of Lloyd iterations (the run stops earlier once assignments no longer
    /// change); 0 returns the k-means++ seeds.
    pub iterations: usize,
    /// Seed of the pseudo-random generator used by k-means++ seeding.
    pub seed: u64,
}

impl KMeansParams {
    /// `k` centroids, [`DEFAULT_ITERATIONS`] iterations, the given seed.
    pub fn new(k: usize, seed: u64) -> Self {
        KMeansParams {
            k,
            iterations: DEFAULT_ITERATIONS,
            seed,
        }
    }

    /// The same parameters with `iterations` Lloyd iterations.
    pub fn with_iterations(mut self, iterations: usize) -> Self {
        self.iterations = iterations;
        self
    }
}

/// Trains `params.k` centroids on `data` (`n × dim`, row-major) under the squared L2 distance.
///
/// Seeds with k-means++ (each next seed drawn with probability proportional to its squared
/// distance to the nearest seed so far, from a generator seeded by `params.seed`), then runs up to
/// `params.iterations` Lloyd iterations whose assignment step runs in parallel with rayon. A
/// cluster left empty by an iteration is re-seeded by splitting the largest cluster: it takes a
/// copy of that cluster's centroid and both are perturbed in opposite directions (as Faiss does).
/// The result is deterministic for a given seed regardless of the number of threads.
///
/// Returns the `k × dim` centroids, row-major.
///
/// # Errors
///
/// [`Error::InvalidArgument`] if `dim == 0`, `data.len()` is not a multiple of `dim`, `k == 0`,
/// `k` exceeds the number of points `n` (or `u32::MAX`), or `data` holds NaN or infinities.
pub fn train(data: &[f32], dim: usize, params: &KMeansParams) -> Result<Vec<f32>> {
    if dim == 0 {
        return Err(Error::InvalidArgument(
            "k-means: dimension must be at least 1".into(),
        ));
    }
    if !data.len().is_multiple_of(dim) {
        return Err(Error::InvalidArgument(format!(
            "k-means: data length {} is not a multiple of the dimension {dim}",
            data.len()
        )));
    }
    let n = data.len() / dim;
    let k = params.k;
    if k == 0 || k > n || u32::try_from(k).is_err() {
        return Err(Error::InvalidArgument(format!(
            "k-means: need 1 <= k <= n, got k = {k} for n = {n} points"
        )));
    }
    if data.iter().any(|x| !x.is_finite()) {
        return Err(Error::InvalidArgument(
            "k-means: data holds NaN or infinite values".into(),
        ));
    }

    let mut centroids = seed_plus_plus(data, dim, k, params.seed);
    let mut previous: Vec<u32> = Vec::new();
    for _ in 0..params.iterations {
        let labels = assign(data, dim, &centroids);
        if labels == previous {
            break; // Converged: the centroids are already the means of this assignment.
        }
        update_centroids(data, dim, &labels, &mut centroids);
        previous = labels;
    }
    Ok(centroids)
}

/// k-means++ seeding: `k` rows of `data` (with `n >= k >= 1` and finite data).
fn seed_plus_plus(data: &[f32], dim: usize, k: usize, seed: u64) -> Vec<f32> {
    let l2 = kernels().l2_squared;
    let n = data.len() / dim;
    let mut rng = SplitMix(seed);
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.below(n);
    centroids.extend_from_slice(&data[first * dim..(first + 1) * dim]);
    let mut min_dist: Vec<f32> = data
        .par_chunks_exact(dim)
        .map(|x| l2(x, &centroids[..dim]))
        .collect();
    for c in 1..k {
        // Sequential sums in f64 keep the draw independent of the thread count.
        let weight = |d: f32| -> f64 {
            if d.is_finite() {
                f64::from(d.max(0.0))
            } else {
                f64::from(f32::MAX) // Overflowed: very far, and so very likely.
            }
        };
        let total: f64 = min_dist.iter().map(|&d| weight(d)).sum();
        let pick = if total > 0.0 && total.is_finite() {
            let target = rng.next_f64() * total;
            let mut cumulative = 0.0f64;
            let mut pick = None;
            let mut last_positive = 0;
            for (i, &d) in min_dist.iter().enumerate() {
                let w = weight(d);
                if w > 0.0 {
                    last_positive = i;
                    cumulative += w;
                    if cumulative > target {
                        pick = Some(i);
                        break;
                    }
                }
            }
            // Rounding can leave the target just beyond the final cumulative sum.
            pick.unwrap_or(last_positive)
        } else {
            // Every point coincides with a seed (fewer than k distinct points): any will do.
            rng.below(n)
        };
        let row = &data[pick * dim..(pick + 1) * dim];
        centroids.extend_from_slice(row);
        let new = &centroids[c * dim..(c + 1) * dim];
        min_dist
            .par_iter_mut()
            .zip(data.par_chunks_exact(dim))
            .for_each(|(d, x)| *d = d.min(l2(x, new)));
    }
    centroids
}

/// One Lloyd update: each centroid becomes the mean of its points (summed sequentially in f64);
/// empty clusters are re-seeded by splitting the largest cluster.
fn update_centroids(data: &[f32], dim: usize, labels: &[u32], centroids: &mut [f32]) {
    let k = centroids.len() / dim;
    let mut sums = vec![0.0f64; k * dim];
    let mut counts = vec![0usize; k];
    for (x, &label) in data.chunks_exact(dim).zip(labels) {
        let c = label as usize;
        counts[c] += 1;
        for (s, &v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(x) {
            *s += f64::from(v);
        }
    }
    for (c, &count) in counts.iter().enumerate() {
        if count > 0 {
            let inv = 1.0 / count as f64;
            for (dst, &s) in centroids[c * dim..(c + 1) * dim]
                .iter_mut()
                .zip(&sums[c * dim..(c + 1) * dim])
            {
                *dst = (s * inv) as f32;
            }
        }
    }
    split_empty_clusters(dim, &mut counts, centroids);
}

/// Re-seeds every empty cluster by splitting the currently largest one (ties: lowest index): the
/// empty cluster takes a copy of its centroid, then the two are pushed apart by a relative
/// `±SPLIT_EPS` on alternating coordinates; each is credited with half of the points.
fn split_empty_clusters(dim: usize, counts: &mut [usize], centroids: &mut [f32]) {
    for empty in 0..counts.len() {
        if counts[empty] != 0 {
            continue;
        }
        let mut largest = 0;
        for (c, &count) in counts.iter().enumerate() {
            if count > counts[largest] {
                largest = c;
            }
        }
        if counts[largest] == 0 {
            return; // No point at all (cannot happen with n >= 1).
        }
        centroids.copy_within(largest * dim..(largest + 1) * dim, empty * dim);
        for d in 0..dim {
            let (grow, shrink) = if d % 2 == 0 {
                (empty, largest)
            } else {
                (largest, empty)
            };
            centroids[grow * dim + d] *= 1.0 + SPLIT_EPS;
            centroids[shrink * dim + d] *= 1.0 - SPLIT_EPS;
        }
        counts[empty] = counts[largest] / 2;
        counts[largest] -= counts[empty];
    }
}

/// Centroid sets of at most this dimension are searched with the transposed kernel
/// ([`l2_squared_transposed`]: one point against all centroids, vectorised across centroids);
/// longer vectors go pair by pair through the SIMD [`crate::distance::l2_squared`].
const TRANSPOSED_MAX_DIM: usize = 64;

/// `rows` (`k × dim`, row-major; a trailing partial row is ignored) transposed to `dim × k`
/// (coordinate `d` of row `c` at `d * k + c`), the layout of [`l2_squared_transposed`].
pub(crate) fn transpose(rows: &[f32], dim: usize) -> Vec<f32> {
    if dim == 0 {
        return Vec::new();
    }
    let k = rows.len() / dim;
    let mut out = vec![0f32; k * dim];
    for (c, row) in rows.chunks_exact(dim).enumerate() {
        for (d, &v) in row.iter().enumerate() {
            out[d * k + c] = v;
        }
    }
    out
}

/// Row `row` of a matrix stored transposed by [`transpose`] (`out.len() × k`), into `out`.
#[inline]
pub(crate) fn transposed_row(transposed: &[f32], k: usize, row: usize, out: &mut [f32]) {
    for (d, x) in out.iter_mut().enumerate() {
        *x = transposed[d * k + row];
    }
}

/// The index and value of the smallest of `distances` (ties: lowest index; NaN never wins;
/// `(0, +inf)` if none is below infinity) — the same as a sequential scan.
///
/// Two passes the compiler vectorises: the minimum over eight running lanes, then the first
/// position holding it, found eight at a time.
#[inline]
pub(crate) fn argmin(distances: &[f32]) -> (u32, f32) {
    const LANES: usize = 8;
    let mut lanes = [f32::INFINITY; LANES];
    let mut chunks = distances.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (best, &d) in lanes.iter_mut().zip(chunk) {
            *best = if d < *best { d } else { *best };
        }
    }
    let mut min = f32::INFINITY;
    for &d in lanes.iter().chain(chunks.remainder()) {
        if d < min {
            min = d;
        }
    }
    if min < f32::INFINITY {
        for (i, chunk) in distances.chunks(LANES).enumerate() {
            if chunk.iter().fold(false, |hit, &d| hit | (d == min)) {
                if let Some(l) = chunk.iter().position(|&d| d == min) {
                    return ((i * LANES + l) as u32, chunk[l]);
                }
            }
        }
    }
    (0, f32::INFINITY)
}

/// Squared L2 distances from many points to every centroid, with the kernel suited to `dim`.
enum Distances<'a> {
    /// Pair by pair over row-major centroids.
    Rows {
        centroids: &'a [f32],
        dim: usize,
        l2: fn(&[f32], &[f32]) -> f32,
    },
    /// One transposed scan.
    Transposed { centroids_t: Vec<f32>, k: usize },
}

impl<'a> Distances<'a> {
    /// Prepares for `centroids` (`k × dim`, complete rows only; `dim >= 1`).
    fn new(centroids: &'a [f32], dim: usize) -> Self {
        let centroids = &centroids[..centroids.len() / dim * dim];
        if dim <= TRANSPOSED_MAX_DIM {
            Distances::Transposed {
                centroids_t: transpose(centroids, dim),
                k: centroids.len() / dim,
            }
        } else {
            Distances::Rows {
                centroids,
                dim,
                l2: kernels().l2_squared,
            }
        }
    }

    /// Number of centroids.
    fn k(&self) -> usize {
        match self {
            Distances::Rows { centroids, dim, .. } => centroids.len() / dim,
            Distances::Transposed { k, .. } => *k,
        }
    }

    /// Fills `out` (`k` entries) with the squared distances from `x` (`dim` floats).
    fn compute(&self, x: &[f32], out: &mut [f32]) {
        match self {
            Distances::Rows { centroids, dim, l2 } => {
                for (o, row) in out.iter_mut().zip(centroids.chunks_exact(*dim)) {
                    *o = l2(x, row);
                }
            }
            Distances::Transposed { centroids_t, .. } => l2_squared_transposed(x, centroids_t, out),
        }
    }
}

/// For each vector of `data` (`n × dim`, row-major), the index of its nearest centroid among the
/// rows of `centroids` (`k × dim`) under the squared L2 distance; computed in parallel.
///
/// Ties go to the lowest index. For `dim <= 64` the centroids are transposed once and each point
/// is compared with all of them by [`l2_squared_transposed`] (several times faster than pair by
/// pair); its sums are rounded differently from [`crate::distance::l2_squared`], which
/// [`nearest`] uses, so the two can disagree when two centroids are equally near to within
/// rounding (never otherwise).
///
/// `data.len()` and `centroids.len()` should be multiples of `dim` and `dim >= 1`, with at least
/// one centroid (`debug_assert!`ed); otherwise only complete rows are used, and the result is
/// empty when `dim == 0` or there is no complete centroid.
pub fn assign(data: &[f32], dim: usize, centroids: &[f32]) -> Vec<u32> {
    debug_assert!(dim > 0, "k-means: dimension must be at least 1");
    debug_assert!(data.len().is_multiple_of(dim.max(1)), "data is not n × dim");
    debug_assert!(
        centroids.len().is_multiple_of(dim.max(1)),
        "centroids are not k × dim"
    );
    debug_assert!(centroids.len() >= dim, "no centroid");
    if dim == 0 || centroids.len() < dim {
        return Vec::new();
    }
    let distances = Distances::new(centroids, dim);
    let k = distances.k();
    let mut labels = Vec::new();
    data.par_chunks_exact(dim)
        .map_init(
            || vec![0f32; k],
            |buf, x| {
                distances.compute(x, buf);
                argmin(buf).0
            },
        )
        .collect_into_vec(&mut labels);
    labels
}

/// The `n` nearest centroids (rows of `centroids`, `k × dim`) to `query` under the squared L2
/// distance, closest first, ties by index: `(centroid index, squared distance)`.
///
/// Returns `min(n, k)` entries. NaN distances sort last. `query.len()` should equal `dim` and
/// `centroids.len()` be a multiple of it (`debug_assert!`ed); otherwise only complete centroid
/// rows and the common prefix of `query` and each row are used. Empty when `dim == 0`.
pub fn nearest(query: &[f32], centroids: &[f32], dim: usize, n: usize) -> Vec<(u32, f32)> {
    debug_assert!(dim > 0, "k-means: dimension must be at least 1");
    debug_assert_eq!(query.len(), dim, "query length differs from the dimension");
    debug_assert!(
        centroids.len().is_multiple_of(dim.max(1)),
        "centroids are not k × dim"
    );
    if dim == 0 || n == 0 {
        return Vec::new();
    }
    // One query: pair by pair (transposing the centroids would cost more than it saves).
    let l2 = kernels().l2_squared;
    let prefix = query.len().min(dim);
    let query = &query[..prefix];
    let mut all: Vec<(u32, f32)> = centroids
        .chunks_exact(dim)
        .enumerate()
        .map(|(c, row)| (c as u32, l2(query, &row[..prefix])))
        .collect();
    let key = |&(c, d): &(u32, f32)| (if d.is_nan() { f32::INFINITY } else { d }, c);
    let cmp = |a: &(u32, f32), b: &(u32, f32)| {
        let (da, ca) = key(a);
        let (db, cb) = key(b);
        da.total_cmp(&db).then(ca.cmp(&cb))
    };
    if n < all.len() {
        all.select_nth_unstable_by(n - 1, cmp);
        all.truncate(n);
    }
    all.sort_unstable_by(cmp);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::l2_squared;

    /// `clusters` well-separated Gaussian-ish blobs: returns (data, true label of each point).
    fn blobs(
        clusters: usize,
        per: usize,
        dim: usize,
        spread: f32,
        seed: u64,
    ) -> (Vec<f32>, Vec<usize>) {
        let mut rng = SplitMix(seed);
        let centres: Vec<f32> = (0..clusters * dim)
            .map(|_| (rng.next_f64() as f32 - 0.5) * 1000.0)
            .collect();
        let mut data = Vec::with_capacity(clusters * per * dim);
        let mut truth = Vec::with_capacity(clusters * per);
        // Interleave the clusters so that no cluster occupies one contiguous range.
        for p in 0..per * clusters {
            let c = (p * 7 + p / clusters) % clusters;
            truth.push(c);
            for d in 0..dim {
                // Sum of uniforms: roughly Gaussian.
                let noise: f64 = (0..4).map(|_| rng.next_f64() - 0.5).sum();
                data.push(centres[c * dim + d] + noise as f32 * spread);
            }
        }
        (data, truth)
    }

    #[test]
    fn recovers_well_separated_clusters() {
        let (dim, clusters) = (16, 8);
        let (data, truth) = blobs(clusters, 250, dim, 1.0, 7);
        for seed in 0..5 {
            let centroids = train(&data, dim, &KMeansParams::new(clusters, seed)).unwrap();
            assert_eq!(centroids.len(), clusters * dim);
            let labels = assign(&data, dim, &centroids);
            let mut map = vec![None; clusters];
            for (&t, &l) in truth.iter().zip(&labels) {
                match map[t] {
                    None => map[t] = Some(l),
                    Some(m) => assert_eq!(m, l, "seed {seed}: cluster {t} split"),
                }
            }
            let mut used: Vec<u32> = map.iter().map(|m| m.unwrap()).collect();
            used.sort_unstable();
            used.dedup();
            assert_eq!(used.len(), clusters, "seed {seed}: clusters merged");
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_any_thread_count() {
        let (data, _) = blobs(6, 100, 5, 50.0, 3);
        let params = KMeansParams::new(10, 42);
        let a = train(&data, 5, &params).unwrap();
        let b = train(&data, 5, &params).unwrap();
        assert_eq!(a, b);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let c = pool.install(|| train(&data, 5, &params).unwrap());
            assert_eq!(a, c, "{threads} threads");
        }
        let other = train(&data, 5, &KMeansParams::new(10, 43)).unwrap();
        assert_ne!(a, other);
    }

    #[test]
    fn invalid_arguments() {
        let data = vec![0.0f32; 12];
        let bad = |r: Result<Vec<f32>>| matches!(r, Err(Error::InvalidArgument(_)));
        assert!(bad(train(&data, 3, &KMeansParams::new(5, 0)))); // n = 4 < k
        assert!(bad(train(&data, 3, &KMeansParams::new(0, 0))));
        assert!(bad(train(&data, 0, &KMeansParams::new(1, 0))));
        assert!(bad(train(&data, 5, &KMeansParams::new(1, 0)))); // 12 % 5 != 0
        assert!(bad(train(&[], 3, &KMeansParams::new(1, 0))));
        let mut nan = data.clone();
        nan[4] = f32::NAN;
        assert!(bad(train(&nan, 3, &KMeansParams::new(1, 0))));
        nan[4] = f32::INFINITY;
        assert!(bad(train(&nan, 3, &KMeansParams::new(1, 0))));
        assert!(train(&data, 3, &KMeansParams::new(4, 0)).is_ok()); // n == k
    }

    #[test]
    fn fewer_distinct_points_than_k() {
        // Three distinct points, repeated; k = 5 forces empty clusters to be split.
        let points = [[0.0f32, 0.0], [10.0, 10.0], [-5.0, 20.0]];
        let data: Vec<f32> = (0..30).flat_map(|i| points[i % 3]).collect();
        let centroids = train(&data, 2, &KMeansParams::new(5, 1)).unwrap();
        assert_eq!(centroids.len(), 10);
        assert!(centroids.iter().all(|x| x.is_finite()));
        for p in &points {
            let (_, d) = nearest(p, &centroids, 2, 1)[0];
            assert!(d < 1e-2, "{p:?} at {d}");
        }
        // All points identical.
        let same = vec![3.0f32; 40];
        let centroids = train(&same, 4, &KMeansParams::new(10, 9)).unwrap();
        assert!(centroids.iter().all(|x| x.is_finite()));
        // Zero iterations: the seeds are data points.
        let seeds = train(&data, 2, &KMeansParams::new(3, 5).with_iterations(0)).unwrap();
        for row in seeds.chunks_exact(2) {
            assert!(points.iter().any(|p| p == row));
        }
    }

    #[test]
    fn assign_and_nearest_match_brute_force() {
        // Small integer coordinates make every distance exact in any summation order, so the
        // SIMD kernels must agree with the brute force exactly (ties included). Dimension 7
        // uses the transposed kernel, 70 the pair-by-pair one.
        let mut rng = SplitMix(17);
        for dim in [1, 7, 64, 65, 70] {
            let k = 13;
            let mut int = |range: usize| rng.below(range) as f32 - (range / 2) as f32;
            let centroids: Vec<f32> = (0..k * dim).map(|_| int(9)).collect();
            let data: Vec<f32> = (0..300 * dim).map(|_| int(11)).collect();
            let labels = assign(&data, dim, &centroids);
            assert_eq!(labels.len(), 300);
            for (x, &label) in data.chunks_exact(dim).zip(&labels) {
                let mut all: Vec<(u32, f32)> = centroids
                    .chunks_exact(dim)
                    .enumerate()
                    .map(|(c, row)| (c as u32, l2_squared(x, row)))
                    .collect();
                all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                assert_eq!(label, all[0].0, "dim {dim}");
                for n in [0, 1, 5, 13, 20] {
                    let got = nearest(x, &centroids, dim, n);
                    assert_eq!(got, all[..n.min(k)], "dim {dim}, n = {n}");
                }
            }
        }
    }

    #[test]
    fn argmin_matches_a_sequential_scan() {
        let sequential = |v: &[f32]| {
            let mut best = (0u32, f32::INFINITY);
            for (c, &d) in v.iter().enumerate() {
                if d < best.1 {
                    best = (c as u32, d);
                }
            }
            best
        };
        let mut rng = SplitMix(5);
        for len in 0..40 {
            for _ in 0..50 {
                let v: Vec<f32> = (0..len)
                    .map(|_| match rng.below(10) {
                        0 => f32::NAN,
                        1 => f32::INFINITY,
                        _ => rng.below(4) as f32, // many ties
                    })
                    .collect();
                let (a, b) = (argmin(&v), sequential(&v));
                assert!(
                    a.0 == b.0 && a.1.to_bits() == b.1.to_bits(),
                    "{v:?}: {a:?} vs {b:?}"
                );
            }
        }
    }

    #[test]
    fn transpose_layout() {
        let rows = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(transpose(&rows, 3), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(transpose(&rows, 2), [1.0, 3.0, 5.0, 2.0, 4.0, 6.0]);
        assert!(transpose(&rows, 0).is_empty());
    }

    #[test]
    fn ties_go_to_the_lowest_index() {
        let centroids = [1.0f32, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 5.0];
        assert_eq!(assign(&[0.0, 0.0], 2, &centroids), [0]);
        assert_eq!(
            nearest(&[0.0, 0.0], &centroids, 2, 3),
            [(0, 1.0), (1, 1.0), (2, 1.0)]
        );
    }

    #[test]
    fn degenerate_inputs_do_not_panic_in_release() {
        if cfg!(debug_assertions) {
            return; // The debug_asserts fire by design.
        }
        assert!(assign(&[1.0, 2.0], 0, &[1.0]).is_empty());
        assert!(assign(&[1.0, 2.0], 2, &[]).is_empty());
        assert_eq!(assign(&[1.0, 2.0, 3.0], 2, &[1.0, 2.0, 9.0]), [0]);
        assert!(nearest(&[1.0], &[1.0], 0, 3).is_empty());
        assert_eq!(nearest(&[1.0], &[1.0, 2.0, 3.0, 4.0], 2, 3).len(), 2);
        let nan = nearest(&[0.0, 0.0], &[f32::NAN, 0.0, 3.0, 0.0], 2, 2);
        assert_eq!(nan[0], (1, 9.0));
        assert_eq!(nan[1].0, 0);
    }
}
