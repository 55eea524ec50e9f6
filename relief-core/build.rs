fn main() {
    relief_build::link_libtorch();
    relief_build::compile_libtorch_shim(&["csrc/precision.cpp", "csrc/parallel.cpp"], "relief_core_shim");
}
