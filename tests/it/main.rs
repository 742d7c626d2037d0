//! Integration tests: one binary, one module per area.
mod cli;
mod common;
mod concurrency;
mod damage;
mod diskann;
mod errors;
mod faults;
mod filters;
mod hnsw;
mod ivfpq;
mod keyword;
mod migration;
mod model;
mod persistence;
mod search;
mod server;
