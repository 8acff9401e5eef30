//! verify's metadata pass over a mutated root filesystem: every in-use
//! inode and its blocks, the link-count walk over every directory, and the
//! bitmaps against what is in use (`Ext4::metadata_problems`). Its own
//! target, apart from `ext4`: the pass reads every inode of each input,
//! which would slow the reader's target several times over.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use rpiimg::ext4::Ext4;
use rpiimg::image::Window;

fuzz_target!(|data: &[u8]| {
    let (_, file) = common::as_file("verify", data);
    let Ok(fs) = Ext4::open(Window::new(file, 0, data.len() as u64, false)) else {
        return;
    };
    let _ = fs.metadata_problems(20);
});
