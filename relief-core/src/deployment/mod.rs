//! Shipping a pruned model: [`compact`] removes dead units and writes a smaller dense model
//! (its graph and tensors in one safetensors file); [`sparse`] runs masked layers as sparse
//! matrices; [`sparse_file`] stores a compacted model's non-zero entries only (CSR or bitmask,
//! float32 or float16), so the file is as small as the model is in parameters.

pub mod compact;
pub mod sparse;
pub mod sparse_file;
