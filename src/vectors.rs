//! Vector storage shared by the indexes: a contiguous arena of fixed-dimension `f32` vectors,
//! each starting on a 64-byte boundary (a cache line, and one AVX-512 register), so SIMD loads
//! never straddle lines needlessly.
//!
//! The arena is safe code: it over-allocates a `Vec<f32>` by one cache line and starts slot 0 at
//! the first 64-byte-aligned float; when the buffer grows, data is moved to the new buffer's
//! aligned start.

/// Read access to stored vectors by slot: all that index algorithms see of vectors, so the same
/// algorithm can run over an in-RAM arena, a memory map or decoded codes.
pub trait VectorSource: Sync {
    /// The vector in `slot`.
    fn vector(&self, slot: usize) -> &[f32];
}

impl VectorSource for VectorArena {
    #[inline]
    fn vector(&self, slot: usize) -> &[f32] {
        self.get(slot)
    }
}

/// Floats per 64-byte cache line.
const LINE_FLOATS: usize = 16;

/// A growable arena of `dim`-dimensional vectors addressed by dense slot numbers.
#[derive(Clone, Debug)]
pub struct VectorArena {
    dim: usize,
    /// Floats between the starts of consecutive slots: `dim` rounded up to a cache line.
    stride: usize,
    buf: Vec<f32>,
    /// Index in `buf` of slot 0 (64-byte aligned).
    start: usize,
    len: usize,
}

impl VectorArena {
    /// An empty arena for vectors of `dim` floats.
    pub fn new(dim: usize) -> Self {
        let mut arena = VectorArena {
            dim,
            stride: dim.div_ceil(LINE_FLOATS).max(1) * LINE_FLOATS,
            buf: Vec::new(),
            start: 0,
            len: 0,
        };
        arena.reserve_slots(0);
        arena
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of vectors held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no vector is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of memory allocated for vectors.
    pub fn memory_bytes(&self) -> usize {
        self.buf.capacity() * std::mem::size_of::<f32>()
    }

    /// The vector in `slot`. Panics if `slot >= len()` (an internal invariant, never user input).
    #[inline]
    pub fn get(&self, slot: usize) -> &[f32] {
        assert!(slot < self.len, "slot {slot} out of {}", self.len);
        let at = self.start + slot * self.stride;
        &self.buf[at..at + self.dim]
    }

    /// Overwrites the vector in `slot` (`vector.len()` must be `dim`).
    pub fn set(&mut self, slot: usize, vector: &[f32]) {
        assert!(slot < self.len && vector.len() == self.dim);
        let at = self.start + slot * self.stride;
        self.buf[at..at + self.dim].copy_from_slice(vector);
    }

    /// Appends a vector and returns its slot.
    pub fn push(&mut self, vector: &[f32]) -> usize {
        assert_eq!(vector.len(), self.dim);
        if self.start + (self.len + 1) * self.stride > self.buf.len() {
            // Grow by half: the old and new buffers coexist while copying, so the transient
            // peak stays at 2.5× the data instead of 3× with doubling.
            self.reserve_slots((self.len + 1).max(self.len + self.len / 2).max(16));
        }
        self.len += 1;
        self.set(self.len - 1, vector);
        self.len - 1
    }

    /// Moves the last vector into `slot` and shrinks by one (`slot` may be the last).
    pub fn swap_remove(&mut self, slot: usize) {
        assert!(slot < self.len);
        let last = self.len - 1;
        if slot != last {
            let from = self.start + last * self.stride;
            self.buf
                .copy_within(from..from + self.dim, self.start + slot * self.stride);
        }
        self.len -= 1;
    }

    /// Removes every vector, keeping the dimension.
    pub fn clear(&mut self) {
        *self = VectorArena::new(self.dim);
    }

    /// Makes room for `slots` vectors in total, moving the data to an aligned start.
    pub fn reserve_slots(&mut self, slots: usize) {
        let needed = slots * self.stride + LINE_FLOATS;
        if needed <= self.buf.len() && self.start == aligned_start(&self.buf) {
            return;
        }
        let mut buf = vec![0.0f32; needed.max(self.buf.len())];
        let start = aligned_start(&buf);
        let used = self.len * self.stride;
        buf[start..start + used].copy_from_slice(&self.buf[self.start..self.start + used]);
        self.buf = buf;
        self.start = start;
    }
}

/// Index of the first 64-byte-aligned float of `buf` (within its first cache line).
fn aligned_start(buf: &[f32]) -> usize {
    let misalignment = buf.as_ptr() as usize % 64;
    if misalignment == 0 {
        0
    } else {
        (64 - misalignment) / std::mem::size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_slot_is_cache_line_aligned() {
        for dim in [1, 3, 16, 17, 100, 1024] {
            let mut arena = VectorArena::new(dim);
            for i in 0..100 {
                arena.push(&vec![i as f32; dim]);
            }
            for slot in 0..100 {
                assert_eq!(
                    arena.get(slot).as_ptr() as usize % 64,
                    0,
                    "dim {dim} slot {slot}"
                );
                assert_eq!(arena.get(slot), vec![slot as f32; dim].as_slice());
            }
        }
    }

    proptest! {
        #[test]
        fn behaves_like_a_vec_of_vectors(ops in proptest::collection::vec((0u8..3, 0usize..50, -5.0f32..5.0), 0..200)) {
            let dim = 5;
            let mut arena = VectorArena::new(dim);
            let mut model: Vec<Vec<f32>> = Vec::new();
            for (op, at, value) in ops {
                match op {
                    0 => { arena.push(&[value; 5]); model.push(vec![value; 5]); }
                    1 if !model.is_empty() => { let slot = at % model.len(); arena.swap_remove(slot); model.swap_remove(slot); }
                    _ if !model.is_empty() => { let slot = at % model.len(); arena.set(slot, &[value; 5]); model[slot] = vec![value; 5]; }
                    _ => {}
                }
                prop_assert_eq!(arena.len(), model.len());
                for (slot, v) in model.iter().enumerate() {
                    prop_assert_eq!(arena.get(slot), v.as_slice());
                }
            }
        }
    }
}
