//! NNrelief engine: importance scores, masks, threshold selection, backward pruning and
//! parameter/FLOP accounting, on libtorch tensors, device-agnostic.
//!
//! The engine works on a model-agnostic [`graph::PruneGraph`] that every model provides; see
//! [`engine::prune_step`] for one pruning call and [`semantics::Semantics`] for the two named
//! behaviours (`reference` = the authors' code bit for bit, `paper` = quirks fixed).
//!
//! Method: Dekhovich, Tax, Sluiter, Bessa, "Neural network relief: a pruning algorithm based on
//! neural activity", arXiv 2109.10795.

pub mod accounting;
pub mod backward;
pub mod compact;
pub mod engine;
pub mod error;
pub mod exec;
pub mod graph;
pub mod host_memory;
pub mod magnitude;
pub mod masks;
pub mod optim;
pub mod parallel;
pub mod params;
pub mod precision;
pub mod score;
pub mod select;
pub mod semantics;
pub mod sparse;
pub mod stats;
pub mod tensor_io;
pub mod train;

pub use engine::{prune_step, PruneConfig, PruneOutcome};
pub use error::CoreError;
pub use graph::PruneGraph;
pub use masks::MaskSet;
pub use semantics::Semantics;
