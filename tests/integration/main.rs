//! rpiimg's integration tests, one binary (as cargo's own `tests/testsuite`):
//! one link, one process, one check of the external tools for the whole
//! run. A module per area; `support` holds the fixtures, the rpiimg
//! command and the oracles.
//!
//! Run one area or one test by its path:
//! `cargo test --test integration build_cluster::plans_match_golden_files`.

// Helpers are `pub(crate)`: this binary is their only user.
#![warn(unreachable_pub)]

mod build_cluster;
mod cache_trust;
mod cluster_bundle;
mod concurrency;
mod corrupt_inputs;
mod error_kinds;
mod ext4_model;
mod ext4_write;
mod file_modes;
mod first_boot;
mod first_hour;
mod flash_cli;
mod flash_preflight;
mod fs_cli;
mod hostile_inputs;
mod image_outputs;
mod imager_list;
mod read_fixtures;
mod reproducible;
mod support;
mod verify_cli;
