//! A loaded tokenizer gives back all its memory when dropped.
//!
//! `tokenizers` 0.23 caches a BPE model's tokenised words in a thread-local map that outlives the model, so a
//! process loading tokenizers again and again would grow without bound; `Tokenizer::from_file` builds the
//! model without that cache. The allocator here counts live bytes to see it (one test in this binary, so no
//! other test's allocations are counted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicIsize, Ordering};

use detox_runtime::Tokenizer;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only the byte count is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TEXTS: [&str; 4] = [
    "How do I stay safe online?",
    "The quick brown fox jumps over the lazy dog, then the dog answers the fox.",
    "  leading spaces, trailing spaces  and numbers 12345 67",
    "I'm sorry, but I can't help with that request.",
];

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/roberta/model/tokenizer.json")
}

fn load_encode_drop(round: usize) -> anyhow::Result<()> {
    let tokenizer = Tokenizer::from_file(fixture())?;
    for text in TEXTS {
        // A different text each round: a word cache left behind would keep every one of them.
        let ids = tokenizer.encode(&format!("{text} round{round} word{}", round * 7919), true)?;
        tokenizer.decode(&ids, true)?;
    }
    Ok(())
}

#[test]
fn loading_and_dropping_tokenizers_does_not_grow_the_heap() -> anyhow::Result<()> {
    // Lazily built statics (the pre-tokenizer's regex and its caches) settle in the first rounds.
    for round in 0..5 {
        load_encode_drop(round)?;
    }
    let settled = LIVE.load(Ordering::Relaxed);
    for round in 5..305 {
        load_encode_drop(round)?;
    }
    let grown = LIVE.load(Ordering::Relaxed) - settled;
    assert!(grown < 16 * 1024, "300 tokenizers loaded, used and dropped left {grown} bytes behind");
    Ok(())
}
