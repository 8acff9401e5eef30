//! Entry points for the fuzz targets in `fuzz/` into parsers of files a
//! user hands in, which are crate-private: not an API, only what the
//! targets need to check each parser's promises.

/// A `.bmap`'s text: `Some((image_size, ranges))` when it is accepted.
pub fn bmap(text: &str) -> Option<(u64, Vec<(u64, u64)>)> {
    let m = crate::flash::bmapfile::parse(text).ok()?;
    Some((
        m.image_size,
        m.ranges.iter().map(|r| (r.start, r.end)).collect(),
    ))
}

/// A `--kolla-inventory` file's text, as `rpiimg cluster` reads it: the
/// kept part (the stock groups after the node groups) when it is accepted,
/// and which releases' stock inventory it is.
pub fn kolla_inventory(text: &str) -> (Option<String>, Vec<&'static str>) {
    crate::bundle::read_stock_for_fuzzing(text)
}
