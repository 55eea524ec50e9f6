// libtorch's intra-op parallel loop (at::parallel_for, OpenMP in the PyPI builds) for host
// loops written in Rust: work then runs on libtorch's own worker threads, which otherwise keep
// spinning on the other cores between libtorch ops. Called by relief_core::parallel.
//
// `body(ctx, begin, end)` is called for disjoint subranges covering [begin, end); it must not
// unwind (the Rust side catches panics). Returns 0, or -1 if libtorch threw.

#include <ATen/Parallel.h>

#include <cstdint>

extern "C" int relief_parallel_for(int64_t begin, int64_t end, int64_t grain,
                                   void (*body)(void*, int64_t, int64_t), void* ctx) {
  try {
    at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { body(ctx, b, e); });
    return 0;
  } catch (...) {
    return -1;
  }
}
