//! A fixed pool of persistent worker threads that runs one job on every thread and waits
//! for all of them (a fork-join barrier per kernel launch), without allocating or taking a
//! lock per job.
//!
//! The calling thread is thread 0 and works too, so a pool of `n` threads spawns `n - 1`
//! workers. A job is handed off through a slot plus an atomic generation counter: the
//! caller writes the slot, then bumps the generation (release); a worker that sees the new
//! generation (acquire) reads the slot. Waiting on either side spins for a short, bounded
//! time (launches follow each other closely) and then parks the thread, so a waiter whose
//! partner was descheduled gives its core back instead of burning it; on a loaded machine
//! that is what keeps one slow thread from stalling every launch. A panic in a job is
//! caught on the thread where it happens and reported by `run`; it never leaves the
//! barrier waiting.

use crate::exec::ExecError;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long a worker spins for the next job before it parks. Launches of one call follow
/// each other within microseconds, so most hand-offs are caught while spinning; longer
/// spins only steal the core from the thread that runs serial kernels.
const WORKER_SPIN: Duration = Duration::from_micros(50);

/// How long the caller spins for the workers to finish before it parks.
const CALLER_SPIN: Duration = Duration::from_micros(30);

/// Spins between two clock reads (a clock read costs about as much as a few spins).
const SPIN_BATCH: u32 = 64;

/// Spins until `ready()` or until `limit` has passed; returns whether `ready()` held.
fn spin_until(limit: Duration, ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..SPIN_BATCH {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= limit {
            return ready();
        }
    }
}

/// The job of the current generation, lifetime-erased; valid until every worker has
/// reported it done (`run` does not return before).
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync));

/// Per-generation data the caller writes before publishing a generation and nobody
/// writes again until every worker has counted itself done.
struct Slot {
    job: Option<JobPtr>,
    /// The thread that waits in `run`, unparked by the last worker to finish.
    caller: Option<Thread>,
}

struct Shared {
    /// Incremented for every new job and for shutdown (which sets `shutdown` first).
    generation: AtomicU64,
    slot: UnsafeCell<Slot>,
    /// Workers that have not finished the current job yet.
    pending: AtomicUsize,
    /// Per worker (index `thread - 1`): set while it is about to park or parked.
    sleeping: Vec<AtomicBool>,
    panicked: AtomicBool,
    /// The first panic message of the current job (touched only when a job panics).
    message: Mutex<Option<String>>,
    shutdown: AtomicBool,
    /// Set while a `run` is in progress, so that two threads sharing a pool are refused
    /// instead of corrupting each other's job.
    busy: AtomicBool,
}

// SAFETY: `slot` is written only by the thread holding `busy` while no worker reads it
// (before a generation is published, after `pending` reached zero), and read by workers
// only between those points; everything else is atomics or a mutex. The job pointee is
// `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

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
    pub fn new(threads: usize) -> Result<Pool, ExecError> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            slot: UnsafeCell::new(Slot {
                job: None,
                caller: None,
            }),
            pending: AtomicUsize::new(0),
            sleeping: (1..threads).map(|_| AtomicBool::new(false)).collect(),
            panicked: AtomicBool::new(false),
            message: Mutex::new(None),
            shutdown: AtomicBool::new(false),
            busy: AtomicBool::new(false),
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
                .map_err(|e| ExecError::Threads(format!("cannot start worker thread {t}: {e}")))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `job(0)` on the calling thread only, without waking the workers: the path for
    /// kernels without a parallel loop. Errors with the message of a panic in the job.
    pub fn run_serial(&self, job: &dyn Fn(usize)) -> Result<(), ExecError> {
        catch_unwind(AssertUnwindSafe(|| job(0))).map_err(|payload| {
            ExecError::Threads(format!("thread 0 panicked: {}", panic_text(&*payload)))
        })
    }

    /// Runs `job(thread)` for every thread `0..threads` and returns when all are done.
    /// Errors (after all threads finished) with the message of a panic in any of them, or
    /// at once when another thread is running a job on this pool.
    pub fn run(&self, job: &(dyn Fn(usize) + Sync)) -> Result<(), ExecError> {
        if self.threads == 1 {
            return self.run_serial(job);
        }
        let s = &*self.shared;
        if s.busy.swap(true, Ordering::Acquire) {
            return Err(ExecError::Threads(
                "the thread pool is already running a job for another caller".into(),
            ));
        }
        // SAFETY (of the erasure): workers use the pointer only before counting themselves
        // done, and this function does not return before every worker did.
        let erased: *const (dyn Fn(usize) + Sync) = job;
        let erased: *const (dyn Fn(usize) + Sync + 'static) =
            unsafe { std::mem::transmute(erased) };
        let others = self.threads - 1;
        // SAFETY: no worker reads the slot now: the previous generation's workers are all
        // done (`pending` was zero when the last `run` returned) and `busy` excludes other
        // callers.
        unsafe {
            let slot = &mut *s.slot.get();
            slot.job = Some(JobPtr(erased));
            if slot
                .caller
                .as_ref()
                .is_none_or(|c| c.id() != std::thread::current().id())
            {
                slot.caller = Some(std::thread::current());
            }
        }
        s.pending.store(others, Ordering::Relaxed);
        // SeqCst pairs with the workers' `sleeping` store and generation re-check: either
        // a worker sees the new generation, or we see it is going to sleep and wake it.
        s.generation.fetch_add(1, Ordering::SeqCst);
        for (i, flag) in s.sleeping.iter().enumerate() {
            if flag.load(Ordering::SeqCst) {
                self.workers[i].thread().unpark();
            }
        }

        call(s, job, 0);

        let done = || s.pending.load(Ordering::Acquire) == 0;
        if !spin_until(CALLER_SPIN, done) {
            while !done() {
                // The last worker unparks us after its decrement; a wake-up that comes
                // early (a stale token, a spurious return) just loops.
                std::thread::park();
            }
        }
        // SAFETY: every worker is done with this generation.
        unsafe { (*s.slot.get()).job = None };
        let result = if s.panicked.swap(false, Ordering::AcqRel) {
            Err(ExecError::Threads(
                s.message
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .unwrap_or_else(|| "a worker panicked".to_string()),
            ))
        } else {
            Ok(())
        };
        s.busy.store(false, Ordering::Release);
        result
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// Runs one thread's share of a job, turning a panic into the pool's error.
fn call(s: &Shared, job: &(dyn Fn(usize) + Sync), thread: usize) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job(thread))) {
        let text = panic_text(&*payload);
        let mut m = s.message.lock().unwrap_or_else(PoisonError::into_inner);
        if m.is_none() {
            *m = Some(format!("thread {thread} panicked: {text}"));
        }
        s.panicked.store(true, Ordering::Release);
    }
}

fn worker(s: &Shared, thread: usize) {
    let sleeping = &s.sleeping[thread - 1];
    let mut seen = 0u64;
    loop {
        // Wait for the next generation: spin first, then park.
        let fresh = || s.generation.load(Ordering::Acquire) != seen;
        if !spin_until(WORKER_SPIN, fresh) {
            loop {
                sleeping.store(true, Ordering::SeqCst);
                if s.generation.load(Ordering::SeqCst) != seen {
                    sleeping.store(false, Ordering::Relaxed);
                    break;
                }
                std::thread::park();
                sleeping.store(false, Ordering::Relaxed);
                if fresh() {
                    break;
                }
            }
        }
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = s.generation.load(Ordering::Acquire);
        // SAFETY: the caller wrote the slot before publishing `seen` and does not write it
        // again before this worker counts itself done below.
        let (job, caller) = unsafe {
            let slot = &*s.slot.get();
            (slot.job, slot.caller.clone())
        };
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `run` keeps the job alive until this worker counts itself done.
            let job = unsafe { &*ptr };
            call(s, job, thread);
        }
        if s.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last one out wakes the caller in case it parked (a no-op token if not).
            if let Some(c) = caller {
                c.unpark();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        for w in &self.workers {
            w.thread().unpark();
        }
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
        for threads in 1..=3 {
            let pool = Pool::new(threads).expect("spawn");
            let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..5000 {
                pool.run(&|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                })
                .expect("no panic");
            }
            for (t, h) in hits.iter().enumerate() {
                assert_eq!(h.load(Ordering::Relaxed), 5000, "thread {t} of {threads}");
            }
        }
    }

    #[test]
    fn jobs_after_the_workers_parked_still_run() {
        // Pauses longer than the spin window make the workers park between jobs, which
        // exercises the unpark hand-off rather than the spinning one.
        let pool = Pool::new(3).expect("spawn");
        let count = AtomicUsize::new(0);
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(2));
            pool.run(&|_| {
                count.fetch_add(1, Ordering::Relaxed);
            })
            .expect("no panic");
        }
        assert_eq!(count.load(Ordering::Relaxed), 60);
    }

    #[test]
    fn a_slow_worker_makes_the_caller_park_not_hang() {
        let pool = Pool::new(2).expect("spawn");
        let count = AtomicUsize::new(0);
        for _ in 0..5 {
            pool.run(&|t| {
                if t == 1 {
                    std::thread::sleep(Duration::from_millis(3));
                }
                count.fetch_add(1, Ordering::Relaxed);
            })
            .expect("no panic");
        }
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_pool_keeps_working() {
        for threads in 1..=3 {
            let pool = Pool::new(threads).expect("spawn");
            let bad = threads - 1;
            let err = pool
                .run(&|t| {
                    if t == bad {
                        panic!("boom in kernel");
                    }
                })
                .expect_err("the panic is reported");
            let err = err.to_string();
            assert!(
                err.contains(&format!("thread {bad} panicked: boom in kernel")),
                "{err}"
            );
            let count = AtomicUsize::new(0);
            for _ in 0..100 {
                pool.run(&|_| {
                    count.fetch_add(1, Ordering::Relaxed);
                })
                .expect("the next job runs");
            }
            assert_eq!(count.load(Ordering::Relaxed), 100 * threads);
        }
    }

    #[test]
    fn serial_jobs_run_on_the_caller_only() {
        let pool = Pool::new(3).expect("spawn");
        let me = std::thread::current().id();
        let count = AtomicUsize::new(0);
        pool.run_serial(&|t| {
            assert_eq!(t, 0);
            assert_eq!(std::thread::current().id(), me);
            count.fetch_add(1, Ordering::Relaxed);
        })
        .expect("no panic");
        assert_eq!(count.load(Ordering::Relaxed), 1);
        let err = pool
            .run_serial(&|_| panic!("serial boom"))
            .expect_err("reported");
        assert!(err.to_string().contains("serial boom"), "{err}");
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
