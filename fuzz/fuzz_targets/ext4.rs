//! The ext4 reader as `inspect`, `ls -R` and `cat` use it, over a mutated
//! root filesystem: the input is placed as partition 2 of an MBR disk,
//! then `inspect` runs and every path of the system view is stat'ed and read.
//! (verify's metadata pass has its own target, `verify`.)
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use rpiimg::image::source::OpenedImage;

/// An MBR with one Linux partition from sector 1 covering `sectors`.
fn disk(fs: &[u8]) -> Vec<u8> {
    let sectors = (fs.len() / 512) as u32;
    let mut d = vec![0u8; 512];
    let e = &mut d[446 + 16..446 + 32];
    e[4] = 0x83;
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    d[510] = 0x55;
    d[511] = 0xAA;
    d.extend_from_slice(&fs[..sectors as usize * 512]);
    d
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 1024 {
        return;
    }
    let d = disk(data);
    let (path, file) = common::as_file("ext4", &d);
    let img = OpenedImage {
        input: path.clone(),
        raw_path: path,
        file,
        size: d.len() as u64,
        compressed: false,
        input_sha256: None,
        raw_sha256: None,
    };
    let Ok(table) = rpiimg::partition::read(&img.file, img.size) else {
        return;
    };
    if let Ok(report) = rpiimg::inspect::inspect(&img, &table) {
        let _ = report.render();
    }
    let Ok((view, _)) = rpiimg::fs::view::SystemView::open(&img, &table) else {
        return;
    };
    let _ = view.ext4().journal_state();
    let _ = view.ext4().used_block_ranges();
    let Ok(entries) = view.walk() else { return };
    // Path resolution is exercised by inspect; here every node is read
    // as `cat` reads it once resolved.
    for e in entries {
        let _ = view.read_node_to(&e.node, &mut common::Sink(0));
    }
});
