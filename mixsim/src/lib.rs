//! mixsim: the pure core of an offline data-mixture simulator (tables, surrogates, rank metrics).
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

mod error;
pub mod metrics;
pub mod model;
mod rng;
pub mod runs;
pub mod surrogate;

pub use error::{Error, Result};
pub use metrics::{CvReport, kfold_cv, mae, pearson, spearman};
pub use model::{FittedModel, SurrogateKind};
pub use runs::{Mixtures, Run, RunsTable, read_mixtures};
pub use surrogate::{AnySurrogate, Ensemble, Gbdt, GbdtConfig, Linear, MixingLaw, Surrogate, auto};
