//! The NNrelief pruning call and what it is made of, in data-flow order: the model-agnostic
//! [`graph`] and its bound [`params`], the executor [`exec`] (forward with per-layer input
//! statistics), [`stats`] -> [`score`] (importance of every connection) -> [`select`]
//! (smallest set reaching `alpha`) -> [`backward`] (units that feed nothing) -> [`masks`];
//! [`engine`] runs them as one call under a [`semantics`]; [`magnitude`] is the baseline, and
//! [`baselines`] the other scores at an equal budget (random, NNrelief's activation score);
//! [`accounting`] counts parameters and FLOPs.

pub mod accounting;
pub mod backward;
pub mod baselines;
pub mod engine;
pub mod exec;
pub mod graph;
pub mod magnitude;
pub mod masks;
pub mod params;
pub mod score;
pub mod select;
pub mod semantics;
pub mod stats;
