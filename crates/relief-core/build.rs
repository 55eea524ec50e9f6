fn main() {
    relief_build::link_libtorch();
    relief_build::compile_libtorch_shim("csrc/precision.cpp", "relief_core_precision");
}
