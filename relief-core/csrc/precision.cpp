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

// Autocast (mixed precision) of the current thread for one device type, as torch.autocast sets
// it: device 0 = CPU, 1 = CUDA; dtype 0 = bfloat16, 1 = float16. Returns the previous state
// (bit 0: enabled, bits 1-2: dtype code) or a negative value on error. Disabling clears the
// autocast weight cache, as leaving `torch.autocast` does.
#include <ATen/autocast_mode.h>

extern "C" int relief_set_autocast(int device, int enabled, int dtype) {
  if ((device != 0 && device != 1) || (dtype != 0 && dtype != 1)) return -1;
  try {
    const auto type = device == 0 ? at::kCPU : at::kCUDA;
    const bool was = at::autocast::is_autocast_enabled(type);
    const int was_dtype = at::autocast::get_autocast_dtype(type) == at::kHalf ? 1 : 0;
    at::autocast::set_autocast_dtype(type, dtype == 0 ? at::kBFloat16 : at::kHalf);
    at::autocast::set_autocast_enabled(type, enabled != 0);
    if (enabled == 0) at::autocast::clear_cache();
    return (was ? 1 : 0) | (was_dtype << 1);
  } catch (...) {
    return -2;
  }
}
