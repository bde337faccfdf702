//! mixsim: the offline data-mixture simulator: budgets and caps from shard manifests, swarm
//! design, swarm running through a [`ProxyTrainer`] (the CLI wires it to the trainer; this
//! crate never links libtorch), runs tables, surrogates, constrained proposals with per-domain
//! utility, and materialized mixtures.
//!
//! Fit a surrogate on proxy runs (mixture weights → a validation loss), check it by k-fold
//! cross-validation, save it, and predict the loss of new mixtures. No heavy dependencies and
//! every random choice is seeded, so two runs give the same bytes.
//!
//! ```no_run
//! use mixsim::{FittedModel, RunsTable, SurrogateKind};
//! let dir = std::path::Path::new("../shared/data/regmix");
//! let table = RunsTable::import_regmix(&dir.join("train_mixture_1m.csv"), &dir.join("train_pile_loss_1m.csv"))?;
//! let model = FittedModel::fit(&table, "the_pile_pile_cc_val_loss", SurrogateKind::Gbdt)?;
//! let predicted = model.predict_rows(&table.domains, &[table.rows[0].weights.clone()])?;
//! # Ok::<(), mixsim::Error>(())
//! ```
#![warn(missing_docs)]

pub mod budget;
pub mod design;
mod error;
pub mod loo;
pub mod materialize;
pub mod metrics;
pub mod model;
pub mod noise;
pub mod optimize;
pub mod proposal;
pub mod rng;
pub mod rounding;
pub mod runs;
pub mod simplex;
pub mod surrogate;
pub mod swarm;

pub use budget::Budget;
pub use design::{DesignConfig, design};
pub use error::{Error, Result};
pub use materialize::{MaterializeConfig, materialize};
pub use metrics::{CvReport, kfold_cv, mae, pearson, spearman};
pub use model::{FittedModel, SurrogateKind};
pub use noise::SeedNoise;
pub use optimize::SearchConfig;
pub use proposal::{Aggregate, Proposal, ProposeConfig, propose};
pub use rounding::round_tokens;
pub use runs::{Mixtures, Run, RunsTable, read_mixtures};
pub use surrogate::{AnySurrogate, Ensemble, Gbdt, GbdtConfig, Linear, MixingLaw, Surrogate, auto};
pub use swarm::{ProxyJob, ProxyTrainer, SwarmDir, SwarmPlan, SwarmProgress, run_swarm};
