//! A Raspberry Pi Imager "custom repository" (`os_list` JSON) naming the
//! node images of an output directory, so a lab admin can flash them from
//! Imager's GUI instead of `rpiimg flash`.
//!
//! Each entry comes from a node's manifest and the files beside it; the
//! image's size and sha256 are those of the image Imager will write (it
//! checks them), the download size that of the file the URL names.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// The list's file name in an output directory.
pub(crate) const LIST_NAME: &str = "rpiimg-os-list.json";

#[derive(Debug, Serialize)]
pub(crate) struct OsList {
    pub os_list: Vec<OsEntry>,
}

/// The fields Imager's os-list schema requires, plus `devices` and
/// `init_format`.
#[derive(Debug, Serialize)]
pub(crate) struct OsEntry {
    pub name: String,
    pub description: String,
    /// Imager shows its default icon for an empty one.
    pub icon: String,
    pub url: String,
    pub extract_size: u64,
    pub extract_sha256: String,
    pub image_download_size: u64,
    /// sha256 of the file the URL names.
    pub image_download_sha256: String,
    /// The block map beside the image, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bmap_url: Option<String>,
    pub release_date: String,
    /// Imager's device tags: the lab's boards, Pi 4 and Pi 5, 64-bit.
    pub devices: Vec<String>,
    /// Pi OS arm64.
    pub architecture: String,
    /// "none": Imager must not offer its OS customisation, which would
    /// rewrite what rpiimg configured (user, hostname, SSH).
    pub init_format: String,
}

/// `file://` URL of an absolute path, percent-encoding all but unreserved
/// characters and `/`.
pub(crate) fn file_url(path: &Path) -> String {
    let mut s = String::from("file://");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The entries for every `<node>.manifest.json` in `dir`, in name order.
pub(crate) fn entries(dir: &Path) -> Result<Vec<OsEntry>> {
    let dir = std::fs::canonicalize(dir).map_err(Error::host(dir))?;
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(Error::host(&dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".manifest.json"))
                && p.is_file()
        })
        .collect();
    manifests.sort();
    if manifests.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no node manifests (*.manifest.json) in it; run rpiimg build first",
            dir.display()
        )));
    }
    manifests.iter().map(|m| entry(&dir, m)).collect()
}

fn entry(dir: &Path, manifest: &Path) -> Result<OsEntry> {
    let bad =
        |why: &str| Error::BadFile(format!("{}: {why}; rebuild the node", manifest.display()));
    let text = crate::hostfile::read_text(manifest, None, crate::hostfile::MANIFEST_CAP)
        .map_err(Error::Usage)?;
    let m = crate::manifest::Manifest::parse(&text, &manifest.display().to_string())?;
    let (url_file, download_sha256) = download_file(dir, &m, &bad)?;
    let bmap_url = m
        .image
        .bmap
        .as_ref()
        .filter(|b| plain(b) && dir.join(b).is_file())
        .map(|b| file_url(&dir.join(b)));
    let download = std::fs::metadata(&url_file)
        .map_err(Error::host(&url_file))?
        .len();
    let release_date = m
        .build_time
        .map(crate::clock::format_date)
        .unwrap_or_default();
    Ok(OsEntry {
        name: format!("{} (rpiimg)", m.node),
        description: description(&m),
        icon: String::new(),
        url: file_url(&url_file),
        extract_size: m.image.size,
        extract_sha256: m.image.sha256.clone(),
        image_download_size: download,
        image_download_sha256: download_sha256,
        bmap_url,
        release_date,
        devices: vec!["pi4-64bit".into(), "pi5-64bit".into()],
        architecture: "armv8".into(),
        init_format: "none".into(),
    })
}

/// Names in a manifest are file names in this directory, nothing else: a
/// manifest must not point the list at other files of the host.
fn plain(n: &str) -> bool {
    !n.contains('/') && n != ".." && !n.is_empty()
}

/// What Imager downloads for the node and its sha256: the `.xz` when it
/// is in the directory (smaller to fetch), else the image itself. `bad`
/// makes the error for a manifest that names neither usefully.
fn download_file(
    dir: &Path,
    m: &crate::manifest::Manifest,
    bad: &dyn Fn(&str) -> Error,
) -> Result<(PathBuf, String)> {
    let image = &m.image.image;
    if !plain(image) {
        return Err(bad("its image name is not a file name"));
    }
    if let Some(xz) = m
        .image
        .xz
        .as_ref()
        .filter(|x| plain(x) && dir.join(x).is_file())
    {
        let sum = m
            .image
            .xz_sha256
            .clone()
            .ok_or_else(|| bad("no xz sha256"))?;
        return Ok((dir.join(xz), sum));
    }
    let file = dir.join(image);
    if !file.is_file() {
        return Err(bad(&format!("its image {image} is not in the directory")));
    }
    Ok((file, m.image.sha256.clone()))
}

/// The entry's description: the node, its cluster and OS when the
/// manifest names them, and that it is flashed as is (Imager must not
/// customise it over rpiimg's settings).
fn description(m: &crate::manifest::Manifest) -> String {
    let os = serde_json::to_value(m.os)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let cluster = m
        .resolved_profile
        .pointer("/cluster/name")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    format!(
        "Node {}{} configured by rpiimg from Raspberry Pi OS Lite{}; flash as is, without OS customisation",
        m.node,
        if cluster.is_empty() { String::new() } else { format!(" of cluster {cluster}") },
        if os.is_empty() { String::new() } else { format!(" ({os})") },
    )
}

/// The JSON text of the list.
pub(crate) fn render(entries: Vec<OsEntry>) -> Result<String> {
    let list = OsList { os_list: entries };
    Ok(serde_json::to_string_pretty(&list).map_err(|e| Error::Output(e.into()))? + "\n")
}

/// Write the list for `dir` to `dest` (atomically); the path written.
pub(crate) fn write(dir: &Path, dest: &Path, force: bool) -> Result<PathBuf> {
    let text = render(entries(dir)?)?;
    super::write_text(dest, &text, force)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_percent_encoded() {
        assert_eq!(
            file_url(Path::new("/srv/lab images/ost01.img.xz")),
            "file:///srv/lab%20images/ost01.img.xz"
        );
        assert_eq!(file_url(Path::new("/a/b#c")), "file:///a/b%23c");
    }
}
