//! NNrelief engine: importance scores, masks, threshold selection, backward pruning and
//! parameter/FLOP accounting, on libtorch tensors, device-agnostic.
//!
//! The engine works on a model-agnostic [`graph::PruneGraph`] that every model provides; see
//! [`engine::prune_step`] for one pruning call and [`semantics::Semantics`] for the two named
//! behaviours (`reference` = the authors' code bit for bit, `paper` = quirks fixed).
//!
//! Method: Dekhovich, Tax, Sluiter, Bessa, "Neural network relief: a pruning algorithm based on
//! neural activity", arXiv 2109.10795.
//!
//! Layout by concern: [`pruning`] (graph -> exec -> stats -> score -> select -> backward ->
//! masks, the engine, magnitude pruning, accounting), [`training`] (masked optimizers, schedule),
//! [`deployment`] (compaction, sparse inference), [`runtime`] (libtorch plumbing, tensor I/O).

pub mod deployment;
pub mod error;
pub mod pruning;
pub mod runtime;
pub mod training;

// The modules by their flat names too (`relief_core::graph`, `relief_core::compact`, ...), the
// paths the rest of the workspace and users' code have always used.
pub use deployment::{compact, sparse, sparse_file};
pub use pruning::{
    accounting, backward, baselines, engine, exec, graph, magnitude, masks, params, score, select, semantics,
    stats,
};
pub use runtime::{host_memory, parallel, precision, tensor_io};
pub use training::{optim, train};

pub use engine::{prune_step, PruneConfig, PruneOutcome};
pub use error::CoreError;
pub use graph::PruneGraph;
pub use masks::MaskSet;
pub use semantics::Semantics;
