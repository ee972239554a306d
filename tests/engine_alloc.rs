//! Steady state allocates nothing: after a warm-up frame, running the fast engine (detector
//! and recogniser, several threads) performs zero heap allocations per frame. A counting
//! global allocator, in its own test binary so it affects only this test.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use facegate::models::mobilefacenet::MobileFaceNet;
use facegate::models::scrfd::Scrfd;
use facegate::models::LoadOptions;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` (on any thread).
fn count(f: impl FnOnce()) -> usize {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst)
}

/// One test for both precisions: the counter is process-wide, and a second test in this
/// binary would let the harness's own thread allocate (reporting that test's result) while
/// this one counts.
#[test]
fn no_allocation_per_frame_after_warm_up() {
    steady_state_allocates_nothing(&model("det_500m"), &model("mobilefacenet_512"));
    steady_state_allocates_nothing(&model_int8("det_500m"), &model_int8("mobilefacenet_512"));
}

fn steady_state_allocates_nothing(det: &std::path::Path, rec: &std::path::Path) {
    let det = Scrfd::load_with(det, &LoadOptions::fast(2)).unwrap();
    let rec = MobileFaceNet::load_with(rec, &LoadOptions::fast(2)).unwrap();
    let (h, w) = (256, 320);
    let fill = |d: &mut [f32]| {
        for (i, v) in d.iter_mut().enumerate() {
            *v = ((i * 7919) % 255) as f32 / 128.0 - 1.0;
        }
    };
    let mut levels = Vec::new();
    let mut emb = Vec::new();
    // Warm-up: plans buffers, sizes the output vectors, starts the workers.
    det.forward_nhwc(h, w, &mut fill.clone(), &mut levels)
        .unwrap();
    rec.forward_nhwc(&mut fill.clone(), &mut emb).unwrap();
    let first = levels[0].scores.clone();
    let n = count(|| {
        for _ in 0..3 {
            det.forward_nhwc(h, w, &mut fill.clone(), &mut levels)
                .unwrap();
            rec.forward_nhwc(&mut fill.clone(), &mut emb).unwrap();
        }
    });
    assert_eq!(n, 0, "{n} allocations in 3 steady-state frames");
    assert_eq!(
        levels[0].scores, first,
        "repeated frames give the same result"
    );
    assert_eq!(emb.len(), 512);
}
