//! A fixed pool of persistent worker threads that runs one job on every thread and waits
//! for all of them (a fork-join barrier per kernel launch), without allocating per job.
//!
//! The calling thread is thread 0 and works too, so a pool of `n` threads spawns `n - 1`
//! workers. Workers spin briefly after a job (launches follow each other closely), then
//! sleep on a condition variable. A panic in a job is caught on the thread where it
//! happens and reported by `run`; it never leaves the barrier waiting.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Spins (checking for a new job) before a worker goes to sleep.
const SPIN: u32 = 1 << 14;

/// The job of the current generation, lifetime-erased; valid until every worker has
/// reported it done (`run` does not return before).
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync` and outlives every use (see `JobPtr`).
unsafe impl Send for JobPtr {}

struct Shared {
    /// Incremented (under `lock`) for every new job and for shutdown.
    generation: AtomicU64,
    job: Mutex<Option<JobPtr>>,
    /// Workers that finished the current job.
    done: AtomicUsize,
    panicked: AtomicBool,
    /// The first panic message of the current job.
    message: Mutex<Option<String>>,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A pool of `threads` threads (the caller included).
pub struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl Pool {
    /// A pool of `threads` threads (at least 1); errors if a worker cannot be spawned.
    pub fn new(threads: usize) -> Result<Pool, String> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: Mutex::new(None),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            message: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut pool = Pool {
            threads,
            shared,
            workers: Vec::new(),
        };
        for t in 1..threads {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name(format!("archc-worker-{t}"))
                .spawn(move || worker(&shared, t))
                .map_err(|e| format!("cannot start worker thread {t}: {e}"))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job(thread)` for every thread `0..threads` and returns when all are done.
    /// Errors (after all threads finished) with the message of a panic in any of them.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) -> Result<(), String> {
        let s = &*self.shared;
        if self.threads > 1 {
            // SAFETY (of the erasure): the pointer is dropped from `job` below before
            // this function returns, and workers use it only before counting themselves
            // done, which we wait for.
            let erased: *const (dyn Fn(usize) + Sync) = job;
            let erased: *const (dyn Fn(usize) + Sync + 'static) =
                unsafe { std::mem::transmute(erased) };
            *s.job.lock().unwrap_or_else(PoisonError::into_inner) = Some(JobPtr(erased));
            s.done.store(0, Ordering::Relaxed);
            {
                let _g = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
                s.generation.fetch_add(1, Ordering::Release);
            }
            s.wake.notify_all();
        }
        call(s, job, 0);
        if self.threads > 1 {
            let others = self.threads - 1;
            let mut spins = 0u32;
            while s.done.load(Ordering::Acquire) < others {
                if spins < SPIN {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            *s.job.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        if s.panicked.swap(false, Ordering::AcqRel) {
            let msg = s
                .message
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_else(|| "a worker panicked".to_string());
            return Err(msg);
        }
        Ok(())
    }
}

/// Runs one thread's share of a job, turning a panic into the pool's error.
fn call(s: &Shared, job: &(dyn Fn(usize) + Sync), thread: usize) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job(thread))) {
        let text = payload
            .downcast_ref::<&str>()
            .map(|m| m.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_string());
        let mut m = s.message.lock().unwrap_or_else(PoisonError::into_inner);
        if m.is_none() {
            *m = Some(format!("thread {thread} panicked: {text}"));
        }
        s.panicked.store(true, Ordering::Release);
    }
}

fn worker(s: &Shared, thread: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for the next generation: spin first, then sleep.
        let mut spins = 0u32;
        loop {
            if s.generation.load(Ordering::Acquire) != seen || s.shutdown.load(Ordering::Acquire) {
                break;
            }
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let g = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            let _g = s
                .wake
                .wait_while(g, |_| {
                    s.generation.load(Ordering::Acquire) == seen
                        && !s.shutdown.load(Ordering::Acquire)
                })
                .unwrap_or_else(PoisonError::into_inner);
            break;
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = s.generation.load(Ordering::Acquire);
        let job = *s.job.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `run` keeps the job alive until this worker counts itself done.
            let job = unsafe { &*ptr };
            call(s, job, thread);
        }
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let _g = self
                .shared
                .lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            self.shared.shutdown.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            // A worker never panics outside `catch_unwind`; nothing to report if it did.
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_every_job() {
        let pool = Pool::new(3).expect("spawn");
        let hits: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..1000 {
            pool.run(&|t| {
                hits[t].fetch_add(1, Ordering::Relaxed);
            })
            .expect("no panic");
        }
        for (t, h) in hits.iter().enumerate() {
            assert_eq!(h.load(Ordering::Relaxed), 1000, "thread {t}");
        }
    }

    #[test]
    fn a_panicking_worker_is_reported_and_the_pool_keeps_working() {
        let pool = Pool::new(2).expect("spawn");
        let err = pool
            .run(&|t| {
                if t == 1 {
                    panic!("boom in kernel");
                }
            })
            .expect_err("the panic is reported");
        assert!(err.contains("thread 1 panicked: boom in kernel"), "{err}");
        let count = AtomicUsize::new(0);
        pool.run(&|_| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .expect("the next job runs");
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn one_thread_runs_inline() {
        let pool = Pool::new(1).expect("no workers");
        let count = AtomicUsize::new(0);
        pool.run(&|t| {
            assert_eq!(t, 0);
            count.fetch_add(1, Ordering::Relaxed);
        })
        .expect("no panic");
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }
}
