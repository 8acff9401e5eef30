//! The partition-table readers (MBR and GPT, with the backup header and
//! the layout checks) over arbitrary disk bytes.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, file) = common::as_file("partition", data);
    if let Ok(table) = rpiimg::partition::read(&file, data.len() as u64) {
        let _ = table.check_writable();
        for p in &table.partitions {
            let _ = table.window(&file, p, false);
        }
    }
});
