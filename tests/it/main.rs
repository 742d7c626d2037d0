//! Integration tests: one binary, one module per area.
mod common;
mod crash;
mod errors;
mod model;
mod persistence;
mod search;
