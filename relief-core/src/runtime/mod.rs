//! libtorch plumbing the engine relies on: exact float32 math on CUDA while scoring
//! ([`precision`]), host loops on libtorch's thread pool ([`parallel`]), the host memory policy
//! for large CPU tensors ([`host_memory`]), safetensors I/O with atomic writes ([`tensor_io`]),
//! and error quotes cut to a readable length ([`message`]).

pub mod host_memory;
pub mod message;
pub mod parallel;
pub mod precision;
pub mod tensor_io;
