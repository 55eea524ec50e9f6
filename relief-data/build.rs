fn main() {
    relief_build::link_libtorch();
}
