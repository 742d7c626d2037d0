//! The trained state of an IVF-PQ index: the coarse centroids, the product quantiser of the
//! residuals `x − c`, and the inverted lists they fill.
//!
//! For L2 and cosine (whose unit vectors rank by L2) each list entry also carries its *norm term* `‖r‖² + 2⟨c − μ, r⟩` (the decoded
//! residual `r`, its list's centroid `c`, the mean `μ` of the centroids), in half precision times
//! a power-of-two scale fixed at training (so that no term can overflow), so that
//! `‖q − (c + r)‖² = ‖q − c‖² + (‖r‖² + 2⟨c − μ, r⟩) − 2⟨q − μ, r⟩`: the first term is the
//! probe order's centroid distance, the second the stored term, the third one ADC table per
//! query shared by every list. A probed list needs no table of its own, and the index keeps 2
//! bytes per vector instead of Faiss's precomputed `nlist × m × 256` table (20.7 MB at nlist
//! 1,265, m 16). Centring on `μ` keeps the terms (and so their rounding) as small as the spread
//! of the centroids, wherever the data sits: distances do not depend on an offset shared by
//! every vector, and neither does the terms' precision.

use std::sync::OnceLock;

use half::f16;
use rayon::prelude::*;

use crate::distance::{self, adc};
use crate::index::kmeans;
use crate::index::pq::ProductQuantizer;
use crate::index::stored::StoredVectors;
use crate::types::Metric;

/// One inverted list: the slots of its vectors, their codes (`m` bytes each) and, for L2 and
/// cosine, their norm terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct InvList {
    pub(super) slots: Vec<u32>,
    pub(super) codes: Vec<u8>,
    /// L2 and cosine (empty for dot): each entry's `‖r‖² + 2⟨c − μ, r⟩` divided by the index's
    /// `l2_term_scale` (see the module comment).
    pub(super) l2_terms: Vec<f16>,
}

/// A vector encoded for the lists.
pub(super) struct Encoded {
    pub(super) list: u32,
    pub(super) slot: u32,
    pub(super) code: Vec<u8>,
    /// Its scaled norm term (0 when the index keeps none).
    pub(super) l2_term: f16,
}

/// Buffers one encoding thread reuses.
struct EncodeScratch {
    distances: Vec<f32>,
    centroid: Vec<f32>,
    residual: Vec<f32>,
}

/// The trained quantisers and the lists they fill.
pub(super) struct Trained {
    /// The centroids dimension-major (`dim × nlist`: coordinate `d` of centroid `l` at
    /// `d * nlist + l`), for one-call distances to all of them; the only copy.
    pub(super) centroids_t: Vec<f32>,
    pub(super) pq: ProductQuantizer,
    pub(super) lists: Vec<InvList>,
    /// Whether the entries carry norm terms: L2, and cosine (unit vectors, ranked by their
    /// squared L2 distance); not dot products.
    pub(super) keeps_l2_terms: bool,
    /// `μ`, the mean of the centroids (`dim` floats): the norm terms and the query's L2 table
    /// are taken relative to it.
    pub(super) center: Vec<f32>,
    /// What the stored norm terms are multiplied by: a power of two that keeps the largest
    /// possible term below 2¹⁴ in half precision (whose largest value is 65,504).
    pub(super) l2_term_scale: f32,
    /// The reconstruction error `(mse, relative)` over a sample, computed on first request
    /// (the quantisers never change after training, so it stays valid).
    pub(super) reconstruction: OnceLock<(f64, f64)>,
    /// Live vectors when the quantisers were trained.
    pub(super) trained_on: usize,
    /// Slots below this are in the lists (or vacant); later ones wait to be encoded.
    pub(super) indexed: usize,
}

impl Trained {
    /// Assembles a trained state from row-major `centroids` (`nlist × dim`) and lists of slots
    /// and codes; for L2 it computes the lists' norm terms.
    pub(super) fn new(
        centroids: &[f32],
        pq: ProductQuantizer,
        lists: Vec<InvList>,
        (trained_on, indexed): (usize, usize),
        metric: Metric,
    ) -> Trained {
        let dim = pq.dim();
        let centroids_t = kmeans::transpose(centroids, dim);
        let center = mean_row(centroids, dim);
        let l2_term_scale = l2_term_scale(centroids, &center, &pq);
        let mut trained = Trained {
            centroids_t,
            pq,
            lists,
            keeps_l2_terms: metric != Metric::Dot,
            center,
            l2_term_scale,
            reconstruction: OnceLock::new(),
            trained_on,
            indexed,
        };
        if trained.keeps_l2_terms {
            trained.fill_l2_terms();
        }
        trained
    }

    /// Number of lists.
    pub(super) fn nlist(&self) -> usize {
        self.lists.len()
    }

    fn dim(&self) -> usize {
        self.pq.dim()
    }

    /// Centroid `list` into `out` (`dim` floats).
    pub(super) fn centroid(&self, list: usize, out: &mut [f32]) {
        kmeans::transposed_row(&self.centroids_t, self.nlist(), list, out);
    }

    /// The centroids row-major (`nlist × dim`), as checkpoints store them.
    pub(super) fn centroids(&self) -> Vec<f32> {
        kmeans::transpose(&self.centroids_t, self.nlist())
    }

    fn scratch(&self) -> EncodeScratch {
        EncodeScratch {
            distances: vec![0f32; self.nlist()],
            centroid: vec![0f32; self.dim()],
            residual: vec![0f32; self.dim()],
        }
    }

    /// `‖r‖² + 2⟨c − μ, r⟩` for the decoded residual `r` of `code` (into `decoded`) and
    /// centroid `c`, scaled to be stored.
    fn l2_term(&self, centroid: &[f32], code: &[u8], decoded: &mut [f32]) -> f16 {
        self.pq.decode(code, decoded);
        let offset: f32 = centroid
            .iter()
            .zip(&self.center)
            .zip(decoded.iter())
            .map(|((c, m), r)| (c - m) * r)
            .sum();
        let term = distance::dot(decoded, decoded) + 2.0 * offset;
        f16::from_f32(term / self.l2_term_scale)
    }

    /// The query's ADC table for L2 (`m × 256` floats): `−2⟨q − μ, r⟩` for every codeword `r`
    /// (`centred`, `dim` floats, receives `q − μ`).
    pub(super) fn l2_query_table(&self, q: &[f32], centred: &mut [f32], table: &mut [f32]) {
        centred
            .iter_mut()
            .zip(q.iter().zip(&self.center))
            .for_each(|(out, (x, m))| *out = x - m);
        self.pq.dot_table(centred, table);
        table.iter_mut().for_each(|x| *x *= -2.0);
    }

    /// Computes every list's norm terms from its centroid and codes.
    fn fill_l2_terms(&mut self) {
        let m = self.pq.code_size();
        let terms: Vec<Vec<f16>> = self
            .lists
            .par_iter()
            .enumerate()
            .map_init(
                || self.scratch(),
                |scratch, (l, list)| {
                    self.centroid(l, &mut scratch.centroid);
                    list.codes
                        .chunks_exact(m)
                        .map(|code| self.l2_term(&scratch.centroid, code, &mut scratch.residual))
                        .collect()
                },
            )
            .collect();
        for (list, terms) in self.lists.iter_mut().zip(terms) {
            list.l2_terms = terms;
        }
    }

    /// The nearest list of `vector` and the code of its residual.
    fn encode_with(&self, vector: &[f32], slot: u32, scratch: &mut EncodeScratch) -> Encoded {
        adc::l2_squared_transposed(vector, &self.centroids_t, &mut scratch.distances);
        let list = kmeans::argmin(&scratch.distances).0;
        self.centroid(list as usize, &mut scratch.centroid);
        scratch
            .residual
            .iter_mut()
            .zip(vector.iter().zip(&scratch.centroid))
            .for_each(|(r, (x, c))| *r = x - c);
        let mut code = vec![0u8; self.pq.code_size()];
        self.pq.encode(&scratch.residual, &mut code);
        let l2_term = if self.keeps_l2_terms {
            self.l2_term(&scratch.centroid, &code, &mut scratch.residual)
        } else {
            f16::ZERO
        };
        Encoded {
            list,
            slot,
            code,
            l2_term,
        }
    }

    /// The nearest list of `vector` and the code of its residual (`slot` 0).
    pub(super) fn encode(&self, vector: &[f32]) -> Encoded {
        self.encode_with(vector, 0, &mut self.scratch())
    }

    /// The occupied slots of `range` of `stored`, encoded in parallel.
    pub(super) fn encode_slots(
        &self,
        stored: &StoredVectors,
        range: std::ops::Range<usize>,
    ) -> Vec<Encoded> {
        range
            .into_par_iter()
            .filter(|&slot| stored.slots.id(slot).is_some())
            .map_init(
                || self.scratch(),
                |scratch, slot| self.encode_with(stored.vectors.get(slot), slot as u32, scratch),
            )
            .collect()
    }

    /// Adds encoded vectors to their lists; slots below `indexed` are then all in the lists
    /// (or vacant). Each list grows by what it receives at once (a full build leaves no slack).
    pub(super) fn append(&mut self, entries: Vec<Encoded>, indexed: usize) {
        let mut added = vec![0usize; self.nlist()];
        for e in &entries {
            added[e.list as usize] += 1;
        }
        let m = self.pq.code_size();
        for (list, &n) in self.lists.iter_mut().zip(&added).filter(|(_, &n)| n > 0) {
            // Exactly what a list's first fill needs; amortised growth afterwards.
            if list.slots.is_empty() {
                list.slots.reserve_exact(n);
                list.codes.reserve_exact(n * m);
                list.l2_terms
                    .reserve_exact(if self.keeps_l2_terms { n } else { 0 });
            } else {
                list.slots.reserve(n);
                list.codes.reserve(n * m);
                list.l2_terms
                    .reserve(if self.keeps_l2_terms { n } else { 0 });
            }
        }
        for e in entries {
            let list = &mut self.lists[e.list as usize];
            list.slots.push(e.slot);
            list.codes.extend_from_slice(&e.code);
            if self.keeps_l2_terms {
                list.l2_terms.push(e.l2_term);
            }
        }
        self.indexed = indexed;
    }

    /// Bytes of the list entries: slots, codes and norm terms.
    pub(super) fn entry_memory_bytes(&self) -> usize {
        self.lists
            .iter()
            .map(|l| l.slots.capacity() * 4 + l.codes.capacity() + l.l2_terms.capacity() * 2)
            .sum()
    }

    /// Bytes of the quantisers and the lists' own headers: what the index holds besides the
    /// entries and the full vectors.
    pub(super) fn quantiser_memory_bytes(&self) -> usize {
        self.centroids_t.capacity() * 4
            + self.pq.memory_bytes()
            + self.lists.capacity() * std::mem::size_of::<InvList>()
    }
}

/// The mean of the rows of `rows` (`dim` wide; zeros when there are none).
fn mean_row(rows: &[f32], dim: usize) -> Vec<f32> {
    let mut sum = vec![0f64; dim];
    let mut n = 0usize;
    for row in rows.chunks_exact(dim.max(1)) {
        sum.iter_mut()
            .zip(row)
            .for_each(|(s, &x)| *s += f64::from(x));
        n += 1;
    }
    sum.iter().map(|&s| (s / n.max(1) as f64) as f32).collect()
}

/// The power of two by which norm terms are divided to be stored: the largest term possible,
/// `max ‖r‖² + 2 · max ‖c − μ‖ · max ‖r‖` (`max ‖r‖²` the sum over the sub-spaces of their
/// longest codeword's squared norm), then lands below 2¹⁴. Half precision keeps 11 significant
/// bits at every magnitude, so the scale costs no precision; it only rules out overflow (say,
/// for coordinates in the hundreds).
fn l2_term_scale(centroids: &[f32], center: &[f32], pq: &ProductQuantizer) -> f32 {
    let dsub = pq.dsub().max(1);
    let codebooks = pq.codebooks();
    let longest_residual_squared: f64 = codebooks
        .chunks(256 * dsub)
        .map(|book| {
            book.chunks_exact(dsub)
                .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
                .fold(0.0, f64::max)
        })
        .sum();
    let longest_centroid = centroids
        .chunks_exact(center.len().max(1))
        .map(|c| {
            c.iter()
                .zip(center)
                .map(|(&x, &m)| (f64::from(x) - f64::from(m)).powi(2))
                .sum::<f64>()
        })
        .fold(0.0, f64::max)
        .sqrt();
    let bound = longest_residual_squared + 2.0 * longest_centroid * longest_residual_squared.sqrt();
    if !(bound.is_finite() && bound > 0.0) {
        return 1.0;
    }
    // Any f32 bound is below 2¹²⁸: the exponent stays within f32's normal range.
    let exponent = (bound.log2() - 14.0).ceil().clamp(-126.0, 127.0) as i32;
    2f32.powi(exponent)
}
