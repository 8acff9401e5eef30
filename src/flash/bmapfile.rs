//! Reading a `.bmap` (bmaptool's block map, versions 1.x and 2.x, as
//! `rpiimg build` and `bmaptool create` write them): which byte ranges of
//! the image to write, with the sha256 each range must have.
//!
//! The file is small XML of a fixed shape, so it is read line by line for
//! the few elements that matter; anything else is ignored, and a file
//! whose own checksum does not match is refused (it was edited or cut).

use sha2::{Digest, Sha256};

use super::MapRange;

/// The largest `.bmap` read (a 4 GiB image fully fragmented into single
/// blocks would need less than this).
pub const MAX_BMAP: u64 = 64 << 20;

#[derive(Debug)]
pub struct BlockMap {
    pub image_size: u64,
    pub ranges: Vec<MapRange>,
}

/// Parse a bmap's text. `Err` is a one-line reason naming what is wrong.
pub fn parse(text: &str) -> Result<BlockMap, String> {
    let field = |name: &str| -> Option<&str> {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let end = start + text[start..].find(&close)?;
        Some(text[start..end].trim())
    };
    let num = |name: &str| -> Result<u64, String> {
        field(name)
            .ok_or_else(|| format!("no <{name}>"))?
            .parse::<u64>()
            .map_err(|_| format!("<{name}> is not a number"))
    };
    let version = text
        .find("<bmap version=\"")
        .and_then(|i| text[i + 15..].split('"').next())
        .ok_or("not a bmap file (no <bmap version=...>)")?;
    let major = version.split('.').next().unwrap_or("");
    if major != "1" && major != "2" {
        return Err(format!(
            "bmap version {version} is not supported (1.x or 2.x)"
        ));
    }
    let image_size = num("ImageSize")?;
    let block = num("BlockSize")?;
    if block == 0 || block % 512 != 0 || block > 1 << 20 {
        return Err(format!(
            "<BlockSize> {block} is not a multiple of 512 up to 1 MiB"
        ));
    }
    let blocks = num("BlocksCount")?;
    if blocks != image_size.div_ceil(block) {
        return Err(format!(
            "<BlocksCount> {blocks} does not cover <ImageSize> {image_size}"
        ));
    }
    // Versions before 1.4 name no checksum type: their checksums are sha1.
    let checksum = field("ChecksumType").unwrap_or("sha1").to_string();
    // Since 1.3 a bmap carries its own checksum, and bmaptool refuses one
    // without: so does rpiimg, and one it cannot check (sha1, 1.3) too,
    // rather than trust a map nobody proved.
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let sealed = major == "2" || minor >= 3;
    match field("BmapFileChecksum") {
        None if sealed => {
            return Err(format!(
                "bmap version {version} has no BmapFileChecksum (bmaptool refuses such a file too): it was edited or cut short"
            ))
        }
        None => {}
        Some(own) => {
            if checksum != "sha256" {
                return Err(format!(
                    "its checksums are {checksum}, which rpiimg does not check (make a version 2.0 map with bmaptool create, or rebuild)"
                ));
            }
            let zeros = "0".repeat(own.len());
            let blank = text.replacen(own, &zeros, 1);
            let sum = crate::bytes::hex(&Sha256::digest(blank.as_bytes()));
            if !sum.eq_ignore_ascii_case(own) {
                return Err(
                    "its BmapFileChecksum does not match: the file was edited or cut short".into(),
                );
            }
        }
    }
    let mut ranges: Vec<MapRange> = Vec::new();
    let body = field("BlockMap").ok_or("no <BlockMap>")?;
    for (i, line) in body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let bad = || format!("<BlockMap> line {}: {line:?} is not a <Range>", i + 1);
        let rest = line.strip_prefix("<Range").ok_or_else(bad)?;
        let (attrs, rest) = rest.split_once('>').ok_or_else(bad)?;
        let span = rest.strip_suffix("</Range>").ok_or_else(bad)?.trim();
        let sum = attrs
            .split_once("chksum=\"")
            .and_then(|(_, s)| s.split('"').next())
            .map(str::to_ascii_lowercase);
        let (a, b) = match span.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (span, span),
        };
        let (a, b) = (
            a.parse::<u64>().map_err(|_| bad())?,
            b.parse::<u64>().map_err(|_| bad())?,
        );
        if a > b || b >= blocks {
            return Err(format!(
                "<BlockMap> line {}: blocks {a}-{b} are outside the image's {blocks}",
                i + 1
            ));
        }
        if ranges.last().is_some_and(|r| r.start >= a * block) {
            return Err(format!(
                "<BlockMap> line {}: ranges out of order or overlapping",
                i + 1
            ));
        }
        let sha256 = match (checksum.as_str(), sum) {
            ("sha256", Some(s)) if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) => {
                Some(s)
            }
            ("sha256", Some(_)) => return Err(format!("<BlockMap> line {}: bad sha256", i + 1)),
            _ => None,
        };
        ranges.push(MapRange {
            start: a * block,
            end: ((b + 1) * block).min(image_size),
            sha256,
        });
    }
    Ok(BlockMap { image_size, ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> String {
        let mut s = crate::output::bmap::Scanner::new(&[], &[]);
        let mut data = vec![0u8; 10 * 4096 + 100];
        data[0] = 1;
        data[3 * 4096] = 2;
        data[4 * 4096] = 3;
        data[10 * 4096 + 50] = 4;
        s.feed(&data);
        crate::output::bmap::render(&s.finish())
    }

    #[test]
    fn reads_what_build_writes() {
        let m = parse(&ours()).unwrap();
        assert_eq!(m.image_size, 41060);
        let spans: Vec<_> = m.ranges.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(spans, vec![(0, 4096), (3 * 4096, 5 * 4096), (40960, 41060)]);
        assert!(m.ranges.iter().all(|r| r.sha256.is_some()));
    }

    #[test]
    fn edited_files_are_refused() {
        let t = ours().replacen("> 0 <", "> 1 <", 1);
        assert!(parse(&t).unwrap_err().contains("BmapFileChecksum"));
        assert!(parse("hello").unwrap_err().contains("not a bmap"));
        // Without its own checksum: refused, as bmaptool does since 1.3.
        let own = ours();
        let sum = own
            .split("<BmapFileChecksum> ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let unsealed = own.replacen(
            &format!("<BmapFileChecksum> {sum} </BmapFileChecksum>\n"),
            "",
            1,
        );
        assert!(parse(&unsealed)
            .unwrap_err()
            .contains("no BmapFileChecksum"));
        let cut = ours();
        let cut = &cut[..cut.len() / 2];
        assert!(parse(cut).is_err());
    }
}
