//! What every fuzz target shares: the allocation bound, the rejection check and the reader entry points.
//!
//! Each target feeds its input to one reader through [`check`]: the input is written to a file (the readers
//! take paths, as they do in use), the reader runs, and a rejection must name that file. A global allocator
//! aborts on any single allocation over [`allocation_limit`], so a header that claims 2^60 elements is a crash
//! here unless the reader refuses it before allocating.
//!
//! The same entry points ([`readers`]) replay the committed corpus as an ordinary test on stable
//! (`cargo test -p detox-eval --test fuzz_corpus`); `cargo xtask fuzz <target>` runs a target for long.
#![deny(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

pub mod readers;

/// Bytes any reader may allocate at once regardless of the input size (parsers' tables, buffers).
pub const ALLOCATION_FLOOR: usize = 16 << 20;
/// How many times the input size one allocation may take beyond [`ALLOCATION_FLOOR`].
pub const ALLOCATION_FACTOR: usize = 64;

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The largest single allocation allowed while reading `input_len` bytes.
pub fn allocation_limit(input_len: usize) -> usize {
    ALLOCATION_FLOOR.saturating_add(ALLOCATION_FACTOR.saturating_mul(input_len))
}

struct Bounded;

// SAFETY: every call is forwarded unchanged to the system allocator; the bound only adds an abort.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        over_limit(layout.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        over_limit(layout.size());
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        over_limit(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn over_limit(size: usize) {
    let limit = LIMIT.load(Ordering::Relaxed);
    if size > limit {
        // The bound is lifted first: the backtrace, which says who asked, allocates. Then abort so libFuzzer
        // records the input.
        LIMIT.store(usize::MAX, Ordering::Relaxed);
        eprintln!("allocation of {size} bytes exceeds the bound of {limit} bytes for this input");
        eprintln!("{}", std::backtrace::Backtrace::force_capture());
        std::process::abort();
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// Writes `data` to a file named `name` in this process's scratch directory, runs `read` on its path under the
/// allocation bound, and checks that a rejection names the file.
///
/// # Panics
/// When `read` rejects the input with a message that does not name the file (the fuzzer reports it).
pub fn check(data: &[u8], name: &str, read: impl FnOnce(&Path) -> Result<(), String>) {
    let path = scratch_dir().join(name);
    std::fs::write(&path, data).expect("writing the scratch file");
    LIMIT.store(allocation_limit(data.len()), Ordering::Relaxed);
    let outcome = read(&path);
    LIMIT.store(usize::MAX, Ordering::Relaxed);
    if let Err(message) = outcome {
        assert!(
            message.contains(&path.display().to_string()),
            "the rejection does not name the file {}: {message}",
            path.display()
        );
    }
}

fn scratch_dir() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("detox-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    dir
}
