//! The scoped switch to IEEE float32 on CUDA (`relief_core::precision`). The process-wide
//! setting is only touched by this binary's tests, which run one after another under a lock.

use std::sync::Mutex;

use relief_core::precision::{cuda_float32_math, set_cuda_float32_math, CudaOp, ExactFloat32, Float32Math};
use tch::{Device, Kind, Tensor};

static SETTING: Mutex<()> = Mutex::new(());

#[test]
fn guard_sets_ieee_nests_and_restores() {
    let _lock = SETTING.lock().unwrap_or_else(|e| e.into_inner());
    // libtorch's default: TF32 convolutions on CUDA (the reason the guard exists).
    assert_eq!(cuda_float32_math(CudaOp::Conv), Float32Math::Tf32);
    set_cuda_float32_math(CudaOp::Matmul, Float32Math::Tf32);
    {
        let _outer = ExactFloat32::new();
        assert_eq!(cuda_float32_math(CudaOp::Conv), Float32Math::Ieee);
        assert_eq!(cuda_float32_math(CudaOp::Matmul), Float32Math::Ieee);
        {
            let _inner = ExactFloat32::new();
            assert_eq!(cuda_float32_math(CudaOp::Conv), Float32Math::Ieee);
        }
        // The inner guard ending must not restore while the outer one lives.
        assert_eq!(cuda_float32_math(CudaOp::Conv), Float32Math::Ieee);
        assert_eq!(cuda_float32_math(CudaOp::Matmul), Float32Math::Ieee);
    }
    assert_eq!(cuda_float32_math(CudaOp::Conv), Float32Math::Tf32);
    assert_eq!(cuda_float32_math(CudaOp::Matmul), Float32Math::Tf32);
    set_cuda_float32_math(CudaOp::Matmul, Float32Math::Inherit);
    assert_eq!(cuda_float32_math(CudaOp::Matmul), Float32Math::Inherit);
}

/// Largest |a - b| / max|b| of a float32 result against a float64 reference.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_device(Device::Cpu).to_kind(Kind::Double);
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
}

/// On CUDA, a convolution under the guard has float32 accuracy; without it, libtorch's TF32
/// default is visibly coarser. Needs a CUDA device: `cargo test --test precision -- --ignored`.
#[test]
#[ignore = "needs CUDA"]
fn cuda_convolution_is_ieee_under_the_guard() {
    let _lock = SETTING.lock().unwrap_or_else(|e| e.into_inner());
    assert!(tch::Cuda::is_available(), "no CUDA device");
    tch::manual_seed(3);
    let x = Tensor::randn([8, 64, 16, 16], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([64, 64, 3, 3], (Kind::Float, Device::Cpu));
    let exact = x.to_kind(Kind::Double).conv2d::<Tensor>(&w.to_kind(Kind::Double), None, 1, 1, 1, 1);
    let gpu = Device::Cuda(0);
    let (xg, wg) = (x.to_device(gpu), w.to_device(gpu));
    let conv = || xg.conv2d::<Tensor>(&wg, None, 1, 1, 1, 1);
    let default_err = rel_err(&conv(), &exact);
    let guarded_err = {
        let _exact = ExactFloat32::new();
        rel_err(&conv(), &exact)
    };
    let after_err = rel_err(&conv(), &exact);
    eprintln!("relative error: default {default_err:.2e}, guarded {guarded_err:.2e}, after {after_err:.2e}");
    assert!(guarded_err < 1e-5, "guarded convolution error {guarded_err:.2e}");
    assert!(default_err > 1e-4, "libtorch's default no longer TF32? error {default_err:.2e}");
    assert!(after_err > 1e-4, "the guard did not restore TF32: error {after_err:.2e}");
}
