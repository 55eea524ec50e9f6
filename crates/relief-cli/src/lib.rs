//! relief-cli: the `relief` command line as a library. Raw arguments and a TOML experiment
//! config become one validated [`plan::Plan`]; [`pipeline`] runs the iterative prune-retrain
//! loop into a [`rundir::RunDir`] (resumable, checkpointed), [`report`] and [`plots`] turn run
//! directories into tables and charts. `main.rs` only calls [`cli::main`].

#![warn(missing_docs)]

pub mod checkpoint;
pub mod cli;
pub mod cmd_data;
pub mod cmd_demo;
pub mod cmd_eval;
pub mod cmd_experiment;
pub mod cmd_export;
pub mod cmd_models;
pub mod cmd_prune_step;
pub mod cmd_report;
pub mod cmd_study;
pub mod config;
pub mod experiment;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod plan;
pub mod plots;
pub mod progress;
pub mod report;
pub mod rundir;
pub mod study;
pub mod util;
