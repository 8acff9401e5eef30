//! The `--kolla-inventory` reader: any text is refused or kept as lines
//! of itself (the groups after the node groups, with `[deployment]`), and
//! is the stock inventory of at most one known release.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (kept, releases) = rpiimg::fuzzing::kolla_inventory(text);
    if let Some(kept) = kept {
        assert!(kept.contains("[deployment]"));
        // The reader takes lines as str::lines does (a CRLF ending is one
        // line end) and writes each with '\n': split the output on '\n'
        // alone, so a line that kept a '\r' of its own is compared whole.
        let lines: std::collections::HashSet<&str> = text.lines().collect();
        for l in kept.split('\n').filter(|l| !l.is_empty()) {
            assert!(
                lines.contains(l),
                "kept a line the input does not have: {l:?}"
            );
        }
    }
    assert!(releases.len() <= 3);
});
