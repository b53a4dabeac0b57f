//! The exact-latency form of a bucket: a vector whose first values live in place.
//!
//! Why: on sparse traffic (backfills: about one attempt per key-minute) nearly every
//! record opens a bucket of its own, and a heap vector there cost a `malloc` and a `free`
//! per record. Two values fit in the space the vector header takes anyway.

use std::ops::{Deref, DerefMut};

const INLINE: usize = 2;

#[derive(Debug, Clone)]
pub enum FewVec {
    Inline(u8, [u64; INLINE]),
    Heap(Vec<u64>),
}

impl Default for FewVec {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl FewVec {
    pub const EMPTY: FewVec = FewVec::Inline(0, [0; INLINE]);

    #[inline]
    pub fn push(&mut self, v: u64) {
        match self {
            FewVec::Inline(n, a) if (*n as usize) < INLINE => {
                a[*n as usize] = v;
                *n += 1;
            }
            FewVec::Inline(n, a) => {
                let mut h = Vec::with_capacity(4 * INLINE);
                h.extend_from_slice(&a[..*n as usize]);
                h.push(v);
                *self = FewVec::Heap(h);
            }
            FewVec::Heap(h) => h.push(v),
        }
    }

    pub fn extend_from_slice(&mut self, values: &[u64]) {
        for &v in values {
            self.push(v);
        }
    }
}

impl Deref for FewVec {
    type Target = [u64];
    #[inline]
    fn deref(&self) -> &[u64] {
        match self {
            FewVec::Inline(n, a) => &a[..*n as usize],
            FewVec::Heap(h) => h,
        }
    }
}

impl DerefMut for FewVec {
    fn deref_mut(&mut self) -> &mut [u64] {
        match self {
            FewVec::Inline(n, a) => &mut a[..*n as usize],
            FewVec::Heap(h) => h,
        }
    }
}

impl From<Vec<u64>> for FewVec {
    fn from(v: Vec<u64>) -> Self {
        if v.len() <= INLINE {
            let mut f = FewVec::default();
            f.extend_from_slice(&v);
            f
        } else {
            FewVec::Heap(v)
        }
    }
}

impl<'a> IntoIterator for &'a FewVec {
    type Item = &'a u64;
    type IntoIter = std::slice::Iter<'a, u64>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spills_to_the_heap_in_order() {
        let mut f = FewVec::default();
        assert!(f.is_empty());
        for v in 1..=5 {
            f.push(v * 10);
            assert_eq!(f.len(), v as usize);
        }
        assert!(matches!(f, FewVec::Heap(_)));
        assert_eq!(&*f, &[10, 20, 30, 40, 50]);
        let g: FewVec = vec![7].into();
        assert!(matches!(g, FewVec::Inline(1, _)));
        assert_eq!(&*g, &[7]);
        let mut s = FewVec::from(vec![3, 1]);
        s.sort_unstable();
        assert_eq!(s.to_vec(), vec![1, 3]);
    }
}
