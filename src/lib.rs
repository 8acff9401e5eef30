#![forbid(unsafe_code)]
// `pub` means "used by the binary, the tests or the fuzz targets" (and the
// types their signatures show, re-exported at the layer's root so they can be
// named); whatever only the crate itself uses is `pub(crate)`, and this lint
// keeps it so. Dead code then shows up as such.
#![warn(unreachable_pub)]
//! rpiimg: offline, pure-Rust patching of Raspberry Pi OS images.
//!
//! Data flows one way: image container -> partition table -> filesystems
//! -> a pure plan of changes -> applying the plan -> outputs.

pub(crate) mod apply;
pub(crate) mod builder;
pub(crate) mod bundle;
pub mod bytes;
pub mod cli;
pub(crate) mod clock;
pub mod commands;
pub(crate) mod diff;
pub mod error;
pub mod ext4;
pub mod flash;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod hostfile;
pub(crate) mod hostpath;
pub mod image;
pub mod inspect;
pub(crate) mod keystore;
pub(crate) mod kolla;
pub mod lock;
pub(crate) mod manifest;
pub(crate) mod os;
pub mod output;
pub(crate) mod partial;
pub mod partition;
pub(crate) mod path;
pub(crate) mod plan;
pub mod profile;
pub mod progress;
pub(crate) mod secret;
pub(crate) mod sshkey;
pub mod template;
pub(crate) mod term;
pub(crate) mod userdb;
pub(crate) mod value;
pub(crate) mod verify;
