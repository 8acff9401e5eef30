//! `rpiimg verify`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{emit, load, Ctx};
use crate::cli::VerifyArgs;
use crate::error::{Error, Result};
use crate::fs::view::SystemView;
use crate::image;
use crate::manifest::Manifest;
use crate::partition;
use crate::progress::Progress;
use crate::verify::{self, planned, Check};

/// `rpiimg verify`: invariants for each image, the plan or manifest, and
/// cross-image identity; exit status 1 when a check fails.
pub(super) fn run(ctx: &Ctx, args: &VerifyArgs, out: &mut dyn Write) -> Result<i32> {
    let (cache, progress) = (&ctx.cache, ctx.progress);
    let VerifyArgs {
        images,
        base,
        cluster,
        ..
    } = args;
    let cluster = *cluster;
    let profile = args.profile.as_deref();
    let manifest = args.manifest.as_deref().map(Path::new);
    // The image the manifest records (--manifest): its bytes are compared
    // with it too, unless --fast.
    let mut recorded = None;
    if images.len() > 1 && (profile.is_some() || manifest.is_some()) {
        return Err(Error::Usage("--profile and --manifest check one image; verify node images one by one, with --cluster for identities".into()));
    }
    let expects = match (profile, manifest) {
        (Some(name), _) => {
            let p = load::load_profile_with(name, &ctx.profiles, Progress::quiet(), false)?;
            let b = load::open_base(&p, base, cache, Progress::quiet())?;
            Some(planned::from_plan(&load::plan_for(&p, &b)?))
        }
        (None, Some(m)) => {
            let m = &manifest_for(&images[0], m);
            if !m.exists() {
                return Err(Error::BadFile(format!(
                    "{}: no manifest at {}: a node's outputs are complete only once its manifest is written, so this image may come from an interrupted build; rebuild it with `rpiimg build` (or name the manifest with --manifest FILE)",
                    images[0].display(),
                    m.display()
                )));
            }
            let text = crate::hostfile::read_text(m, None, crate::hostfile::MANIFEST_CAP)
                .map_err(Error::Usage)?;
            let dir = m.parent().map(Path::to_path_buf).unwrap_or_default();
            let m = Manifest::parse(&text, &m.display().to_string())?;
            recorded = Some((m.image, dir));
            Some(m.changes)
        }
        _ => None,
    };
    let mut checks: Vec<Check> = Vec::new();
    let mut ids = Vec::new();
    for img in images {
        let opened = image::open(img, None, cache, progress)?;
        let table = partition::read(&opened.file, opened.size)?;
        let (view, _) = SystemView::open(&opened, &table)?;
        let prefix = |mut c: Check| {
            if images.len() > 1 {
                c.what = format!("{}: {}", crate::output::display_path(img), c.what);
            }
            c
        };
        if let Some((r, dir)) = &recorded {
            checks.extend(image_checks(
                &opened,
                r,
                dir,
                (args.fast, args.flashed),
                progress,
            )?);
        }
        checks.extend(
            verify::invariants::check(&view, &table)?
                .into_iter()
                .map(prefix),
        );
        if let Some(e) = &expects {
            checks.extend(planned::check(&view, e)?.into_iter().map(prefix));
        }
        if cluster {
            ids.push((img.display().to_string(), verify::identity(&view)?));
        }
    }
    if cluster {
        checks.extend(verify::distinct(&ids));
    }
    emit(out, &checks, args.json, || verify::render(&checks))?;
    Ok(i32::from(checks.iter().any(|c| !c.ok)))
}

/// The image's bytes against the manifest's record of them: its size
/// always; its sha256 unless `fast` (a `.img` is hashed, about a second
/// per GiB; an `.img.xz` was hashed when opened, and its cache entry's
/// sealed sha256 is the decompressed image's).
fn image_checks(
    img: &image::OpenedImage,
    r: &crate::manifest::ImageRecord,
    dir: &Path,
    (fast, flashed): (bool, bool),
    progress: Progress,
) -> Result<Vec<Check>> {
    // A card (or file) flashed from the image's block map keeps what it
    // held where nothing is mapped (free space), and a card is larger
    // than its image: it holds the image when every mapped range has the
    // block map's sha256. Asked for (or a block device), that is the
    // check; for an image file the whole sha256 is, and a failing one says
    // whether the mapped blocks match.
    let device = {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(&img.raw_path).is_ok_and(|m| m.file_type().is_block_device())
    };
    if flashed || device {
        return Ok(vec![flashed_check(img, r, dir, progress)?.unwrap_or_else(|| {
            Check::new(
                "image's mapped blocks as its block map records (a flashed card)",
                false,
                format!(
                    "the manifest names no readable block map with sha256 ranges beside it in {}: compare the whole image (without --flashed)",
                    dir.display()
                ),
            )
        })]);
    }
    let mut checks = whole_image_checks(img, r, fast, progress)?;
    if checks.iter().all(|c| c.ok) || fast {
        return Ok(checks);
    }
    if flashed_check(img, r, dir, progress)?.is_some_and(|c| c.ok) {
        for c in checks.iter_mut().filter(|c| !c.ok) {
            c.detail.push_str(
                "; every block its block map maps matches, so if this is a card or file flashed from the image, check it with --flashed",
            );
        }
    }
    Ok(checks)
}

/// The image's mapped ranges against the build's `.bmap` (named by the
/// manifest, beside it): `None` when there is no block map to judge by.
fn flashed_check(
    img: &image::OpenedImage,
    r: &crate::manifest::ImageRecord,
    dir: &Path,
    progress: Progress,
) -> Result<Option<Check>> {
    use sha2::Digest;
    use std::os::unix::fs::FileExt;
    let Some(name) = &r.bmap else {
        return Ok(None);
    };
    let path = dir.join(name);
    let Ok(text) = crate::hostfile::read_text(&path, None, crate::hostfile::MANIFEST_CAP) else {
        return Ok(None);
    };
    let Ok(map) = crate::flash::bmapfile::parse(&text) else {
        return Ok(None);
    };
    let what = "image's mapped blocks as its block map records (a flashed card)";
    if map.image_size != r.size || img.size < r.size {
        return Ok(Some(Check::new(
            what,
            false,
            format!("{} bytes, the image has {}", img.size, r.size),
        )));
    }
    let mapped: u64 = map.ranges.iter().map(|m| m.end - m.start).sum();
    let mut task = progress.task("sha256 of mapped ranges", mapped);
    let mut buf = vec![0u8; 4 << 20];
    for m in &map.ranges {
        let Some(want) = &m.sha256 else {
            return Ok(None);
        };
        let mut h = sha2::Sha256::new();
        let mut off = m.start;
        while off < m.end {
            let n = usize::try_from((m.end - off).min(buf.len() as u64)).unwrap_or(buf.len());
            let b = &mut buf[..n];
            img.file
                .read_exact_at(b, off)
                .map_err(Error::host(&img.raw_path))?;
            h.update(&*b);
            off += n as u64;
            task.inc(n as u64);
        }
        let got = crate::bytes::hex(&h.finalize());
        if got != *want {
            task.finish();
            return Ok(Some(Check::new(
                what,
                false,
                format!(
                    "bytes {}-{} have sha256 {got}, the block map records {want}",
                    m.start,
                    m.end - 1
                ),
            )));
        }
    }
    task.finish();
    Ok(Some(Check::new(
        what,
        true,
        format!(
            "every mapped range of {} ({} bytes) matches; unmapped blocks are free space and were not compared",
            name, mapped
        ),
    )))
}

fn whole_image_checks(
    img: &image::OpenedImage,
    r: &crate::manifest::ImageRecord,
    fast: bool,
    progress: Progress,
) -> Result<Vec<Check>> {
    let mut checks = vec![Check::new(
        "image size as the manifest records",
        img.size == r.size,
        format!("{} bytes, the manifest records {}", img.size, r.size),
    )];
    if fast {
        return Ok(checks);
    }
    if img.compressed {
        if let (Some(found), Some(want)) = (&img.input_sha256, &r.xz_sha256) {
            checks.push(Check::new(
                ".img.xz sha256 as the manifest records",
                found == want,
                format!("sha256 {found}, the manifest records {want}"),
            ));
        }
    }
    let found = match (&img.raw_sha256, img.compressed) {
        (Some(s), true) => s.clone(),
        _ => image::source::sha256_open(&img.file, progress, "sha256")
            .map_err(Error::host(&img.raw_path))?,
    };
    checks.push(Check::new(
        "image sha256 as the manifest records",
        found == r.sha256,
        format!(
            "sha256 {found}, the manifest records {}: the image changed after its build (or is another build's); rebuild it, or flash the one that matches",
            r.sha256
        ),
    ));
    Ok(checks)
}

/// The manifest `--manifest` names, or for a bare `--manifest` the one a
/// build writes beside `image` (`ost04.img[.xz]` -> `ost04.manifest.json`).
fn manifest_for(image: &Path, given: &Path) -> PathBuf {
    if !given.as_os_str().is_empty() {
        return given.to_path_buf();
    }
    let name = crate::output::file_name(image);
    let stem = name
        .strip_suffix(".img.xz")
        .or_else(|| name.strip_suffix(".img"))
        .unwrap_or(&name);
    image.with_file_name(format!("{stem}.manifest.json"))
}
