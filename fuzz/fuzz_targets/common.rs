//! Shared by the targets: rpiimg reads images through files (positioned
//! reads on a shared handle), so each input is written to a file in
//! /dev/shm (memory, not disk) and opened the way the CLI opens an image.

#![allow(dead_code)] // each target uses part of it

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// A per-process scratch file holding `data`, reopened read-only.
pub fn as_file(tag: &str, data: &[u8]) -> (PathBuf, Arc<File>) {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("rpiimg-fuzz-{}-{tag}", std::process::id()));
    let mut f = File::create(&path).expect("scratch file");
    f.write_all(data).expect("write scratch file");
    drop(f);
    let f = File::open(&path).expect("reopen scratch file");
    (path, Arc::new(f))
}

/// Discards bytes but counts them, so reads are really done.
pub struct Sink(pub u64);

/// What a target reads of one file. A legal sparse file may be terabytes
/// of holes, which `rpiimg cat` streams as zeros as cat(1) would: time in
/// proportion to what the user asked for, not a hang, so the targets stop
/// reading there rather than time out.
const SINK_CAP: u64 = 64 << 20;

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len() as u64;
        if self.0 > SINK_CAP {
            return Err(std::io::Error::other(
                "the fuzz target reads at most 64 MiB of a file",
            ));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
