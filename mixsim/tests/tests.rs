//! The one integration-test binary for mixsim: each module tests one area on the real RegMix data.

mod common;
mod design;
mod metrics;
mod model;
mod noise;
mod rounding;
mod runs;
mod surrogates;
mod swarm;
