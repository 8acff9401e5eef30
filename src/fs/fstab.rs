//! `/etc/fstab` parsing: which partition the booted system mounts where.

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FstabEntry {
    pub spec: String,
    pub mount_point: String,
    pub fs_type: String,
    pub options: String,
}

/// Parse fstab text; comments, blank and malformed lines are skipped.
pub(crate) fn parse(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .filter_map(|l| {
            let l = l.split('#').next().unwrap_or("").trim();
            let mut f = l.split_whitespace();
            let spec = f.next()?;
            let mp = f.next()?;
            let ty = f.next()?;
            let opts = f.next().unwrap_or("defaults");
            Some(FstabEntry {
                spec: spec.to_string(),
                mount_point: unescape(mp),
                fs_type: ty.to_string(),
                options: opts.to_string(),
            })
        })
        .collect()
}

/// fstab escapes spaces and tabs in paths as octal (`\040`).
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t")
}

/// What a spec names, so it can be matched against partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Spec {
    PartUuid(String),
    Label(String),
    Uuid(String),
    /// `/dev/mmcblk0p2`, `/dev/sda2`, `/dev/nvme0n1p2`: partition 2 of the boot disk.
    DevNumber(u32),
    Other(String),
}

pub(crate) fn spec(s: &str) -> Spec {
    if let Some(v) = s.strip_prefix("PARTUUID=") {
        return Spec::PartUuid(v.to_ascii_lowercase());
    }
    if let Some(v) = s.strip_prefix("LABEL=") {
        return Spec::Label(v.to_string());
    }
    if let Some(v) = s.strip_prefix("UUID=") {
        return Spec::Uuid(v.to_ascii_lowercase());
    }
    if let Some(dev) = s.strip_prefix("/dev/") {
        let prefix = dev.trim_end_matches(|c: char| c.is_ascii_digit());
        let digits = dev.strip_prefix(prefix).unwrap_or_default();
        let whole_disk = ["mmcblk", "nvme", "sd", "vd", "loop"]
            .iter()
            .any(|p| prefix.starts_with(p));
        if whole_disk
            && !digits.is_empty()
            && (prefix.ends_with('p') || prefix.starts_with("sd") || prefix.starts_with("vd"))
        {
            if let Ok(n) = digits.parse() {
                return Spec::DevNumber(n);
            }
        }
    }
    Spec::Other(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi_os_fstab() {
        let t = "proc            /proc           proc    defaults          0       0\n\
                 PARTUUID=5eed0001-01  /boot/firmware  vfat    defaults          0       2\n\
                 # comment\n\
                 PARTUUID=5EED0001-02  /               ext4    defaults,noatime  0       1\n";
        let [_, boot, root] = parse(t).try_into().unwrap();
        assert_eq!(boot.mount_point, "/boot/firmware");
        assert_eq!(spec(&root.spec), Spec::PartUuid("5eed0001-02".into()));
    }

    #[test]
    fn specs() {
        assert_eq!(spec("LABEL=rootfs"), Spec::Label("rootfs".into()));
        assert_eq!(spec("UUID=ABCD-1234"), Spec::Uuid("abcd-1234".into()));
        assert_eq!(spec("/dev/mmcblk0p1"), Spec::DevNumber(1));
        assert_eq!(spec("/dev/sda2"), Spec::DevNumber(2));
        assert_eq!(spec("/dev/nvme0n1p3"), Spec::DevNumber(3));
        assert_eq!(spec("proc"), Spec::Other("proc".into()));
    }
}
