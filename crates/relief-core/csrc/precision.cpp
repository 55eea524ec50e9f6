// libtorch's process-wide float32 math mode on CUDA (IEEE or TF32) for convolutions and matrix
// products, which tch does not expose. Read and written by relief_core::precision.
//
// Op codes: 0 = convolutions (cuDNN), 1 = matrix products (cuBLAS).
// Precision codes are at::Float32Precision's: 0 NONE (inherit), 1 IEEE, 2 TF32, 3 BF16.
// Both functions return a negative value instead of letting a C++ exception cross into Rust.

#include <ATen/Context.h>

namespace {
bool op_of(int op, at::Float32Op* out) {
  switch (op) {
    case 0: *out = at::Float32Op::CONV; return true;
    case 1: *out = at::Float32Op::MATMUL; return true;
    default: return false;
  }
}
}  // namespace

extern "C" int relief_cuda_fp32_precision(int op) {
  at::Float32Op o;
  if (!op_of(op, &o)) return -1;
  try {
    return static_cast<int>(at::globalContext().float32Precision(at::Float32Backend::CUDA, o));
  } catch (...) {
    return -2;
  }
}

extern "C" int relief_set_cuda_fp32_precision(int op, int precision) {
  at::Float32Op o;
  if (!op_of(op, &o) || precision < 0 || precision > 3) return -1;
  try {
    at::globalContext().setFloat32Precision(
        at::Float32Backend::CUDA, o, static_cast<at::Float32Precision>(precision));
    return 0;
  } catch (...) {
    return -2;
  }
}
