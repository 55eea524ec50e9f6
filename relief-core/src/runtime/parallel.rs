//! Host loops on libtorch's intra-op thread pool.
//!
//! libtorch's CPU ops run on its own OpenMP workers, which keep spinning for a while after
//! each op. Host work between ops (the engine's threshold selection) that uses threads of its
//! own competes with those spinning workers and was measured slower than running on one thread;
//! [`parallel_for`] instead hands the loop to the same workers (`at::parallel_for`, through the
//! C++ shim `csrc/parallel.cpp`), so it uses the threads libtorch was given
//! (`tch::set_num_threads`) and nothing else.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Mutex;

extern "C" {
    fn relief_parallel_for(
        begin: i64,
        end: i64,
        grain: i64,
        body: extern "C" fn(*mut c_void, i64, i64),
        ctx: *mut c_void,
    ) -> i32;
}

struct Context<'a, F> {
    body: &'a F,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

extern "C" fn trampoline<F: Fn(usize, usize) + Sync>(ctx: *mut c_void, begin: i64, end: i64) {
    // SAFETY: `ctx` is the `Context<F>` that `parallel_for` passed, alive for the whole call.
    let ctx = unsafe { &*(ctx as *const Context<'_, F>) };
    // A panic must not unwind into C++: keep the first, re-raise it after the loop.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (ctx.body)(begin as usize, end as usize))) {
        let mut slot = ctx.panic.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(payload);
    }
}

/// Calls `body(begin, end)` on disjoint subranges that together cover `0..n`, in parallel on
/// libtorch's intra-op threads when `n` exceeds `grain` (serially, as one call, otherwise or
/// when already inside a parallel region). A panic in `body` is re-raised here.
pub fn parallel_for<F: Fn(usize, usize) + Sync>(n: usize, grain: usize, body: F) {
    if n == 0 {
        return;
    }
    let ctx = Context { body: &body, panic: Mutex::new(None) };
    // SAFETY: the trampoline matches `ctx`'s type; the shim returns only after every call.
    let rc = unsafe {
        relief_parallel_for(
            0,
            n as i64,
            grain.max(1) as i64,
            trampoline::<F>,
            &ctx as *const _ as *mut c_void,
        )
    };
    if let Some(payload) = ctx.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
        resume_unwind(payload);
    }
    // libtorch throws only for invalid arguments (a negative grain or range), excluded above.
    assert_eq!(rc, 0, "at::parallel_for failed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn covers_every_index_exactly_once() {
        for (n, grain) in [(0, 1), (1, 1), (7, 1), (1000, 16), (1000, 5000), (4097, 3)] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let calls = AtomicUsize::new(0);
            parallel_for(n, grain, |b, e| {
                assert!(b < e && e <= n, "bad range {b}..{e} of {n}");
                calls.fetch_add(1, Ordering::Relaxed);
                for h in &hits[b..e] {
                    h.fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "n={n} grain={grain}");
            if n > 0 && n <= grain {
                assert_eq!(calls.load(Ordering::Relaxed), 1, "n={n} grain={grain}: one call");
            }
        }
    }

    #[test]
    fn re_raises_a_panic_of_the_body() {
        let caught = catch_unwind(|| parallel_for(100, 1, |b, _| assert!(b != 0, "planted")));
        let payload = caught.expect_err("the panic must reach the caller");
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        assert!(msg.contains("planted"), "{msg}");
    }
}
