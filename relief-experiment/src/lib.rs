//! relief-experiment: relief's experiment layer as a library, what a Rust program needs to run
//! NNrelief (or magnitude pruning) end to end without the command line.
//!
//! Data flow: a TOML [`config::Config`] (or one built in code) becomes one validated
//! [`plan::Plan`] (model resolved, zoo name or spec file; data, device and every phase
//! checked); [`pipeline::Pipeline`] runs the iterative prune-retrain loop of the plan into a
//! [`rundir::RunDir`] (locked, resumable at epoch granularity, every file written atomically),
//! saving [`checkpoint::Checkpoint`]s by PyTorch names and one [`metrics::IterationMetrics`]
//! row per iteration; [`report`] and [`plots`] turn run directories into tables and charts;
//! [`study`] expands sweeps into many runs, locally or on Slurm, and aggregates them.
//! [`experiment::execute`] is the whole of `relief run`/`prune --resume` behind one call;
//! [`evaluate::LoadedModel`] loads any saved model (checkpoint, compacted, sparse) to evaluate it.
//!
//! The pruning engine itself is `relief-core` (device-agnostic, knows no concrete model or
//! dataset); networks are `relief-models`, datasets `relief-data`. See docs/architecture.md.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod evaluate;
pub mod experiment;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod plots;
pub mod progress;
pub mod report;
pub mod rundir;
pub mod study;
pub mod util;

pub use checkpoint::Checkpoint;
pub use config::Config;
pub use experiment::{run_plan, RunOptions};
pub use metrics::IterationMetrics;
pub use pipeline::Pipeline;
pub use plan::{Plan, Stages};
pub use progress::{Mode, Progress};
pub use report::RunSummary;
pub use rundir::RunDir;
