//! Profile loading as `rpiimg plan --profile FILE` does it: TOML parsing,
//! `extends` resolution inside the scratch directory, typed decoding and
//! validation.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (path, _) = common::as_file("profile.toml", data);
    if let Ok(p) = rpiimg::profile::load(&path) {
        let _ = rpiimg::profile::validate(&p);
    }
    let _ = rpiimg::profile::load_cluster(&path);
});
