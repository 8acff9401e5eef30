//! What must hold before the writer touches a filesystem. Each refusal
//! names the feature or state and what the user can do about it.

use crate::ext4::error::{Ext4Error, Result};
use crate::ext4::superblock::{feature as f, Superblock, STATE_ERROR};
use crate::ext4::{Ext4, JournalState};
use crate::image::ReadAt;

const STATE_VALID: u16 = 0x1;

/// Feature bits the writer handles; any other set bit is refused.
const COMPAT_OK: u32 = f::COMPAT_HAS_JOURNAL
    | f::COMPAT_EXT_ATTR
    | f::COMPAT_RESIZE_INODE
    | f::COMPAT_DIR_INDEX
    | f::COMPAT_ORPHAN_FILE;
const INCOMPAT_OK: u32 = f::INCOMPAT_FILETYPE
    | f::INCOMPAT_EXTENTS
    | f::INCOMPAT_FLEX_BG
    | f::INCOMPAT_CSUM_SEED
    | f::INCOMPAT_64BIT;
const RO_COMPAT_OK: u32 = f::RO_COMPAT_SPARSE_SUPER
    | f::RO_COMPAT_LARGE_FILE
    | f::RO_COMPAT_HUGE_FILE
    | f::RO_COMPAT_DIR_NLINK
    | f::RO_COMPAT_EXTRA_ISIZE
    | f::RO_COMPAT_METADATA_CSUM;

const FIX_FSCK: &str = "run `e2fsck -f` on the root partition (or boot the image once and shut it down cleanly), then try again";

fn refuse(what: String, hint: &str) -> Ext4Error {
    Ext4Error::unsupported(what, hint)
}

fn features(sb: &Superblock) -> Result<()> {
    let hint = "rpiimg writes ext4 as Raspberry Pi OS and Ubuntu make it (mkfs.ext4 defaults); use such an image";
    let bad_incompat = sb.feature_incompat() & !INCOMPAT_OK & !f::INCOMPAT_RECOVER;
    if bad_incompat != 0 {
        let names = f::names(bad_incompat, f::INCOMPAT_NAMES).join(", ");
        return Err(refuse(
            format!("cannot write: feature(s) {names} not supported"),
            hint,
        ));
    }
    let bad_ro = sb.ro_compat() & !RO_COMPAT_OK;
    if bad_ro & f::RO_COMPAT_ORPHAN_PRESENT != 0 {
        return Err(refuse(
            "cannot write: the orphan file lists inodes still to be cleaned up".into(),
            FIX_FSCK,
        ));
    }
    if bad_ro != 0 {
        let names = f::names(bad_ro, f::RO_COMPAT_NAMES).join(", ");
        return Err(refuse(
            format!("cannot write: feature(s) {names} not supported"),
            hint,
        ));
    }
    let bad_compat = sb.feature_compat() & !COMPAT_OK;
    if bad_compat != 0 {
        let names = f::names(bad_compat, f::COMPAT_NAMES).join(", ");
        return Err(refuse(
            format!("cannot write: feature(s) {names} not supported"),
            hint,
        ));
    }
    if !sb.has_metadata_csum() || sb.checksum_type() != 1 {
        return Err(refuse(
            "cannot write: the filesystem has no metadata_csum (crc32c) checksums".into(),
            "rpiimg writes Raspberry Pi OS images from 2022 on; enable it with `tune2fs -O metadata_csum` or use a newer image",
        ));
    }
    if sb.block_size() != 4096 {
        return Err(refuse(
            format!(
                "cannot write: block size {} (only 4096 is supported)",
                sb.block_size()
            ),
            hint,
        ));
    }
    Ok(())
}

/// Refuse filesystems the writer must not modify.
pub(super) fn writable<D: ReadAt>(fs: &Ext4<D>) -> Result<()> {
    let sb = fs.superblock();
    features(sb)?;
    if sb.state() & STATE_VALID == 0 {
        return Err(refuse(
            "cannot write: the filesystem was not cleanly unmounted".into(),
            FIX_FSCK,
        ));
    }
    if sb.state() & STATE_ERROR != 0 || sb.error_count() != 0 {
        return Err(refuse(
            "cannot write: the kernel recorded errors on this filesystem".into(),
            FIX_FSCK,
        ));
    }
    if sb.last_orphan() != 0 {
        return Err(refuse(
            format!(
                "cannot write: orphan inode list is not empty (starts at inode {})",
                sb.last_orphan()
            ),
            FIX_FSCK,
        ));
    }
    if fs.journal_state()? == JournalState::NeedsRecovery {
        return Err(refuse(
            "cannot write: the journal holds transactions that need recovery".into(),
            FIX_FSCK,
        ));
    }
    Ok(())
}
