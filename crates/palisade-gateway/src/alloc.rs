//! [`Allocator`]: the binary's global allocator, mimalloc asked through
//! its plain entry points whenever a layout allows.
//!
//! The `mimalloc` crate's allocator passes every layout to
//! `mi_malloc_aligned`, alignment 8 included. mimalloc 3 serves that from
//! its usual free list only when the list's next block happens to be
//! aligned and the size is at most 1 KiB; otherwise (a page's list empty,
//! a larger size) it takes the plain path only for power-of-two sizes and
//! over-allocates every other one by the alignment, into the next size
//! class. A gateway request made eleven such allocations (callgrind: 1.5k
//! instructions a request of the allocator's, out of 3.5k). Plain
//! `mi_malloc` already returns blocks aligned to 16 bytes (as C's `malloc`
//! must, for any type), so layouts aligned to 16 or less go there, the
//! rule Rust's own `System` allocator follows over `malloc`; only larger
//! alignments take the aligned entry points.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block of at least that size has: C's
/// `alignof(max_align_t)` (the value Rust's `System` allocator assumes of
/// `malloc`).
#[cfg(target_pointer_width = "64")]
const MIN_ALIGN: usize = 16;
#[cfg(not(target_pointer_width = "64"))]
const MIN_ALIGN: usize = 8;

/// Whether a block of `size` bytes from the plain entry points is aligned
/// enough for `align`.
#[inline]
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

/// A block for `layout` from `plain_fn` when its alignment allows (see
/// [`plain`]), else from `aligned_fn`: `mi_malloc`'s pair or `mi_zalloc`'s.
///
/// # Safety
///
/// `layout`'s size is not zero.
#[inline(always)]
unsafe fn block(
    layout: Layout,
    plain_fn: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_fn: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: a non-zero size (the caller's promise) and a power-of-two
    // alignment (`Layout`'s), asked of the entry point that honours it.
    unsafe {
        if plain(layout.align(), layout.size()) {
            plain_fn(layout.size()).cast()
        } else {
            aligned_fn(layout.size(), layout.align()).cast()
        }
    }
}

/// mimalloc as a global allocator, asked through `mi_malloc`, `mi_zalloc`
/// and `mi_realloc` when the layout's alignment is at most 16 (every
/// alignment most types have), and through their `_aligned` forms
/// otherwise. The `mimalloc` feature (on by default) makes it the
/// binary's allocator.
///
/// ```
/// #[global_allocator]
/// static ALLOC: palisade_gateway::Allocator = palisade_gateway::Allocator;
///
/// let v: Vec<u64> = (0..1000).collect();
/// assert_eq!(v.iter().sum::<u64>(), 499_500);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

// SAFETY: every block comes from mimalloc, which returns null on failure
// and blocks of at least the size asked; the plain entry points are used
// only for alignments their blocks always have (`plain`), the `_aligned`
// ones otherwise; every block, however allocated, is freed by `mi_free`,
// which takes any of them.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the layout's size is non-zero (`GlobalAlloc`'s contract)
        // and its alignment a power of two (`Layout`'s).
        unsafe { block(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { block(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block is aligned as `layout` asks (checked against the new size,
        // the block's).
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Fills `len` bytes at `p` with a pattern made from `seed`.
    fn fill(p: *mut u8, len: usize, seed: u8) {
        for i in 0..len {
            // SAFETY: the caller's block holds `len` bytes.
            unsafe { p.add(i).write(seed.wrapping_add(i as u8)) }
        }
    }

    /// Whether the first `len` bytes at `p` still hold `fill`'s pattern.
    fn holds(p: *const u8, len: usize, seed: u8) -> bool {
        // SAFETY: the caller's block holds `len` bytes.
        (0..len).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
    }

    proptest! {
        /// Any layout (alignments 1 to 4096, sizes to 70 000 bytes) gets
        /// a block aligned as asked, zeroed when asked, that keeps its
        /// bytes through a grow and a shrink.
        #[test]
        fn blocks_are_aligned_sized_and_kept(
            align_log in 0u32..13,
            size in 1usize..70_000,
            grown in 1usize..70_000,
            seed in any::<u8>(),
        ) {
            let a = Allocator;
            let layout = Layout::from_size_align(size, 1 << align_log).unwrap();
            // SAFETY: a non-zero size; each block is used within its size
            // and freed once, with its layout.
            unsafe {
                let z = a.alloc_zeroed(layout);
                prop_assert!(!z.is_null());
                prop_assert_eq!(z as usize % layout.align(), 0);
                prop_assert!((0..size).all(|i| z.add(i).read() == 0));
                a.dealloc(z, layout);

                let p = a.alloc(layout);
                prop_assert!(!p.is_null());
                prop_assert_eq!(p as usize % layout.align(), 0);
                fill(p, size, seed);
                let bigger = size + grown;
                let q = a.realloc(p, layout, bigger);
                prop_assert!(!q.is_null());
                prop_assert_eq!(q as usize % layout.align(), 0);
                prop_assert!(holds(q, size, seed));
                fill(q, bigger, seed);
                let grown_layout = Layout::from_size_align(bigger, layout.align()).unwrap();
                let smaller = grown.min(size);
                let r = a.realloc(q, grown_layout, smaller);
                prop_assert!(!r.is_null());
                prop_assert_eq!(r as usize % layout.align(), 0);
                prop_assert!(holds(r, smaller, seed));
                a.dealloc(r, Layout::from_size_align(smaller, layout.align()).unwrap());
            }
        }
    }

    /// Blocks of many sizes and alignments (8 to 128 bytes; sizes need
    /// not be multiples of them), taken while many others are held (so
    /// pages' free lists run dry, the case mimalloc served by
    /// over-allocating): all aligned as asked, none overlapping.
    #[test]
    fn many_live_blocks_stay_aligned_and_apart() {
        let a = Allocator;
        let mut held = Vec::new();
        for i in 0..20_000usize {
            let size = 8 * (1 + i % 193);
            let align = 8 << (i % 5);
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: a non-zero size.
            let p = unsafe { a.alloc(layout) };
            assert!(!p.is_null());
            assert_eq!(
                p as usize % align,
                0,
                "{size} bytes aligned to {align} at {p:?}"
            );
            fill(p, size, i as u8);
            held.push((p, layout, i as u8));
        }
        for &(p, layout, seed) in &held {
            assert!(holds(p, layout.size(), seed), "a block was overwritten");
        }
        for (p, layout, _) in held {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { a.dealloc(p, layout) }
        }
    }
}
