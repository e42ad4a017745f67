//! Zero-initialised heap memory aligned to 64 bytes (a cache line, and the widest vector
//! register a kernel may load from), growable with or without keeping old contents.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// Alignment of every buffer the executor allocates.
pub const ALIGN: usize = 64;

/// An owned byte buffer whose start is `ALIGN`-aligned. A zero-capacity buffer still has
/// a non-null, aligned (dangling) pointer, so kernels may receive it for empty tensors.
#[derive(Debug)]
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
}

// The buffer is plain bytes with a unique owner; sharing it is as safe as sharing `Vec<u8>`.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn new() -> AlignedBuf {
        AlignedBuf {
            ptr: dangling(),
            cap: 0,
        }
    }

    /// A zeroed buffer of at least `bytes` bytes, or `None` when the allocation fails.
    pub fn with_capacity(bytes: usize) -> Option<AlignedBuf> {
        if bytes == 0 {
            return Some(AlignedBuf::new());
        }
        let layout = Layout::from_size_align(bytes, ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(AlignedBuf { ptr, cap: bytes })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Makes room for `bytes` bytes. Growing allocates `bytes` plus `headroom` and drops
    /// the old contents, so callers grow before they fill. Returns `false` when the
    /// allocation fails (the old buffer is kept).
    pub fn reserve(&mut self, bytes: usize, headroom: usize) -> bool {
        if bytes <= self.cap {
            return true;
        }
        match AlignedBuf::with_capacity(bytes.saturating_add(headroom)) {
            Some(b) => {
                *self = b;
                true
            }
            None => false,
        }
    }

    /// Makes room for `bytes` bytes keeping the first `keep` bytes: growing allocates
    /// `bytes` plus `headroom` and copies them over. Returns `false` when the allocation
    /// fails or `keep` exceeds the contents (the old buffer is kept).
    pub fn grow(&mut self, bytes: usize, headroom: usize, keep: usize) -> bool {
        if keep > self.cap {
            return false;
        }
        if bytes <= self.cap {
            return true;
        }
        match AlignedBuf::with_capacity(bytes.saturating_add(headroom)) {
            Some(mut b) => {
                b.as_mut_slice()[..keep].copy_from_slice(&self.as_slice()[..keep]);
                *self = b;
                true
            }
            None => false,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `cap` initialised (zeroed at allocation) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.cap) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }
}

impl Default for AlignedBuf {
    fn default() -> Self {
        AlignedBuf::new()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap > 0 {
            if let Ok(layout) = Layout::from_size_align(self.cap, ALIGN) {
                // SAFETY: allocated in `with_capacity` with this very layout.
                unsafe { dealloc(self.ptr.as_ptr(), layout) };
            }
        }
    }
}

/// A type whose alignment is `ALIGN`, for an aligned dangling pointer.
#[repr(align(64))]
struct CacheLine;

fn dangling() -> NonNull<u8> {
    // An aligned non-null address that is never dereferenced (zero-length tensors).
    NonNull::<CacheLine>::dangling().cast()
}

/// Rounds `n` up to a multiple of `ALIGN`, or `None` on overflow.
pub fn align_up(n: usize) -> Option<usize> {
    n.checked_add(ALIGN - 1).map(|v| v & !(ALIGN - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_zeroed() {
        for n in [0usize, 1, 63, 64, 1000] {
            let b = AlignedBuf::with_capacity(n).expect("small allocation");
            assert_eq!(b.as_ptr() as usize % ALIGN, 0, "{n} bytes");
            assert!(b.as_slice().iter().all(|&x| x == 0));
        }
        assert_eq!(align_up(1), Some(64));
        assert_eq!(align_up(128), Some(128));
        assert_eq!(align_up(usize::MAX), None);
    }

    #[test]
    fn growing_keeps_the_prefix() {
        let mut b = AlignedBuf::with_capacity(8).expect("small allocation");
        b.as_mut_slice().copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(b.grow(100, 10, 5));
        assert_eq!(b.as_slice().len(), 110);
        assert_eq!(&b.as_slice()[..5], &[1, 2, 3, 4, 5]);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        let at = b.as_ptr();
        assert!(b.grow(110, 0, 110), "fits: no new allocation");
        assert_eq!(b.as_ptr(), at);
        assert!(!b.grow(200, 0, 111), "cannot keep more than the contents");
    }
}
