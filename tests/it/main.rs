//! Integration tests: one binary, one module per area.
mod cli;
mod common;
mod crash;
mod errors;
mod filters;
mod hnsw;
mod migration;
mod model;
mod persistence;
mod search;
