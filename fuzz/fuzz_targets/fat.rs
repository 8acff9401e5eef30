//! The FAT engine as `ls -R`, `cat` and `inspect` use it: open (with the
//! chain and directory checks), label, free space, then every directory
//! listed and every file read, and the handle-based walk held to the same
//! set of paths.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use rpiimg::ext4::FileType;
use rpiimg::fs::fat::Fat;
use rpiimg::image::Window;

fuzz_target!(|data: &[u8]| {
    let (_, file) = common::as_file("fat", data);
    let Ok(fat) = Fat::open(Window::new(file, 0, data.len() as u64, false)) else {
        return;
    };
    let _ = (fat.label(), fat.uuid(), fat.fat_type(), fat.space());
    let mut stack = vec![String::from("/")];
    let mut visited = 0usize;
    // Every path the list-based walk reaches, to hold Fat::walk (the
    // handle-based walk SystemView uses) to the same answer.
    let (mut seen, mut clean) = (Vec::new(), true);
    while let Some(dir) = stack.pop() {
        let Ok(list) = fat.list(&dir) else {
            clean = false;
            continue;
        };
        for (name, stat) in list {
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            seen.push(path.trim_start_matches('/').to_string());
            let _ = fat.stat(&path);
            if stat.kind == FileType::Directory {
                // After Fat::open's checks every directory is reached once;
                // this bound only keeps a regression from hanging the fuzzer
                // before it reports (libFuzzer's timeout would also catch it).
                visited += 1;
                assert!(visited < 100_000, "directory walk does not end");
                stack.push(path);
            } else {
                let _ = fat.read_to(&path, &mut common::Sink(0));
            }
        }
    }
    if let (true, Ok(all)) = (clean, fat.walk()) {
        let mut walked: Vec<String> = all.into_iter().map(|(p, _)| p).collect();
        walked.sort();
        seen.sort();
        assert_eq!(walked, seen, "Fat::walk and the list walk disagree");
    }
});
