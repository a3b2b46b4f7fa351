//! rust_metrics: streams safetensors checkpoints and computes the 14 weight statistics of
//! *Latent State Models of Training Dynamics* (Hu et al., TMLR 2023, Appendix B).
//!
//! The pure-Rust core (`tensor`, `checkpoint`, `source`, `selection`, `stats`, `median`,
//! `spectrum`, `engine`)
//! has no Python dependency and is tested with `cargo test`; the `python` feature adds
//! the thin PyO3 binding that maturin builds into `trainmap._rust_metrics`.

#![deny(missing_docs)]

pub mod checkpoint;
pub mod engine;
pub mod error;
pub mod median;
pub mod selection;
pub mod source;
pub mod spectrum;
pub mod stats;
pub mod tensor;

#[cfg(feature = "python")]
mod python;

pub use engine::{checkpoint_metrics, shards_metrics, source_metrics, trajectory_metrics, with_threads, CheckpointReport, Options, Statistics};
pub use error::{MetricsError, Result};
pub use selection::{Selection, DEFAULT_EXCLUDE};
pub use spectrum::{SvdMode, SvdOptions};
