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
pub(crate) const MAX_BMAP: u64 = 64 << 20;

#[derive(Debug)]
pub(crate) struct BlockMap {
    pub image_size: u64,
    pub ranges: Vec<MapRange>,
}

/// Parse a bmap's text. `Err` is a one-line reason naming what is wrong;
/// no text makes it panic (it comes from beside an image, from anyone).
pub(crate) fn parse(text: &str) -> Result<BlockMap, String> {
    let version = text
        .split_once("<bmap version=\"")
        .and_then(|(_, rest)| rest.split('"').next())
        .ok_or("not a bmap file (no <bmap version=...>)")?;
    let major = version.split('.').next().unwrap_or("");
    if major != "1" && major != "2" {
        return Err(format!(
            "bmap version {version} is not supported (1.x or 2.x)"
        ));
    }
    let geometry = Geometry::read(text)?;
    // Versions before 1.4 name no checksum type: their checksums are sha1.
    let checksum = field(text, "ChecksumType").unwrap_or("sha1");
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    check_seal(text, version, major == "2" || minor >= 3, checksum)?;
    let body = field(text, "BlockMap").ok_or("no <BlockMap>")?;
    let ranges = block_ranges(body, &geometry, checksum == "sha256")?;
    Ok(BlockMap {
        image_size: geometry.image_size,
        ranges,
    })
}

/// The trimmed text of the first `<name>...</name>` element.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let (_, after) = text.split_once(&format!("<{name}>"))?;
    let (inside, _) = after.split_once(&format!("</{name}>"))?;
    Some(inside.trim())
}

/// The number in element `<name>`.
fn num(text: &str, name: &str) -> Result<u64, String> {
    field(text, name)
        .ok_or_else(|| format!("no <{name}>"))?
        .parse::<u64>()
        .map_err(|_| format!("<{name}> is not a number"))
}

/// The image's size and how it is cut into blocks, checked against each
/// other: the ranges are counted in these blocks.
struct Geometry {
    image_size: u64,
    block: u64,
    blocks: u64,
}

impl Geometry {
    fn read(text: &str) -> Result<Geometry, String> {
        let image_size = num(text, "ImageSize")?;
        let block = num(text, "BlockSize")?;
        if block == 0 || !block.is_multiple_of(512) || block > 1 << 20 {
            return Err(format!(
                "<BlockSize> {block} is not a multiple of 512 up to 1 MiB"
            ));
        }
        let blocks = num(text, "BlocksCount")?;
        if blocks != image_size.div_ceil(block) {
            return Err(format!(
                "<BlocksCount> {blocks} does not cover <ImageSize> {image_size}"
            ));
        }
        Ok(Geometry {
            image_size,
            block,
            blocks,
        })
    }
}

/// Since 1.3 a bmap carries its own checksum (`sealed`), and bmaptool
/// refuses one without: so does rpiimg, and one it cannot check (sha1,
/// 1.3) too, rather than trust a map nobody proved. The checksum is the
/// sha256 of the file with that field set to zeros.
fn check_seal(text: &str, version: &str, sealed: bool, checksum: &str) -> Result<(), String> {
    let Some(own) = field(text, "BmapFileChecksum") else {
        return if sealed {
            Err(format!(
                "bmap version {version} has no BmapFileChecksum (bmaptool refuses such a file too): it was edited or cut short"
            ))
        } else {
            Ok(())
        };
    };
    if checksum != "sha256" {
        return Err(format!(
            "its checksums are {checksum}, which rpiimg does not check (make a version 2.0 map with bmaptool create, or rebuild)"
        ));
    }
    let zeros = "0".repeat(own.len());
    let blank = text.replacen(own, &zeros, 1);
    let sum = crate::bytes::hex(&Sha256::digest(blank.as_bytes()));
    if !sum.eq_ignore_ascii_case(own) {
        return Err("its BmapFileChecksum does not match: the file was edited or cut short".into());
    }
    Ok(())
}

/// The `<Range>` lines of `<BlockMap>` as byte ranges, in order, inside
/// the image, with their sha256 when the map's checksums are sha256.
fn block_ranges(body: &str, g: &Geometry, sha256: bool) -> Result<Vec<MapRange>, String> {
    let mut ranges: Vec<MapRange> = Vec::new();
    let lines = body.lines().map(str::trim).filter(|l| !l.is_empty());
    for (n, line) in (1u64..).zip(lines) {
        let (a, b, sum) = range_line(line)
            .ok_or_else(|| format!("<BlockMap> line {n}: {line:?} is not a <Range>"))?;
        if a > b || b >= g.blocks {
            return Err(format!(
                "<BlockMap> line {n}: blocks {a}-{b} are outside the image's {}",
                g.blocks
            ));
        }
        // b < blocks = ceil(image_size / block), so a * block lies inside
        // the image; the end past u64 would be past the image's end too.
        let start = a
            .checked_mul(g.block)
            .ok_or_else(|| format!("<BlockMap> line {n}: blocks {a}-{b} are outside the image"))?;
        let end = b
            .checked_add(1)
            .and_then(|e| e.checked_mul(g.block))
            .map_or(g.image_size, |e| e.min(g.image_size));
        if ranges.last().is_some_and(|r| r.start >= start) {
            return Err(format!(
                "<BlockMap> line {n}: ranges out of order or overlapping"
            ));
        }
        let sha256 = match (sha256, sum) {
            (true, Some(s)) if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) => Some(s),
            (true, Some(_)) => return Err(format!("<BlockMap> line {n}: bad sha256")),
            _ => None,
        };
        ranges.push(MapRange { start, end, sha256 });
    }
    Ok(ranges)
}

/// One `<Range chksum="..."> A-B </Range>` (or `> A </Range>`): the first
/// and last block and the checksum, lower case; `None` when the line is not
/// of that shape.
fn range_line(line: &str) -> Option<(u64, u64, Option<String>)> {
    let rest = line.strip_prefix("<Range")?;
    let (attrs, rest) = rest.split_once('>')?;
    let span = rest.strip_suffix("</Range>")?.trim();
    let sum = attrs
        .split_once("chksum=\"")
        .and_then(|(_, s)| s.split('"').next())
        .map(str::to_ascii_lowercase);
    let (a, b) = match span.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (span, span),
    };
    Some((a.parse().ok()?, b.parse().ok()?, sum))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
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

    #[test]
    fn no_text_makes_it_panic() {
        let good = ours();
        // Every cut, and every line dropped or doubled: an error or a map.
        for cut in (0..good.len()).filter(|&i| good.is_char_boundary(i)) {
            let _ = parse(&good[..cut]);
        }
        let lines: Vec<&str> = good.lines().collect();
        for i in 0..lines.len() {
            let mut dropped = lines.clone();
            dropped.remove(i);
            let _ = parse(&dropped.join("\n"));
            let mut doubled = lines.clone();
            doubled.insert(i, lines[i]);
            let _ = parse(&doubled.join("\n"));
        }
        // Sizes at the end of u64, unsealed (1.2) so the checksum is not in
        // the way: refused or mapped, never an overflow.
        let max = u64::MAX;
        let blocks = max.div_ceil(4096);
        let last = blocks - 1;
        let text = format!(
            "<bmap version=\"1.2\"><ImageSize> {max} </ImageSize><BlockSize> 4096 </BlockSize>\
             <BlocksCount> {blocks} </BlocksCount><BlockMap>\n<Range> {last} </Range>\n\
             <Range> {max} </Range>\n</BlockMap></bmap>"
        );
        assert!(parse(&text).unwrap_err().contains("line 2"));
        let text = text.replacen(&format!("<Range> {max} </Range>\n"), "", 1);
        let m = parse(&text).unwrap();
        assert_eq!(m.ranges[0].end, max);
        assert_eq!(m.ranges[0].start, last * 4096);
    }
}
