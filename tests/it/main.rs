//! Integration tests: one binary, one module per area.
mod cli;
mod common;
mod crash;
mod errors;
mod hnsw;
mod model;
mod persistence;
mod search;
