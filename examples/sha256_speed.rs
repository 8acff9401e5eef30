//! How fast rpiimg's sha256 (the sha2 crate, as the build and verify use
//! it) hashes in memory, in MB/s, for scripts/bench-build to set beside
//! `openssl speed -evp sha256`. sha2 picks the CPU's SHA extensions at run
//! time where present; a figure far below openssl's would mean it did not.
use sha2::{Digest, Sha256};
use std::time::Instant;

fn main() {
    let buf = vec![0x5au8; 1 << 20];
    let mut h = Sha256::new();
    let rounds = 2048; // 2 GiB
    let t = Instant::now();
    for _ in 0..rounds {
        h.update(&buf);
    }
    let digest = h.finalize();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:.0} MB/s ({} bytes hashed, digest {:02x}{:02x}..)",
        (rounds as f64 * buf.len() as f64) / secs / 1e6,
        rounds * buf.len(),
        digest[0],
        digest[1]
    );
}
