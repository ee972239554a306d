//! A small persistent thread pool for splitting one layer's output rows over cores.
//!
//! Why not `std::thread::scope` per layer: a frame runs 60–80 layers, and spawning and
//! joining threads for each costs tens of microseconds per layer — a large share of a
//! 5–20 ms frame. Here the workers live as long as the engine; dispatching a layer is one
//! atomic store, and the workers spin briefly before sleeping on a condition variable, so
//! back-to-back layers hand over in about a microsecond while an idle engine (between
//! frames) costs no CPU. Dispatch allocates nothing.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A job: called once per thread with `(thread index, thread count)`.
type Job = dyn Fn(usize, usize) + Sync + 'static;

/// How long a worker spins for the next layer before it sleeps (iterations of `spin_loop`).
const SPIN: usize = 20_000;

struct Shared {
    /// Bumped by the dispatcher for every job; workers run the job when it changes.
    generation: AtomicUsize,
    /// The current job, valid while `remaining > 0` (written before `generation` is bumped).
    job: UnsafeCell<Option<*const Job>>,
    /// Workers that have not finished the current job.
    remaining: AtomicUsize,
    /// Workers asleep on `cv` (the dispatcher only takes the lock when this is non-zero).
    sleeping: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

// SAFETY: `job` is written only by the dispatcher while no worker reads it (before the
// generation bump that publishes it, after every worker has finished the previous job), and
// the job it points to is `Sync`.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw job pointer is only dereferenced while the dispatcher keeps the
// job alive (it waits for `remaining == 0` before returning).
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
            remaining: AtomicUsize::new(0),
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
                    .spawn(move || worker(&shared, index, threads))
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

    /// Runs `job(t, n)` for every thread `t` of the `n` and returns when all have finished.
    /// A panic in any of them is re-raised here.
    pub fn run(&mut self, job: &(dyn Fn(usize, usize) + Sync)) {
        if self.threads == 1 {
            job(0, 1);
            return;
        }
        let s = &*self.shared;
        // SAFETY: the lifetime is erased only for the duration of this call: we do not
        // return before every worker has decremented `remaining`, i.e. stopped using it.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static Job>(job) };
        // SAFETY: no worker reads `job` now (the previous job is finished, the next
        // generation not yet published); `&mut self` excludes other dispatchers.
        unsafe { *s.job.get() = Some(ptr) };
        s.remaining.store(self.threads - 1, Ordering::SeqCst);
        s.generation.fetch_add(1, Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(0, self.threads)));
        let mut spins = 0usize;
        while s.remaining.load(Ordering::Acquire) != 0 {
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: every worker has finished with the job.
        unsafe { *s.job.get() = None };
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("an engine worker thread panicked (see the message above)");
        }
    }
}

fn worker(s: &Shared, index: usize, threads: usize) {
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
        // SAFETY: the dispatcher published `job` before bumping the generation and keeps it
        // alive until `remaining` reaches zero, which this worker has not signalled yet.
        let job = unsafe { (*s.job.get()).expect("a published job") };
        // SAFETY: see above: the pointee outlives this call.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
            (*job)(index, threads)
        }));
        if r.is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        s.remaining.fetch_sub(1, Ordering::Release);
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
    fn every_thread_runs_every_job() {
        let mut pool = Pool::new(3);
        let hits = [
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        ];
        for _ in 0..1000 {
            pool.run(&|t, n| {
                assert_eq!(n, 3);
                hits[t].fetch_add(1, Ordering::Relaxed);
            });
        }
        for h in &hits {
            assert_eq!(h.load(Ordering::Relaxed), 1000);
        }
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
            pool.run(&|t, _| assert!(t == 0, "worker fails"))
        }));
        assert!(r.is_err());
        pool.run(&|_, _| {});
    }
}
