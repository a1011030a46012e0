//! A QuickJS heap with its limit kept on the Rust side, so that running
//! out of it is known for certain.
//!
//! QuickJS's own limit (`JS_SetMemoryLimit`) refuses an allocation and
//! throws an `InternalError: out of memory`; but when the heap is so full
//! that the error object itself cannot be made, it throws `null`, which
//! reads exactly like a script's `throw null`. Here the allocator refuses
//! instead and records that it did, and the worker asks it.
//!
//! Implementing rquickjs's `Allocator` is `unsafe` by its signature; this
//! module only counts the blocks rquickjs's own `RustAllocator` hands out
//! and refuses some requests, so the unsafety is that of the calls it
//! passes through, each with the caller's guarantee.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::rc::Rc;

use rquickjs::allocator::{Allocator, RustAllocator};

/// What a [`Heap`] tells its worker: whether an allocation was refused
/// since the last [`Watch::reset`].
#[derive(Clone, Default)]
pub(crate) struct Watch {
    refused: Rc<Cell<bool>>,
}

impl Watch {
    /// Forgets earlier refusals (before each evaluation, and each script
    /// compiled).
    pub(crate) fn reset(&self) {
        self.refused.set(false);
    }

    /// Whether an allocation was refused since the last reset.
    pub(crate) fn refused(&self) -> bool {
        self.refused.get()
    }
}

/// QuickJS's allocator with a limit: Rust's global allocator underneath
/// (rquickjs's `RustAllocator`), each block counted with its header.
pub(crate) struct Heap {
    inner: RustAllocator,
    used: usize,
    limit: usize,
    watch: Watch,
}

/// What a block costs beyond its usable size: rquickjs's header, the same
/// eight bytes QuickJS counts as `MALLOC_OVERHEAD`.
const OVERHEAD: usize = 8;

impl Heap {
    /// A heap of at most `limit` bytes, and the watch on it.
    pub(crate) fn new(limit: usize) -> (Heap, Watch) {
        let watch = Watch::default();
        let heap = Heap {
            inner: RustAllocator,
            used: 0,
            limit,
            watch: watch.clone(),
        };
        (heap, watch)
    }

    fn admits(&self, extra: usize) -> bool {
        let fits = self
            .used
            .checked_add(extra)
            .is_some_and(|total| total <= self.limit);
        if !fits {
            self.watch.refused.set(true);
        }
        fits
    }

    fn took(&mut self, ptr: *mut u8) -> *mut u8 {
        if !ptr.is_null() {
            // SAFETY: `ptr` was just returned by `inner`.
            self.used += unsafe { RustAllocator::usable_size(ptr) } + OVERHEAD;
        }
        ptr
    }
}

// SAFETY: every block comes from `RustAllocator` and goes back to it
// unchanged; this only counts them and refuses some requests with a null
// pointer, which QuickJS handles as out of memory.
unsafe impl Allocator for Heap {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        if !self.admits(size.saturating_add(OVERHEAD)) {
            return std::ptr::null_mut();
        }
        let ptr = self.inner.alloc(size);
        self.took(ptr)
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        let Some(bytes) = count.checked_mul(size) else {
            return std::ptr::null_mut();
        };
        if !self.admits(bytes.saturating_add(OVERHEAD)) {
            return std::ptr::null_mut();
        }
        let ptr = self.inner.calloc(count, size);
        self.took(ptr)
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        // SAFETY: the caller passes a block of this allocator.
        let size = unsafe { RustAllocator::usable_size(ptr) } + OVERHEAD;
        self.used = self.used.saturating_sub(size);
        // SAFETY: as above.
        unsafe { self.inner.dealloc(ptr) }
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a block of this allocator.
        let old = unsafe { RustAllocator::usable_size(ptr) };
        if new_size > old && !self.admits(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: as above; on failure the old block stays allocated.
        let moved = unsafe { self.inner.realloc(ptr, new_size) };
        if !moved.is_null() {
            // SAFETY: `moved` was just returned by `inner`.
            let new = unsafe { RustAllocator::usable_size(moved) };
            self.used = self.used.saturating_sub(old) + new;
        }
        moved
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        // SAFETY: the caller passes a block of this allocator.
        unsafe { RustAllocator::usable_size(ptr) }
    }
}
