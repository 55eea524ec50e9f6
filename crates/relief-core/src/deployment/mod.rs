//! Shipping a pruned model: [`compact`] removes dead units and writes a smaller dense model
//! (its graph and tensors in one safetensors file); [`sparse`] runs masked layers as sparse
//! matrices.

pub mod compact;
pub mod sparse;
