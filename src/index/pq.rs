//! Product quantisation (Jégou, Douze & Schmid, 2011): a vector of `dim` coordinates is cut into
//! `m` sub-vectors of `dsub = dim / m` coordinates, and each sub-vector is replaced by the index
//! of its nearest centroid in that sub-space's codebook of [`KSUB`] = 256 centroids, so a code is
//! `m` bytes.
//!
//! Distances between a full query and coded vectors are computed asymmetrically (ADC): one lookup
//! table per query ([`ProductQuantizer::l2_table`] or [`ProductQuantizer::dot_table`], `m × 256`
//! entries), whose entries for a code's bytes add up to the distance to the decoded vector; the
//! accumulation over many codes is [`crate::distance::adc::adc_scan`].
//!
//! The quantiser knows nothing of inverted lists or graphs: IVF-PQ feeds it residuals, DiskANN
//! full vectors. It may carry a learned [`Rotation`] (OPQ, [`ProductQuantizer::train_rotated`]),
//! applied to every vector and query before the sub-spaces are cut: codes and tables then live
//! in the rotated space, which has the same distances and inner products.

use rayon::prelude::*;

use super::kmeans::{self, transpose, transposed_row, KMeansParams};
use super::rotation::{Rotation, MAX_ROTATED_DIM};
use crate::distance::adc::{dot_transposed, l2_squared_transposed};
use crate::error::{Error, Result};

/// Centroids per sub-space (codes are one byte per sub-space).
pub const KSUB: usize = 256;

/// A product quantiser: `m` sub-spaces of `dim / m` coordinates, 256 centroids (8 bits) each.
#[derive(Clone, Debug, PartialEq)]
pub struct ProductQuantizer {
    dim: usize,
    m: usize,
    dsub: usize,
    /// The codebooks, each sub-space's transposed (`dsub × 256` floats: coordinate `d` of
    /// centroid `c` of sub-space `j` at `j * 256 * dsub + d * 256 + c`), the layout
    /// [`l2_squared_transposed`] / [`dot_transposed`] read. The only copy: decoding gathers
    /// from it, and [`ProductQuantizer::codebooks`] transposes it back.
    codebooks_t: Vec<f32>,
    /// Rotation applied before quantising, if trained with one.
    rotation: Option<Rotation>,
}

/// Checks the shape parameters shared by [`ProductQuantizer::train`] and
/// [`ProductQuantizer::from_parts`]; returns `dsub`.
fn check_shape(dim: usize, m: usize) -> Result<usize> {
    if m == 0 || dim == 0 || !dim.is_multiple_of(m) {
        return Err(Error::InvalidArgument(format!(
            "product quantiser: the number of sub-spaces m = {m} must be at least 1 and divide \
             the dimension {dim} (at least 1)"
        )));
    }
    Ok(dim / m)
}

/// Mixes the training seed with the sub-space number (so sub-spaces get unrelated seeds).
fn subspace_seed(seed: u64, j: usize) -> u64 {
    let mut z = seed
        ^ (j as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl ProductQuantizer {
    /// Trains on `data` (`n × dim`, row-major): one k-means ([`kmeans::train`], 256 centroids,
    /// default iterations) per sub-space, the sub-spaces in parallel with rayon. Deterministic for
    /// a given `seed`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `m == 0`, `dim == 0`, `dim % m != 0`, `data.len()` is not a
    /// multiple of `dim`, there are fewer than 256 rows, or `data` holds NaN or infinities.
    pub fn train(data: &[f32], dim: usize, m: usize, seed: u64) -> Result<Self> {
        let dsub = check_shape(dim, m)?;
        if !data.len().is_multiple_of(dim) {
            return Err(Error::InvalidArgument(format!(
                "product quantiser: data length {} is not a multiple of the dimension {dim}",
                data.len()
            )));
        }
        let n = data.len() / dim;
        if n < KSUB {
            return Err(Error::InvalidArgument(format!(
                "product quantiser: training needs at least {KSUB} vectors, got {n}"
            )));
        }
        let books: Vec<Vec<f32>> = (0..m)
            .into_par_iter()
            .map(|j| {
                let sub: Vec<f32> = data
                    .chunks_exact(dim)
                    .flat_map(|row| &row[j * dsub..(j + 1) * dsub])
                    .copied()
                    .collect();
                kmeans::train(&sub, dsub, &KMeansParams::new(KSUB, subspace_seed(seed, j)))
            })
            .collect::<Result<_>>()?;
        Ok(Self::assemble(dim, m, dsub, books.concat()))
    }

    /// Trains a [`Rotation`] for `m` sub-spaces on `data`, then the quantiser on the rotated
    /// rows ([`ProductQuantizer::train`]); the quantiser keeps the rotation and applies it to
    /// everything it encodes or builds a table for.
    ///
    /// # Errors
    ///
    /// As [`ProductQuantizer::train`] and [`Rotation::train`] (which refuses dimensions above
    /// [`super::rotation::MAX_ROTATED_DIM`]).
    pub fn train_rotated(data: &[f32], dim: usize, m: usize, seed: u64) -> Result<Self> {
        check_shape(dim, m)?;
        let rotation = Rotation::train(data, dim, m)?;
        let mut pq = Self::train(&rotation.apply_many(data), dim, m, seed)?;
        pq.rotation = Some(rotation);
        Ok(pq)
    }

    /// Attaches a stored rotation to a quantiser rebuilt by [`ProductQuantizer::from_parts`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the rotation's dimension differs from the quantiser's.
    pub fn with_rotation(mut self, rotation: Rotation) -> Result<Self> {
        if rotation.dim() != self.dim {
            return Err(Error::InvalidArgument(format!(
                "product quantiser: a {}-D rotation for {}-D codes",
                rotation.dim(),
                self.dim
            )));
        }
        self.rotation = Some(rotation);
        Ok(self)
    }

    /// The rotation applied before quantising, if any.
    pub fn rotation(&self) -> Option<&Rotation> {
        self.rotation.as_ref()
    }

    /// `x` in the quantiser's space: rotated into `scratch` when there is a rotation (whose
    /// dimension is at most [`MAX_ROTATED_DIM`], so a stack buffer holds it).
    fn to_code_space<'a>(
        &self,
        x: &'a [f32],
        scratch: &'a mut [f32; MAX_ROTATED_DIM],
    ) -> &'a [f32] {
        match &self.rotation {
            Some(rotation) => {
                let rotated = &mut scratch[..self.dim];
                rotation.apply(x, rotated);
                rotated
            }
            None => x,
        }
    }

    /// Rebuilds a quantiser from stored parts (as returned by [`ProductQuantizer::dim`],
    /// [`ProductQuantizer::m`] and [`ProductQuantizer::codebooks`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if the shape is invalid (as for [`ProductQuantizer::train`]),
    /// `codebooks` does not hold exactly `256 × dim` floats, or holds NaN or infinities. Callers
    /// loading a file should report it as corrupted.
    pub fn from_parts(dim: usize, m: usize, codebooks: Vec<f32>) -> Result<Self> {
        let dsub = check_shape(dim, m)?;
        let expected = dim.checked_mul(KSUB);
        if expected != Some(codebooks.len()) {
            return Err(Error::InvalidArgument(format!(
                "product quantiser: codebooks hold {} floats, expected 256 × {dim}",
                codebooks.len()
            )));
        }
        if codebooks.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument(
                "product quantiser: codebooks hold NaN or infinite values".into(),
            ));
        }
        Ok(Self::assemble(dim, m, dsub, codebooks))
    }

    /// Builds the quantiser from validated parts, transposing the codebooks.
    fn assemble(dim: usize, m: usize, dsub: usize, codebooks: Vec<f32>) -> Self {
        let mut codebooks_t = Vec::with_capacity(codebooks.len());
        for book in codebooks.chunks_exact(KSUB * dsub) {
            codebooks_t.extend(transpose(book, dsub));
        }
        ProductQuantizer {
            dim,
            m,
            dsub,
            codebooks_t,
            rotation: None,
        }
    }

    /// Dimension of the vectors quantised.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of sub-spaces.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Coordinates per sub-space (`dim / m`).
    pub fn dsub(&self) -> usize {
        self.dsub
    }

    /// Bytes per code (= `m`).
    pub fn code_size(&self) -> usize {
        self.m
    }

    /// Entries of an ADC table (`m × 256`).
    pub fn table_len(&self) -> usize {
        self.m * KSUB
    }

    /// The codebooks row-major (a copy, for checkpoints), `m × 256 × dsub` floats: sub-space
    /// `j`'s centroid `c` starts at `(j * 256 + c) * dsub`.
    pub fn codebooks(&self) -> Vec<f32> {
        self.codebooks_t
            .chunks_exact(KSUB * self.dsub)
            .flat_map(|book_t| transpose(book_t, KSUB))
            .collect()
    }

    /// The transposed codebook of sub-space `j` (`dsub × 256` floats); `j < m`.
    fn book_t(&self, j: usize) -> &[f32] {
        &self.codebooks_t[j * KSUB * self.dsub..(j + 1) * KSUB * self.dsub]
    }

    /// How many sub-spaces a call can handle given the lengths of its vector-like argument
    /// (`coords` floats) and its per-sub-space argument (`per_space` items each `unit` long).
    fn usable_subspaces(&self, coords: usize, per_space: usize, unit: usize) -> usize {
        self.m.min(coords / self.dsub).min(per_space / unit)
    }

    /// Encodes one vector into `code` (`m` bytes): the nearest centroid of each sub-space
    /// (squared L2; ties go to the lowest index).
    ///
    /// `vector.len()` should be `dim` and `code.len()` `m` (`debug_assert!`ed); otherwise only the
    /// sub-spaces both cover completely are encoded and any remaining code bytes are set to 0.
    pub fn encode(&self, vector: &[f32], code: &mut [u8]) {
        debug_assert_eq!(
            vector.len(),
            self.dim,
            "vector length differs from the dimension"
        );
        debug_assert_eq!(code.len(), self.m, "code length differs from m");
        let mut scratch = [0f32; MAX_ROTATED_DIM];
        let vector = self.to_code_space(vector, &mut scratch);
        let usable = self.usable_subspaces(vector.len(), code.len(), 1);
        let mut distances = [0f32; KSUB];
        for (j, byte) in code.iter_mut().enumerate() {
            if j >= usable {
                *byte = 0;
                continue;
            }
            let x = &vector[j * self.dsub..(j + 1) * self.dsub];
            l2_squared_transposed(x, self.book_t(j), &mut distances);
            // argmin's index is below 256 (the length of `distances`).
            *byte = kmeans::argmin(&distances).0 as u8;
        }
    }

    /// Encodes the rows of `data` (`n × dim`) into `n × m` bytes, in parallel. A trailing partial
    /// row (`data.len()` not a multiple of `dim`, `debug_assert!`ed) is ignored.
    pub fn encode_many(&self, data: &[f32]) -> Vec<u8> {
        debug_assert!(data.len().is_multiple_of(self.dim), "data is not n × dim");
        let n = data.len() / self.dim;
        let mut codes = vec![0u8; n * self.m];
        codes
            .par_chunks_exact_mut(self.m)
            .zip(data.par_chunks_exact(self.dim))
            .for_each(|(code, row)| self.encode(row, code));
        codes
    }

    /// Reconstructs the vector `code` stands for (the concatenation of its centroids, rotated
    /// back if the quantiser has a rotation) into `out`.
    ///
    /// `code.len()` should be `m` and `out.len()` `dim` (`debug_assert!`ed); otherwise only the
    /// sub-spaces both cover completely are written and the rest of `out` is left unchanged.
    pub fn decode(&self, code: &[u8], out: &mut [f32]) {
        debug_assert_eq!(code.len(), self.m, "code length differs from m");
        debug_assert_eq!(
            out.len(),
            self.dim,
            "output length differs from the dimension"
        );
        if let Some(rotation) = &self.rotation {
            let mut rotated = [0f32; MAX_ROTATED_DIM];
            self.decode_unrotated(code, &mut rotated[..self.dim]);
            rotation.apply_inverse(&rotated[..self.dim], out);
        } else {
            self.decode_unrotated(code, out);
        }
    }

    /// The concatenation of `code`'s centroids (in the rotated space, if any) into `out`.
    fn decode_unrotated(&self, code: &[u8], out: &mut [f32]) {
        let usable = self.usable_subspaces(out.len(), code.len(), 1);
        for (j, (&c, dst)) in code
            .iter()
            .zip(out.chunks_exact_mut(self.dsub))
            .take(usable)
            .enumerate()
        {
            transposed_row(self.book_t(j), KSUB, usize::from(c), dst);
        }
    }

    /// Fills an ADC table for squared L2: `table[j * 256 + c] = ‖query_j − codebook_j[c]‖²`, so
    /// that `Σ_j table[j * 256 + code[j]]` is the squared distance from `query` to the decoded
    /// `code` (see [`crate::distance::adc::adc_scan`]).
    ///
    /// `query.len()` should be `dim` and `table.len()` `m × 256` (`debug_assert!`ed); otherwise
    /// only the sub-spaces both cover completely are filled and the rest is left unchanged.
    pub fn l2_table(&self, query: &[f32], table: &mut [f32]) {
        self.fill_table(query, table, l2_squared_transposed);
    }

    /// Fills an ADC table for inner products: `table[j * 256 + c] = ⟨query_j, codebook_j[c]⟩`, so
    /// that `Σ_j table[j * 256 + code[j]]` is the inner product of `query` with the decoded
    /// `code`. Same length contract as [`ProductQuantizer::l2_table`].
    pub fn dot_table(&self, query: &[f32], table: &mut [f32]) {
        self.fill_table(query, table, dot_transposed);
    }

    /// `table[j * 256..][..256] = f(query_j, transposed codebook_j)` over the usable sub-spaces.
    fn fill_table(&self, query: &[f32], table: &mut [f32], f: fn(&[f32], &[f32], &mut [f32])) {
        debug_assert_eq!(
            query.len(),
            self.dim,
            "query length differs from the dimension"
        );
        debug_assert_eq!(
            table.len(),
            self.table_len(),
            "table length differs from m × 256"
        );
        let mut scratch = [0f32; MAX_ROTATED_DIM];
        let query = self.to_code_space(query, &mut scratch);
        let usable = self.usable_subspaces(query.len(), table.len(), KSUB);
        for (j, (q, row)) in query
            .chunks_exact(self.dsub)
            .zip(table.chunks_exact_mut(KSUB))
            .take(usable)
            .enumerate()
        {
            f(q, self.book_t(j), row);
        }
    }

    /// Mean squared reconstruction error `‖x − decode(encode(x))‖²` over the rows of `data`
    /// (`n × dim`; a trailing partial row is ignored), computed in parallel and summed in `f64`.
    /// 0 for no rows.
    pub fn reconstruction_error(&self, data: &[f32]) -> f64 {
        debug_assert!(data.len().is_multiple_of(self.dim), "data is not n × dim");
        let n = data.len() / self.dim;
        if n == 0 {
            return 0.0;
        }
        let l2 = crate::distance::kernels().l2_squared;
        let mut errors = Vec::new();
        data.par_chunks_exact(self.dim)
            .map_init(
                || (vec![0u8; self.m], vec![0f32; self.dim]),
                |(code, decoded), row| {
                    self.encode(row, code);
                    self.decode(code, decoded);
                    f64::from(l2(row, decoded))
                },
            )
            .collect_into_vec(&mut errors);
        // A sequential sum, so the result does not depend on the thread count.
        errors.iter().sum::<f64>() / n as f64
    }

    /// Approximate bytes held (the codebooks, the rotation and the struct itself).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.codebooks_t.capacity() * std::mem::size_of::<f32>()
            + self.rotation.as_ref().map_or(0, Rotation::memory_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance::{dot, l2_squared, scalar};

    /// A tiny deterministic generator for test data.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        }
    }

    /// `n × dim` points around `clusters` random centres (spread 0.05 around centres in ±5).
    fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng(seed);
        let centres: Vec<f32> = (0..clusters * dim).map(|_| rng.next() * 10.0).collect();
        (0..n)
            .flat_map(|i| {
                let c = i % clusters;
                (0..dim)
                    .map(|d| centres[c * dim + d] + rng.next() * 0.1)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn variance(data: &[f32], dim: usize) -> f64 {
        let n = data.len() / dim;
        let mut mean = vec![0f64; dim];
        for row in data.chunks_exact(dim) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x) / n as f64;
            }
        }
        data.chunks_exact(dim)
            .map(|row| {
                row.iter()
                    .zip(&mean)
                    .map(|(&x, m)| (f64::from(x) - m).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / n as f64
    }

    fn close(a: f32, b: f32, scale: f32) -> bool {
        (a - b).abs() <= 1e-4 * scale.max(1.0)
    }

    #[test]
    fn adc_tables_match_decoded_distances() {
        let dim = 24;
        let data = clustered(600, dim, 20, 1);
        let plain = ProductQuantizer::train(&data, dim, 6, 7).unwrap();
        let rotated = ProductQuantizer::train_rotated(&data, dim, 6, 7).unwrap();
        assert!(plain.rotation().is_none() && rotated.rotation().is_some());
        for pq in [plain, rotated] {
            check_adc_against_decoding(&pq, &data);
        }
    }

    /// ADC table sums equal the distances to the decoded vectors, for L2 and inner products.
    fn check_adc_against_decoding(pq: &ProductQuantizer, data: &[f32]) {
        let dim = pq.dim();
        assert_eq!(pq.dim(), dim);
        assert_eq!(pq.m(), 6);
        assert_eq!(pq.dsub(), 4);
        assert_eq!(pq.code_size(), 6);
        assert_eq!(pq.codebooks().len(), 256 * dim);
        let codes = pq.encode_many(data);
        assert_eq!(codes.len(), 600 * 6);
        let queries = clustered(10, dim, 3, 99);
        let mut l2t = vec![0f32; pq.table_len()];
        let mut dott = vec![0f32; pq.table_len()];
        let mut decoded = vec![0f32; dim];
        for q in queries.chunks_exact(dim) {
            pq.l2_table(q, &mut l2t);
            pq.dot_table(q, &mut dott);
            for code in codes.chunks_exact(6) {
                pq.decode(code, &mut decoded);
                let adc_l2: f32 = code
                    .iter()
                    .enumerate()
                    .map(|(j, &c)| l2t[j * 256 + usize::from(c)])
                    .sum();
                let adc_dot: f32 = code
                    .iter()
                    .enumerate()
                    .map(|(j, &c)| dott[j * 256 + usize::from(c)])
                    .sum();
                let want_l2 = l2_squared(q, &decoded);
                let want_dot = dot(q, &decoded);
                let scale: f32 = q.iter().zip(&decoded).map(|(a, b)| (a * b).abs()).sum();
                assert!(close(adc_l2, want_l2, want_l2), "{adc_l2} vs {want_l2}");
                assert!(close(adc_dot, want_dot, scale), "{adc_dot} vs {want_dot}");
            }
        }
    }

    #[test]
    fn encode_picks_the_nearest_centroid_per_subspace() {
        let dim = 12;
        let data = clustered(400, dim, 50, 3);
        let pq = ProductQuantizer::train(&data, dim, 4, 1).unwrap();
        let dsub = 3;
        let codebooks = pq.codebooks();
        let probes = clustered(50, dim, 7, 5);
        for x in data
            .chunks_exact(dim)
            .take(100)
            .chain(probes.chunks_exact(dim))
        {
            let mut code = [0u8; 4];
            pq.encode(x, &mut code);
            for j in 0..4 {
                let sub = &x[j * dsub..(j + 1) * dsub];
                let book = &codebooks[j * 256 * dsub..(j + 1) * 256 * dsub];
                // The transposed kernel sums like the scalar reference, so this is exact.
                let dists: Vec<f32> = book
                    .chunks_exact(dsub)
                    .map(|c| scalar::l2_squared(sub, c))
                    .collect();
                let min = dists.iter().copied().fold(f32::INFINITY, f32::min);
                let first = dists.iter().position(|&d| d == min).unwrap();
                assert_eq!(usize::from(code[j]), first, "sub-space {j}");
            }
        }
    }

    #[test]
    fn reconstruction_error_is_small_and_decreases_with_m() {
        let dim = 32;
        // Clustered data (fewer clusters than centroids): the error is about the noise.
        let data = clustered(2000, dim, 100, 11);
        let var = variance(&data, dim);
        for m in [1, 4, 16] {
            let pq = ProductQuantizer::train(&data, dim, m, 5).unwrap();
            let err = pq.reconstruction_error(&data);
            assert!(err < var * 0.001, "m = {m}: error {err} vs variance {var}");
        }
        // Unstructured data: finer sub-spaces reconstruct better.
        let data = clustered(2000, dim, 2000, 12);
        let var = variance(&data, dim);
        let mut previous = var;
        for m in [1, 2, 4, 8, 16, 32] {
            let pq = ProductQuantizer::train(&data, dim, m, 5).unwrap();
            let err = pq.reconstruction_error(&data);
            assert!(err < previous, "m = {m}: error {err} not below {previous}");
            previous = err;
        }
        let pq = ProductQuantizer::train(&data, dim, 4, 5).unwrap();
        assert_eq!(pq.reconstruction_error(&[]), 0.0);
    }

    /// Rows whose signal lies in a random 4-dimensional subspace of `dim` dimensions (with a
    /// decaying spectrum): every PQ block sees a mix of all four signal axes.
    fn subspace(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng(seed);
        let basis: Vec<f32> = (0..4 * dim).map(|_| rng.next()).collect();
        let mut data = vec![0f32; n * dim];
        for row in data.chunks_exact_mut(dim) {
            for (k, axis) in basis.chunks_exact(dim).enumerate() {
                let z = rng.next() * 4.0 / (k + 1) as f32;
                for (x, &b) in row.iter_mut().zip(axis) {
                    *x += z * b;
                }
            }
        }
        data
    }

    #[test]
    fn a_rotation_lowers_the_error_on_correlated_coordinates() {
        let dim = 32;
        let data = subspace(3000, dim, 21);
        let plain = ProductQuantizer::train(&data, dim, 8, 3).unwrap();
        let rotated = ProductQuantizer::train_rotated(&data, dim, 8, 3).unwrap();
        let (plain_err, rotated_err) = (
            plain.reconstruction_error(&data),
            rotated.reconstruction_error(&data),
        );
        assert!(
            rotated_err < 0.5 * plain_err,
            "rotated {rotated_err} vs plain {plain_err}"
        );
        let rebuilt = ProductQuantizer::from_parts(dim, 8, rotated.codebooks())
            .unwrap()
            .with_rotation(rotated.rotation().unwrap().clone())
            .unwrap();
        assert_eq!(rebuilt, rotated);
        let wrong = super::Rotation::from_parts(1, vec![1.0]).unwrap();
        assert!(plain.clone().with_rotation(wrong).is_err());
    }

    #[test]
    fn training_is_deterministic() {
        let data = clustered(300, 8, 30, 2);
        let a = ProductQuantizer::train(&data, 8, 2, 3).unwrap();
        let b = ProductQuantizer::train(&data, 8, 2, 3).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn from_parts_round_trip_and_validation() {
        let data = clustered(300, 8, 30, 4);
        let pq = ProductQuantizer::train(&data, 8, 4, 3).unwrap();
        let back = ProductQuantizer::from_parts(pq.dim(), pq.m(), pq.codebooks()).unwrap();
        assert_eq!(back, pq);
        assert_eq!(back.encode_many(&data), pq.encode_many(&data));
        assert!(pq.memory_bytes() >= 256 * 8 * 4);

        let bad = |r: Result<ProductQuantizer>| matches!(r, Err(Error::InvalidArgument(_)));
        let books = pq.codebooks();
        assert!(bad(ProductQuantizer::from_parts(8, 3, books.clone())));
        assert!(bad(ProductQuantizer::from_parts(8, 0, books.clone())));
        assert!(bad(ProductQuantizer::from_parts(0, 4, books.clone())));
        assert!(bad(ProductQuantizer::from_parts(16, 4, books.clone())));
        assert!(bad(ProductQuantizer::from_parts(8, 4, books[1..].to_vec())));
        assert!(bad(ProductQuantizer::from_parts(
            usize::MAX,
            1,
            books.clone()
        )));
        let mut nan = books;
        nan[17] = f32::NAN;
        assert!(bad(ProductQuantizer::from_parts(8, 4, nan)));
    }

    #[test]
    fn training_errors() {
        let bad = |r: Result<ProductQuantizer>| matches!(r, Err(Error::InvalidArgument(_)));
        let data = clustered(300, 8, 30, 4);
        assert!(bad(ProductQuantizer::train(&data, 8, 3, 0))); // 8 % 3 != 0
        assert!(bad(ProductQuantizer::train(&data, 8, 0, 0)));
        assert!(bad(ProductQuantizer::train(&data, 0, 1, 0)));
        assert!(bad(ProductQuantizer::train(&data[..255 * 8], 8, 2, 0))); // n < 256
        assert!(bad(ProductQuantizer::train(&data[..256 * 8 + 3], 8, 2, 0)));
        assert!(ProductQuantizer::train(&data[..256 * 8], 8, 8, 0).is_ok()); // n == 256, dsub 1
        let mut nan = data.clone();
        nan[5] = f32::INFINITY;
        assert!(bad(ProductQuantizer::train(&nan, 8, 2, 0)));
    }

    #[test]
    fn mismatched_lengths_use_the_common_prefix_in_release() {
        if cfg!(debug_assertions) {
            return; // The debug_asserts fire by design.
        }
        let data = clustered(300, 8, 30, 6);
        let pq = ProductQuantizer::train(&data, 8, 4, 3).unwrap();
        let x = &data[..8];
        let mut full = [0u8; 4];
        pq.encode(x, &mut full);
        let mut short = [9u8; 4];
        pq.encode(&x[..5], &mut short); // two complete sub-spaces
        assert_eq!(short, [full[0], full[1], 0, 0]);
        let mut long = [9u8; 6];
        pq.encode(x, &mut long);
        assert_eq!(long, [full[0], full[1], full[2], full[3], 0, 0]);
        let mut out = [7f32; 3];
        pq.decode(&full, &mut out);
        assert_eq!(out[2], 7.0);
        let mut table = vec![-1f32; 300];
        pq.l2_table(x, &mut table);
        assert_eq!(table[256], -1.0);
        assert_eq!(pq.encode_many(&data[..11]).len(), 4);
    }
}
