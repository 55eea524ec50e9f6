//! Exact float32 arithmetic on CUDA while the engine scores.
//!
//! libtorch runs float32 convolutions on CUDA in TF32 by default (10-bit mantissa inputs, about
//! 1e-3 relative error; matrix products stay IEEE unless `TORCH_ALLOW_TF32_CUBLAS_OVERRIDE` is
//! set). NNrelief thresholds cumulative importance shares, so an error of that size moves every
//! entry near its row's threshold, and `reference` masks would no longer be the authors'
//! (computed in IEEE float32). [`ExactFloat32`] switches convolutions and matrix products to IEEE
//! float32 for its lifetime and then restores what was set before; [`crate::prune_step`] and
//! [`crate::engine::scoring_statistics`] hold one. Training keeps libtorch's defaults (TF32
//! convolutions are faster and train as well).
//!
//! The setting is libtorch's process-wide `at::Context` float32 precision (what PyTorch calls
//! `torch.backends.cudnn.conv.fp32_precision` and `torch.backends.cuda.matmul.fp32_precision`),
//! read and written through a small C++ shim (`csrc/precision.cpp`). It has no effect on the CPU.
//!
//! Training may choose its own arithmetic (`TrainPrecision`): [`CudaFloat32Math`] for IEEE or
//! TF32 steps, [`AutocastBf16`] for bfloat16 mixed precision (autocast, as `torch.autocast`).

use std::sync::Mutex;

extern "C" {
    fn relief_cuda_fp32_precision(op: i32) -> i32;
    fn relief_set_cuda_fp32_precision(op: i32, precision: i32) -> i32;
    fn relief_set_autocast(device: i32, enabled: i32, dtype: i32) -> i32;
}

/// An operation family whose float32 math mode libtorch lets us choose on CUDA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaOp {
    /// Convolutions (cuDNN).
    Conv = 0,
    /// Matrix products (cuBLAS).
    Matmul = 1,
}

/// libtorch's float32 math mode for one [`CudaOp`] (`at::Float32Precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Float32Math {
    /// Not set for this op: it follows libtorch's setting for all ops (IEEE unless changed).
    Inherit = 0,
    /// IEEE float32.
    Ieee = 1,
    /// TF32 tensor cores (float32 range, 10-bit mantissa inputs).
    Tf32 = 2,
    /// bfloat16 (only meaningful for libtorch's oneDNN backend).
    Bf16 = 3,
}

impl Float32Math {
    fn from_code(code: i32) -> Float32Math {
        match code {
            0 => Float32Math::Inherit,
            1 => Float32Math::Ieee,
            2 => Float32Math::Tf32,
            3 => Float32Math::Bf16,
            // The shim only returns a negative code if libtorch threw, which `float32Precision`
            // does not do for the CUDA backend; treat it as "unknown, not exact".
            _ => Float32Math::Tf32,
        }
    }
}

/// libtorch's current float32 math mode for `op` on CUDA.
pub fn cuda_float32_math(op: CudaOp) -> Float32Math {
    // SAFETY: the shim takes plain integers and catches every C++ exception.
    Float32Math::from_code(unsafe { relief_cuda_fp32_precision(op as i32) })
}

/// Sets libtorch's float32 math mode for `op` on CUDA (process-wide). Prefer [`ExactFloat32`]
/// for a scoped change.
pub fn set_cuda_float32_math(op: CudaOp, math: Float32Math) {
    // SAFETY: as above. libtorch accepts every (CUDA, op, precision) combination used here;
    // should it refuse one, the shim reports it and the setting stays as it was.
    let _ = unsafe { relief_set_cuda_fp32_precision(op as i32, math as i32) };
}

/// Nesting depth of live guards and the modes to restore when the last one ends. One lock for
/// the whole process, since the setting it protects is process-wide.
static GUARDS: Mutex<(usize, [Float32Math; 2])> = Mutex::new((0, [Float32Math::Inherit; 2]));

/// While alive, float32 convolutions and matrix products on CUDA are computed in IEEE float32.
/// Guards nest and may be held on several threads; the last one to end restores the modes that
/// were set when the first began.
#[must_use = "the previous float32 math mode is restored when the guard is dropped"]
pub struct ExactFloat32 {
    _private: (),
}

impl ExactFloat32 {
    /// Switches CUDA convolutions and matrix products to IEEE float32.
    pub fn new() -> ExactFloat32 {
        let mut state = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 == 0 {
            state.1 = [cuda_float32_math(CudaOp::Conv), cuda_float32_math(CudaOp::Matmul)];
            set_cuda_float32_math(CudaOp::Conv, Float32Math::Ieee);
            set_cuda_float32_math(CudaOp::Matmul, Float32Math::Ieee);
        }
        state.0 += 1;
        ExactFloat32 { _private: () }
    }
}

impl Default for ExactFloat32 {
    fn default() -> Self {
        ExactFloat32::new()
    }
}

impl Drop for ExactFloat32 {
    fn drop(&mut self) {
        let mut state = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        if state.0 == 0 {
            set_cuda_float32_math(CudaOp::Conv, state.1[0]);
            set_cuda_float32_math(CudaOp::Matmul, state.1[1]);
        }
    }
}

/// A scoped float32 math mode for CUDA convolutions and matrix products (training precision
/// `fp32` = IEEE, `tf32` = TF32): sets both for its lifetime, restores the previous modes after.
/// Not for use while [`ExactFloat32`] guards are alive on other threads (training and pruning
/// do not overlap).
#[must_use = "the previous float32 math mode is restored when the guard is dropped"]
pub struct CudaFloat32Math {
    previous: [Float32Math; 2],
}

impl CudaFloat32Math {
    /// Sets `math` for convolutions and matrix products.
    pub fn new(math: Float32Math) -> CudaFloat32Math {
        let previous = [cuda_float32_math(CudaOp::Conv), cuda_float32_math(CudaOp::Matmul)];
        set_cuda_float32_math(CudaOp::Conv, math);
        set_cuda_float32_math(CudaOp::Matmul, math);
        CudaFloat32Math { previous }
    }
}

impl Drop for CudaFloat32Math {
    fn drop(&mut self) {
        set_cuda_float32_math(CudaOp::Conv, self.previous[0]);
        set_cuda_float32_math(CudaOp::Matmul, self.previous[1]);
    }
}

/// While alive, the current thread runs eligible ops on `device`'s type (convolutions, matrix
/// products, linear layers) in bfloat16, as `torch.autocast(device_type, dtype=torch.bfloat16)`
/// does: float32 tensors stay float32 (master weights, masks, optimizer state), their bfloat16
/// copies are cached for the scope, and ops autocast keeps in float32 (softmax, losses,
/// BatchNorm statistics) stay there. The previous autocast state is restored on drop.
#[must_use = "autocast ends when the guard is dropped"]
pub struct AutocastBf16 {
    device: i32,
    previous: i32,
}

impl AutocastBf16 {
    /// Enables bfloat16 autocast for `device`'s type on this thread.
    pub fn new(device: tch::Device) -> AutocastBf16 {
        let device = if device.is_cuda() { 1 } else { 0 };
        // SAFETY: the shim takes plain integers and catches every C++ exception.
        let previous = unsafe { relief_set_autocast(device, 1, 0) };
        AutocastBf16 { device, previous }
    }
}

impl Drop for AutocastBf16 {
    fn drop(&mut self) {
        let (enabled, dtype) =
            if self.previous < 0 { (0, 0) } else { (self.previous & 1, (self.previous >> 1) & 1) };
        // SAFETY: as above.
        let _ = unsafe { relief_set_autocast(self.device, enabled, dtype) };
    }
}
