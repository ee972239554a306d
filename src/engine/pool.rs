//! A small persistent thread pool for splitting one layer's output rows over cores.
//!
//! Why not `std::thread::scope` per layer: a frame runs 60–80 layers, and spawning and
//! joining threads for each costs tens of microseconds per layer — a large share of a
//! 5–20 ms frame. Here the workers live as long as the engine; dispatching a layer is a
//! few atomic stores, and the workers spin briefly before sleeping on a condition variable,
//! so back-to-back layers hand over in about a microsecond while an idle engine (between
//! frames) costs no CPU. Dispatch allocates nothing. Each thread starts on its own band of
//! the rows, the same in every layer, so what a layer reads is mostly in its core's cache.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A job: called once per chunk with `(chunk, chunk count, thread slot)`. The thread slot
/// (0 for the caller, 1.. for workers) indexes per-thread scratch memory.
type Job = dyn Fn(usize, usize, usize) + Sync + 'static;

/// How long a worker spins for the next layer before it sleeps (iterations of `spin_loop`).
const SPIN: usize = 20_000;

/// Chunks per thread: work is claimed chunk by chunk, so a thread that the OS does not
/// schedule (another process holds the core) delays nobody — the others take its chunks.
/// With one static share per thread, every layer would wait for the slowest thread.
pub const CHUNKS_PER_THREAD: usize = 4;

/// A thread slot's unclaimed chunks `[front, back)`, packed as `front | back << 32` so one
/// compare-exchange claims from either end.
struct ChunkRange(AtomicU64);

impl ChunkRange {
    fn set(&self, front: usize, back: usize) {
        self.0
            .store(front as u64 | (back as u64) << 32, Ordering::SeqCst);
    }

    /// The front chunk (the owner's next) or the back one (a thief's), if any is left.
    fn claim(&self, from_back: bool) -> Option<usize> {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let (front, back) = (cur & 0xffff_ffff, cur >> 32);
            if front >= back {
                return None;
            }
            let (next, chunk) = if from_back {
                (front | (back - 1) << 32, back - 1)
            } else {
                (cur + 1, front)
            };
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(chunk as usize),
                Err(seen) => cur = seen,
            }
        }
    }
}

struct Shared {
    /// Bumped by the dispatcher for every job; workers join the job when it changes.
    generation: AtomicUsize,
    /// The current job and its chunk count, valid while `open` (written before `generation`
    /// is bumped).
    job: UnsafeCell<Option<(*const Job, usize)>>,
    /// Whether late workers may still join the current job.
    open: AtomicBool,
    /// Each thread slot's chunks: a band of consecutive ones, the same share of the rows in
    /// every layer, so a thread mostly reads rows it wrote itself in the layer before (from
    /// its own core's cache; 320×320×16 activations exceed one core's L2). A thread that
    /// finishes its band takes chunks from the ends of the others'.
    ranges: Box<[ChunkRange]>,
    /// Chunks finished.
    done: AtomicUsize,
    /// Workers inside the current job (the dispatcher waits for them before returning).
    active: AtomicUsize,
    /// Workers asleep on `cv` (the dispatcher only takes the lock when this is non-zero).
    sleeping: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

// SAFETY: `job` is written only by the dispatcher while no worker can read it: before the
// generation bump that publishes it, and after `open` is cleared and `active` is zero. The
// job it points to is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw job pointer is only dereferenced while the dispatcher keeps the
// job alive.
unsafe impl Send for Shared {}

/// The pool: `threads - 1` workers plus the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
}

impl Pool {
    /// A pool running jobs on `threads` threads (at least 1; the caller is one of them).
    pub fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            open: AtomicBool::new(false),
            ranges: (0..threads)
                .map(|_| ChunkRange(AtomicU64::new(0)))
                .collect(),
            done: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            sleeping: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|index| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("facegate-{index}"))
                    .spawn(move || worker(&shared, index))
                    .expect("cannot spawn an engine worker thread")
            })
            .collect();
        Pool {
            shared,
            workers,
            threads,
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job(chunk, chunks, slot)` for every chunk of `chunks` and returns when all have
    /// finished. The caller works too; a panic in any chunk is re-raised here.
    pub fn run(&mut self, chunks: usize, job: &(dyn Fn(usize, usize, usize) + Sync)) {
        if chunks == 0 {
            return;
        }
        if self.threads == 1 || chunks == 1 {
            (0..chunks).for_each(|c| job(c, chunks, 0));
            return;
        }
        let s = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this call: we do not
        // return before the job is closed and no worker is inside it.
        let ptr: *const Job = unsafe {
            std::mem::transmute::<&(dyn Fn(usize, usize, usize) + Sync), &'static Job>(job)
        };
        // SAFETY: no worker reads `job` now (the previous job is closed with no worker
        // inside, the next generation not yet published); `&mut self` excludes others.
        unsafe { *s.job.get() = Some((ptr, chunks)) };
        for (t, range) in s.ranges.iter().enumerate() {
            let (front, back) = split(chunks, t, self.threads);
            range.set(front, back);
        }
        s.done.store(0, Ordering::SeqCst);
        s.open.store(true, Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            claim_chunks(s, job, chunks, 0)
        }));
        // Chunks claimed by workers may still be running.
        wait_until(|| s.done.load(Ordering::Acquire) >= chunks);
        // Close the job, then wait for workers that joined it to leave (see `worker`).
        s.open.store(false, Ordering::SeqCst);
        wait_until(|| s.active.load(Ordering::SeqCst) == 0);
        // SAFETY: the job is closed and no worker is inside it.
        unsafe { *s.job.get() = None };
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("an engine worker thread panicked (see the message above)");
        }
    }
}

fn wait_until(cond: impl Fn() -> bool) {
    let mut spins = 0usize;
    while !cond() {
        if spins < SPIN {
            spins += 1;
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Claims and runs chunks until none is left: the slot's own band first, then the others'.
fn claim_chunks(
    s: &Shared,
    job: &(dyn Fn(usize, usize, usize) + Sync),
    chunks: usize,
    slot: usize,
) {
    let t = s.ranges.len();
    loop {
        let own = s.ranges[slot].claim(false);
        let Some(c) = own.or_else(|| (1..t).find_map(|d| s.ranges[(slot + d) % t].claim(true)))
        else {
            return;
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(c, chunks, slot)));
        if r.is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

fn worker(s: &Shared, slot: usize) {
    // a worker runs nothing but the engine's layers: their floating-point mode for good
    super::denormals::FlushDenormals::forever();
    let mut seen = 0usize;
    loop {
        // Wait for a new generation: spin first, then sleep.
        let mut spins = 0usize;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            if s.generation.load(Ordering::Acquire) != seen {
                break;
            }
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleeping.fetch_add(1, Ordering::SeqCst);
            while s.generation.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst)
            {
                g = s.cv.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleeping.fetch_sub(1, Ordering::SeqCst);
            spins = 0;
        }
        seen = s.generation.load(Ordering::Acquire);
        // Join the job only while it is open. With SeqCst on `active` and `open`, either the
        // dispatcher sees this increment (and waits for us), or we see the job closed.
        s.active.fetch_add(1, Ordering::SeqCst);
        if s.open.load(Ordering::SeqCst) && s.generation.load(Ordering::SeqCst) == seen {
            // SAFETY: the job is open, so the dispatcher has published it and keeps it alive
            // until `active` drops back to zero.
            if let Some((job, chunks)) = unsafe { *s.job.get() } {
                // SAFETY: see above: the pointee outlives this call.
                claim_chunks(s, unsafe { &*job }, chunks, slot);
            }
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.cv.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The sub-range `[lo, hi)` of `0..n` that thread `t` of `threads` handles.
pub fn split(n: usize, t: usize, threads: usize) -> (usize, usize) {
    (n * t / threads, n * (t + 1) / threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_exactly_once() {
        let mut pool = Pool::new(3);
        let hits: Vec<AtomicUsize> = (0..12).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..1000 {
            let chunks = 1 + round % 12;
            pool.run(chunks, &|c, n, slot| {
                assert_eq!(n, chunks);
                assert!(slot < 3);
                hits[c].fetch_add(1, Ordering::Relaxed);
            });
        }
        let want: Vec<usize> = (0..12)
            .map(|c| (0..1000).filter(|r| c < 1 + r % 12).count())
            .collect();
        let got: Vec<usize> = hits.iter().map(|h| h.load(Ordering::Relaxed)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn split_covers_the_range() {
        for n in [0, 1, 7, 40] {
            for threads in 1..5 {
                let mut next = 0;
                for t in 0..threads {
                    let (lo, hi) = split(n, t, threads);
                    assert_eq!(lo, next);
                    next = hi;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn a_worker_panic_reaches_the_caller() {
        let mut pool = Pool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(8, &|c, _, _| assert!(c != 5, "chunk 5 fails"))
        }));
        assert!(r.is_err());
        pool.run(8, &|_, _, _| {});
    }
}
