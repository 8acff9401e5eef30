//! The `.bmap` reader `rpiimg flash` uses on files it is handed: any text
//! is refused or gives ranges in order, inside the image, never empty.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((size, ranges)) = rpiimg::fuzzing::bmap(text) {
        let mut end = 0;
        for (a, b) in ranges {
            assert!(a < b, "empty range {a}-{b}");
            assert!(b <= size, "range {a}-{b} past the image's {size} bytes");
            assert!(a >= end, "ranges out of order");
            end = b;
        }
    }
});
