//! relief-cli: the `relief` command line, a thin layer over the libraries. Each `cmd_*` module
//! parses one subcommand's arguments (clap) and calls `relief-experiment` (configs, plans, the
//! prune-retrain loop, run directories, reports, studies), `relief-models` (zoo and specs),
//! `relief-data` (datasets) or `relief-core` (the engine, compaction). `main.rs` only calls
//! [`cli::main`].

#![warn(missing_docs)]

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
