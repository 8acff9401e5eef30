//! The `.xz` reader that opens compressed bases: decompression and the
//! sha256 of the input computed on the way.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use rpiimg::progress::Progress;

fuzz_target!(|data: &[u8]| {
    let (path, _) = common::as_file("xz", data);
    let out = path.with_extension("out");
    let mut f = std::fs::File::create(&out).expect("scratch output");
    let _ = rpiimg::image::source::decompress(&path, &mut f, Progress::quiet());
});
