//! The one integration-test binary for mixsim: each module tests one area on the real RegMix data.

mod common;
mod metrics;
mod model;
mod runs;
mod surrogates;
