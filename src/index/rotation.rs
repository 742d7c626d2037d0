//! A learned orthonormal rotation applied before product quantisation: the parametric solution
//! of Optimized Product Quantization (Ge, He, Ke & Sun, CVPR 2013). The rotation's rows are the
//! principal axes of the training data, assigned to PQ sub-spaces by *eigenvalue allocation* so
//! that every sub-space holds a similar product of eigenvalues (a similar share of the variance).
//!
//! Plain PQ quantises each block of `dim / m` coordinates on its own, so it wastes its codebooks
//! when coordinates are correlated across blocks, as in embeddings whose information lies in a
//! low-dimensional subspace at an arbitrary orientation. Principal axes are uncorrelated, and an
//! orthonormal map keeps squared L2 distances and inner products unchanged, so the quantiser's
//! ADC distances still estimate the quantities the index ranks by.

use nalgebra::{DMatrix, SymmetricEigen};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Rows of the training data used to estimate the covariance (more add time, not accuracy).
const COVARIANCE_ROWS: usize = 16_384;

/// Largest dimension a rotation is trained for: the eigendecomposition costs `O(dim³)` and the
/// matrix `dim² × 4` bytes of RAM (4 MiB at 1024).
pub const MAX_ROTATED_DIM: usize = 1024;

/// Tolerance on the norm of a stored row (rows are unit vectors).
const UNIT_TOLERANCE: f32 = 1e-3;

/// An orthonormal `dim × dim` rotation; output coordinate `i` is `⟨row_i, x⟩`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rotation {
    dim: usize,
    /// `dim × dim` floats, row-major.
    rows: Vec<f32>,
}

impl Rotation {
    /// Learns the rotation for a quantiser of `m` sub-spaces from `data` (`n × dim`, row-major):
    /// the eigenvectors of the data's covariance (estimated on at most 16,384 evenly spaced
    /// rows), eigenvalue-allocated to the `m` sub-spaces. Deterministic.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `dim` is 0 or above [`MAX_ROTATED_DIM`], `m` does not
    /// divide `dim`, `data` is not `n × dim` with `n ≥ 2`, or it holds NaN or infinities.
    pub fn train(data: &[f32], dim: usize, m: usize) -> Result<Self> {
        if dim == 0 || dim > MAX_ROTATED_DIM || m == 0 || !dim.is_multiple_of(m) {
            return Err(Error::InvalidArgument(format!(
                "rotation: dimension {dim} must be 1..={MAX_ROTATED_DIM} and divisible by the \
                 {m} sub-spaces"
            )));
        }
        if !data.len().is_multiple_of(dim) || data.len() / dim < 2 {
            return Err(Error::InvalidArgument(format!(
                "rotation: training needs n × {dim} floats with n ≥ 2, got {} floats",
                data.len()
            )));
        }
        if data.iter().any(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument(
                "rotation: training data holds NaN or infinite values".into(),
            ));
        }
        let covariance = covariance(data, dim);
        let eigen = SymmetricEigen::new(DMatrix::from_row_slice(dim, dim, &covariance));
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| eigen.eigenvalues[b].total_cmp(&eigen.eigenvalues[a]));
        let descending: Vec<f64> = order.iter().map(|&i| eigen.eigenvalues[i]).collect();
        let positions = allocate(&descending, m);
        let mut rows = vec![0f32; dim * dim];
        for (rank, &axis) in order.iter().enumerate() {
            let row = &mut rows[positions[rank] * dim..(positions[rank] + 1) * dim];
            for (r, &v) in row.iter_mut().zip(eigen.eigenvectors.column(axis).iter()) {
                *r = v as f32;
            }
        }
        Ok(Rotation { dim, rows })
    }

    /// Rebuilds a rotation from stored rows (as returned by [`Rotation::rows`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `dim` is 0 or above [`MAX_ROTATED_DIM`], `rows` is not
    /// `dim × dim` finite floats or a row is not a unit vector. Callers loading a file should
    /// report it as corrupted.
    pub fn from_parts(dim: usize, rows: Vec<f32>) -> Result<Self> {
        if dim == 0 || dim > MAX_ROTATED_DIM || dim.checked_mul(dim) != Some(rows.len()) {
            return Err(Error::InvalidArgument(format!(
                "rotation: {} floats for dimension {dim}, expected {dim} × {dim} with a \
                 dimension of 1..={MAX_ROTATED_DIM}",
                rows.len()
            )));
        }
        let dot = crate::distance::kernels().dot;
        let unit = |row: &[f32]| {
            let norm = dot(row, row);
            norm.is_finite() && (norm - 1.0).abs() <= UNIT_TOLERANCE
        };
        if !rows.chunks_exact(dim).all(unit) {
            return Err(Error::InvalidArgument(
                "rotation: a row is not a finite unit vector".into(),
            ));
        }
        Ok(Rotation { dim, rows })
    }

    /// Dimension rotated.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The rows, `dim × dim` floats row-major.
    pub fn rows(&self) -> &[f32] {
        &self.rows
    }

    /// Both lengths should be `dim` (checked in debug builds only).
    fn debug_check_lengths(&self, input: &[f32], out: &[f32]) {
        debug_assert_eq!(
            input.len(),
            self.dim,
            "input length differs from the dimension"
        );
        debug_assert_eq!(
            out.len(),
            self.dim,
            "output length differs from the dimension"
        );
    }

    /// `out = R · x`. Lengths should be `dim` (`debug_assert!`ed); otherwise the common prefix
    /// of `x` is rotated and only the first `out.len()` coordinates are written.
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        self.debug_check_lengths(x, out);
        let dot = crate::distance::kernels().dot;
        let used = x.len().min(self.dim);
        for (o, row) in out.iter_mut().zip(self.rows.chunks_exact(self.dim)) {
            *o = dot(&row[..used], &x[..used]);
        }
    }

    /// `out = Rᵀ · y`, the inverse rotation. Same length contract as [`Rotation::apply`].
    pub fn apply_inverse(&self, y: &[f32], out: &mut [f32]) {
        self.debug_check_lengths(y, out);
        let used = out.len().min(self.dim);
        out[..used].fill(0.0);
        for (&coefficient, row) in y.iter().zip(self.rows.chunks_exact(self.dim)) {
            for (o, &r) in out[..used].iter_mut().zip(row) {
                *o += coefficient * r;
            }
        }
    }

    /// Rotates every row of `data` (`n × dim`), in parallel.
    pub fn apply_many(&self, data: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; data.len() - data.len() % self.dim];
        out.par_chunks_exact_mut(self.dim)
            .zip(data.par_chunks_exact(self.dim))
            .for_each(|(o, x)| self.apply(x, o));
        out
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.rows.capacity() * std::mem::size_of::<f32>()
    }
}

/// The covariance matrix (`dim × dim`, row-major, `f64`) of at most [`COVARIANCE_ROWS`] evenly
/// spaced rows of `data`, accumulated in parallel over chunks of rows.
fn covariance(data: &[f32], dim: usize) -> Vec<f64> {
    let n = data.len() / dim;
    let step = n.div_ceil(COVARIANCE_ROWS);
    let rows: Vec<&[f32]> = data.chunks_exact(dim).step_by(step).collect();
    let count = rows.len() as f64;
    let mut mean = vec![0f64; dim];
    for row in &rows {
        for (m, &x) in mean.iter_mut().zip(row.iter()) {
            *m += f64::from(x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let mut sums = rows
        .par_chunks(256)
        .map(|chunk| {
            let mut acc = vec![0f64; dim * dim];
            let mut centred = vec![0f64; dim];
            for row in chunk {
                for ((c, &x), m) in centred.iter_mut().zip(row.iter()).zip(&mean) {
                    *c = f64::from(x) - m;
                }
                for (i, &ci) in centred.iter().enumerate() {
                    let line = &mut acc[i * dim + i..(i + 1) * dim];
                    for (a, &cj) in line.iter_mut().zip(&centred[i..]) {
                        *a += ci * cj;
                    }
                }
            }
            acc
        })
        .reduce(
            || vec![0f64; dim * dim],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                a
            },
        );
    for i in 0..dim {
        for j in i..dim {
            let v = sums[i * dim + j] / count;
            sums[i * dim + j] = v;
            sums[j * dim + i] = v;
        }
    }
    sums
}

/// Eigenvalue allocation: given eigenvalues in descending order, the output coordinate of each
/// (a permutation of `0..dim`). The `m` largest open one sub-space each; every further one goes
/// to the sub-space with room whose product of eigenvalues is smallest (sums of logarithms, with
/// a floor so null directions compare), filling coordinates `j·dsub ..` of sub-space `j` in turn.
fn allocate(descending: &[f64], m: usize) -> Vec<usize> {
    let dim = descending.len();
    let dsub = dim / m;
    let largest = descending
        .first()
        .copied()
        .unwrap_or(0.0)
        .max(f64::MIN_POSITIVE);
    let floor = largest * 1e-12;
    let mut log_product = vec![0f64; m];
    let mut filled = vec![0usize; m];
    descending
        .iter()
        .enumerate()
        .map(|(rank, &value)| {
            let bucket = if rank < m {
                rank
            } else {
                (0..m)
                    .filter(|&j| filled[j] < dsub)
                    .min_by(|&a, &b| log_product[a].total_cmp(&log_product[b]))
                    .unwrap_or(0)
            };
            let position = bucket * dsub + filled[bucket];
            filled[bucket] += 1;
            log_product[bucket] += value.max(floor).ln();
            position
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix;

    /// Rows in a random `intrinsic`-dimensional subspace of `dim` dimensions, with a decaying
    /// spectrum: the case PQ handles badly without a rotation.
    fn subspace_data(n: usize, dim: usize, intrinsic: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix(seed);
        let basis: Vec<f32> = (0..intrinsic * dim)
            .map(|_| rng.next_f64() as f32 - 0.5)
            .collect();
        let mut data = vec![0f32; n * dim];
        for row in data.chunks_exact_mut(dim) {
            for (k, axis) in basis.chunks_exact(dim).enumerate() {
                let z = (rng.next_f64() as f32 - 0.5) / (k + 1) as f32;
                for (x, &b) in row.iter_mut().zip(axis) {
                    *x += z * b;
                }
            }
        }
        data
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-3 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn the_rotation_is_orthonormal_and_keeps_distances_and_products() {
        let dim = 24;
        let data = subspace_data(500, dim, 6, 7);
        let rotation = Rotation::train(&data, dim, 6).expect("trains");
        let dot = crate::distance::kernels().dot;
        let rows = rotation.rows();
        for i in 0..dim {
            for j in 0..dim {
                let expected = if i == j { 1.0 } else { 0.0 };
                let got = dot(&rows[i * dim..(i + 1) * dim], &rows[j * dim..(j + 1) * dim]);
                assert!(close(got, expected), "rows {i}·{j} = {got}");
            }
        }
        let (a, b) = (&data[..dim], &data[dim..2 * dim]);
        let (mut ra, mut rb) = (vec![0f32; dim], vec![0f32; dim]);
        rotation.apply(a, &mut ra);
        rotation.apply(b, &mut rb);
        let l2 = crate::distance::kernels().l2_squared;
        assert!(close(l2(a, b), l2(&ra, &rb)));
        assert!(close(dot(a, b), dot(&ra, &rb)));
        let mut back = vec![0f32; dim];
        rotation.apply_inverse(&ra, &mut back);
        for (x, y) in a.iter().zip(&back) {
            assert!(close(*x, *y), "{x} vs {y}");
        }
    }

    #[test]
    fn eigenvalue_allocation_balances_the_sub_spaces() {
        let values: Vec<f64> = (1..=16).rev().map(|v| f64::from(v).powi(3)).collect();
        let positions = allocate(&values, 4);
        let mut seen = positions.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..16).collect::<Vec<_>>(), "a permutation");
        // The four largest open the four sub-spaces.
        assert_eq!(&positions[..4], &[0, 4, 8, 12]);
        let log_products: Vec<f64> = (0..4)
            .map(|j| {
                (0..16)
                    .filter(|&r| positions[r] / 4 == j)
                    .map(|r| values[r].ln())
                    .sum()
            })
            .collect();
        let spread = log_products.iter().cloned().fold(f64::MIN, f64::max)
            - log_products.iter().cloned().fold(f64::MAX, f64::min);
        // Sequential filling (0..4 in sub-space 0, …) would spread the log-products by ~25.
        assert!(spread < 4.0, "log-products {log_products:?}");
    }

    #[test]
    fn the_leading_axis_carries_the_most_variance() {
        let dim = 16;
        let data = subspace_data(2000, dim, 3, 3);
        let rotation = Rotation::train(&data, dim, 4).expect("trains");
        let mut variance = vec![0f64; dim];
        let mut y = vec![0f32; dim];
        for row in data.chunks_exact(dim) {
            rotation.apply(row, &mut y);
            for (v, &c) in variance.iter_mut().zip(&y) {
                *v += f64::from(c) * f64::from(c);
            }
        }
        // The first coordinate of each sub-space holds one of the top 4 axes; the 3-dimensional
        // signal lives there, the rest is empty.
        let leading: f64 = (0..4).map(|j| variance[j * 4]).sum();
        let total: f64 = variance.iter().sum();
        assert!(leading > 0.999 * total, "{leading} of {total}");
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(
            Rotation::train(&[0.0; 8], 4, 3).is_err(),
            "m must divide dim"
        );
        assert!(Rotation::train(&[0.0; 4], 4, 2).is_err(), "one row");
        assert!(Rotation::train(&[f32::NAN; 8], 4, 2).is_err(), "NaN");
        assert!(
            Rotation::train(&[], MAX_ROTATED_DIM + 1, 1).is_err(),
            "too wide"
        );
        assert!(
            Rotation::from_parts(2, vec![1.0, 0.0, 0.0]).is_err(),
            "shape"
        );
        let wide = MAX_ROTATED_DIM + 1;
        assert!(
            Rotation::from_parts(wide, vec![0.0; wide * wide]).is_err(),
            "too wide"
        );
        assert!(
            Rotation::from_parts(2, vec![2.0, 0.0, 0.0, 1.0]).is_err(),
            "not unit"
        );
        let identity = Rotation::from_parts(2, vec![1.0, 0.0, 0.0, 1.0]).expect("identity");
        let mut out = [0f32; 2];
        identity.apply(&[3.0, 4.0], &mut out);
        assert_eq!(out, [3.0, 4.0]);
    }
}
