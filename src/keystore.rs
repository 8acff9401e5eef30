//! The per-cluster key store: one random secret per cluster, kept beside
//! the profiles (never in the output directory, never in git).
//!
//! Everything in an image that must look random to outsiders but be the
//! same on every rebuild (password-hash salts, and SSH host keys) is derived
//! from this secret with HMAC-SHA256, so builds are reproducible for whoever
//! holds the store and unpredictable for everyone else. Losing the store
//! means new salts and keys; a store is bound to its cluster's name and is
//! never used for another cluster.
//!
//! Location: `RPIIMG_KEYS_DIR/<cluster>/` when that variable is set, else
//! `<node profile's directory>/.rpiimg-keys/<cluster>/`. The directory is
//! made 0700 and `.rpiimg-keys/.gitignore` ignores everything in it.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{KeyInit, Mac};

use crate::error::{Error, Result};

/// A cluster's secret. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    cluster: String,
    key: [u8; 32],
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterSecret({}, <redacted>)", self.cluster)
    }
}

impl ClusterSecret {
    /// A fixed secret, for tests and examples only.
    pub fn fixed(cluster: &str, key: [u8; 32]) -> Self {
        ClusterSecret {
            cluster: cluster.to_string(),
            key,
        }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// HMAC-SHA256 of the labelled parts (NUL-separated, so no two part
    /// lists give the same message).
    pub fn derive(&self, label: &str, parts: &[&str]) -> [u8; 32] {
        let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        m.update(label.as_bytes());
        for p in parts {
            m.update(b"\0");
            m.update(p.as_bytes());
        }
        m.update(b"\0");
        m.update(self.cluster.as_bytes());
        m.finalize().into_bytes().into()
    }
}

/// Where the store of `cluster` lives for a profile in `profile_dir`.
pub(crate) fn store_dir(profile_dir: &Path, cluster: &str) -> PathBuf {
    match std::env::var_os("RPIIMG_KEYS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join(cluster),
        _ => profile_dir.join(".rpiimg-keys").join(cluster),
    }
}

const SECRET: &str = "secret";

fn host(path: &Path, e: std::io::Error) -> Error {
    Error::Host {
        path: path.display().to_string(),
        source: e,
    }
}

/// Read the store's secret; `None` when there is no store yet.
pub(crate) fn read(dir: &Path, cluster: &str) -> Result<Option<ClusterSecret>> {
    let path = dir.join(SECRET);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(host(&path, e)),
    };
    if !meta.file_type().is_file() || meta.len() > 4096 {
        return Err(Error::KeyStore(format!(
            "{}: not a regular rpiimg secret file; move it away (a new store is made on the next build)",
            path.display()
        )));
    }
    check_private(dir, &path, &meta)?;
    let text = std::fs::read_to_string(&path).map_err(|e| host(&path, e))?;
    let mut name = None;
    let mut key = None;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("cluster = ") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("secret = ") {
            key = crate::bytes::unhex(v.trim()).and_then(|b| <[u8; 32]>::try_from(b).ok());
        }
    }
    let broken = || {
        Error::KeyStore(format!(
            "{}: damaged key store (no `cluster = ` and 64-hex-digit `secret = ` lines); restore it from a backup, or move it away to make new keys",
            path.display()
        ))
    };
    let name = name.ok_or_else(broken)?;
    let key = key.ok_or_else(broken)?;
    if name != cluster {
        return Err(Error::KeyStore(format!(
            "{}: this key store belongs to cluster {name:?}, not {cluster:?}; a store is never shared between clusters (set RPIIMG_KEYS_DIR or move the profile)",
            path.display()
        )));
    }
    Ok(Some(ClusterSecret { cluster: name, key }))
}

/// Read the store, making it (with a new random secret) when missing.
/// Returns the secret and whether it was just made. Safe against a
/// concurrent build making the same store: the first one wins.
pub(crate) fn open_or_create(dir: &Path, cluster: &str) -> Result<(ClusterSecret, bool)> {
    if let Some(s) = read(dir, cluster)? {
        return Ok((s, false));
    }
    make_private_dir(dir)?;
    if let Some(parent) = dir.parent() {
        let ignore = parent.join(".gitignore");
        if parent.file_name().is_some_and(|n| n == ".rpiimg-keys") && !ignore.exists() {
            std::fs::write(
                &ignore,
                "# rpiimg key stores: secrets, never commit them\n*\n",
            )
            .map_err(|e| host(&ignore, e))?;
        }
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| {
        Error::KeyStore(format!(
            "no randomness from the operating system for a new key store: {e}"
        ))
    })?;
    let text = format!(
        "# rpiimg key store of cluster {cluster}. Keep it (and back it up): password\n\
         # salts and SSH host keys of the cluster's images are derived from it.\n\
         cluster = {cluster}\nsecret = {}\n",
        crate::bytes::hex(&key)
    );
    let path = dir.join(SECRET);
    let tmp = tempfile::Builder::new()
        .prefix(".secret.")
        .tempfile_in(dir)
        .map_err(|e| host(dir, e))?;
    {
        let mut f = tmp.as_file();
        // tempfile makes the file 0600 already; say it for the record.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| host(tmp.path(), e))?;
        }
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| host(tmp.path(), e))?;
    }
    // A hard link never replaces an existing file: a concurrent build that
    // made the store first wins, and both use its secret.
    match std::fs::hard_link(tmp.path(), &path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(host(&path, e)),
    }
    let s = read(dir, cluster)?.ok_or_else(|| {
        Error::KeyStore(format!("{}: the new key store vanished", path.display()))
    })?;
    let made = s.key == key;
    Ok((s, made))
}

const ROTATIONS: &str = "host-key-rotations";

fn rotations(dir: &Path) -> Result<Vec<(String, u32)>> {
    let path = dir.join(ROTATIONS);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(host(&path, e)),
    }
    // Bounded, regular files only, like every other small file rpiimg reads.
    let text = crate::hostfile::read_text(&path, None, crate::hostfile::TEXT_CAP)
        .map_err(Error::KeyStore)?;
    let mut out = Vec::new();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let parsed = l
            .split_once(" = ")
            .and_then(|(h, n)| Some((h.trim().to_string(), n.trim().parse::<u32>().ok()?)));
        let Some(entry) = parsed else {
            return Err(Error::KeyStore(format!(
                "{}: damaged line {l:?} (expected `HOST = N`); fix or remove it",
                path.display()
            )));
        };
        out.push(entry);
    }
    Ok(out)
}

/// Every recorded host-key generation of the store, by host.
pub(crate) fn host_key_generations(dir: &Path) -> Result<std::collections::BTreeMap<String, u32>> {
    Ok(rotations(dir)?.into_iter().collect())
}

/// How often `host`'s SSH host keys were rotated (0: never).
pub(crate) fn host_key_generation(dir: &Path, host_name: &str) -> Result<u32> {
    Ok(rotations(dir)?
        .into_iter()
        .find(|(h, _)| h == host_name)
        .map_or(0, |(_, n)| n))
}

/// `--rotate-host-keys`: the next generation of `host`'s keys, recorded in
/// the store (atomically) so later rebuilds keep the new keys.
pub(crate) fn rotate_host_keys(dir: &Path, host_name: &str) -> Result<u32> {
    let mut all = rotations(dir)?;
    let next = host_key_generation(dir, host_name)?.saturating_add(1);
    all.retain(|(h, _)| h != host_name);
    all.push((host_name.to_string(), next));
    all.sort();
    let mut text =
        String::from("# rpiimg: SSH host key generations (rpiimg build --rotate-host-keys)\n");
    for (h, n) in &all {
        text.push_str(&format!("{h} = {n}\n"));
    }
    let tmp = tempfile::Builder::new()
        .prefix(".rotations.")
        .tempfile_in(dir)
        .map_err(|e| host(dir, e))?;
    std::fs::write(tmp.path(), text).map_err(|e| host(tmp.path(), e))?;
    let path = dir.join(ROTATIONS);
    tmp.persist(&path).map_err(|e| host(&path, e.error))?;
    Ok(next)
}

/// The secret must be its owner's alone, as ssh insists for a private
/// key: readable by others, everything derived from it (password salts,
/// host private keys) is theirs too; writable by others (the file, or the
/// directory, where it can be replaced), they choose the keys the images
/// get. Either is refused, naming the fix, before the secret is used.
#[cfg(unix)]
fn check_private(dir: &Path, path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let file_mode = meta.permissions().mode() & 0o777;
    if file_mode & 0o077 != 0 {
        return Err(Error::KeyStore(format!(
            "{}: the key store's secret is open to other users (mode {file_mode:04o}); \
             make it private with `chmod 600 {}`, and if others could read it, treat it as \
             leaked: move the store away and rebuild every node (new salts and host keys)",
            path.display(),
            path.display()
        )));
    }
    let dmeta = std::fs::metadata(dir).map_err(|e| host(dir, e))?;
    let dir_mode = dmeta.permissions().mode() & 0o777;
    if dir_mode & 0o022 != 0 {
        return Err(Error::KeyStore(format!(
            "{}: the key store's directory is writable by other users (mode {dir_mode:04o}), \
             who could replace its secret; make it private with `chmod 700 {}`",
            dir.display(),
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &Path, _: &std::fs::Metadata) -> Result<()> {
    Ok(())
}

fn make_private_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| host(dir, e))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| host(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::KeyStore(format!(
            "{}: the key store must be a directory, not a link or file",
            dir.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| host(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_made_once_private_and_bound_to_its_cluster() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(".rpiimg-keys").join("ost");
        let (a, made) = open_or_create(&dir, "ost").unwrap();
        assert!(made);
        let (b, made) = open_or_create(&dir, "ost").unwrap();
        assert!(!made);
        assert_eq!(a, b);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("secret")), 0o600);
        assert!(d.path().join(".rpiimg-keys/.gitignore").exists());
        assert!(!format!("{a:?}").contains(&crate::bytes::hex(&a.key)));
        // A secret others may read, or a directory others may write, is
        // refused with the fix; nothing of the secret is in the message.
        let secret = dir.join("secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read(&dir, "ost").unwrap_err().to_string();
        assert!(e.contains("open to other users (mode 0640)"), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
        assert!(!e.contains(&crate::bytes::hex(&a.key)), "{e}");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = open_or_create(&dir, "ost").unwrap_err().to_string();
        assert!(e.contains("writable by other users (mode 0777)"), "{e}");
        assert!(e.contains("chmod 700"), "{e}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(read(&dir, "ost").unwrap(), Some(a.clone()));
        // Another cluster's store is refused, not reused.
        let e = read(&dir, "other").unwrap_err().to_string();
        assert!(e.contains("belongs to cluster \"ost\""), "{e}");
        // A new store elsewhere has another secret.
        let (c, _) = open_or_create(&d.path().join("x/ost"), "ost").unwrap();
        assert_ne!(a, c);
        assert_ne!(a.derive("l", &["p"]), c.derive("l", &["p"]));
        assert_ne!(a.derive("l", &["p", ""]), a.derive("l", &["p"]));
    }
}
