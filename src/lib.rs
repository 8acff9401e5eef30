#![forbid(unsafe_code)]
//! rpiimg: offline, pure-Rust patching of Raspberry Pi OS images.
//!
//! Data flows one way: image container -> partition table -> filesystems
//! -> a pure plan of changes -> applying the plan -> outputs.

pub mod apply;
pub mod bundle;
pub mod bytes;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod diff;
pub mod error;
pub mod ext4;
pub mod flash;
pub mod fs;
pub mod hostfile;
pub mod image;
pub mod inspect;
pub mod keystore;
pub mod manifest;
pub mod os;
pub mod output;
pub mod partition;
pub mod path;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod secret;
pub mod sshkey;
pub mod template;
pub mod term;
pub mod userdb;
pub mod verify;
