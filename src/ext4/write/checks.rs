//! What must hold before the writer touches a filesystem. Each refusal
//! names the feature or state and what the user can do about it.

use crate::ext4::error::{Ext4Error, Result};
use crate::ext4::features::{Feature, Gate};
use crate::ext4::superblock::{Superblock, STATE_ERROR};
use crate::ext4::{Ext4, JournalState};
use crate::image::ReadAt;

const STATE_VALID: u16 = 0x1;

const FIX_FSCK: &str = "run `e2fsck -f` on the root partition (or boot the image once and shut it down cleanly), then try again";

fn refuse(what: String, hint: &str) -> Ext4Error {
    Ext4Error::unsupported(what, hint)
}

fn features(sb: &Superblock) -> Result<()> {
    let features = sb.features();
    let unwritable = features.unwritable();
    if !unwritable.is_empty() {
        return Err(Ext4Error::Features {
            gate: Gate::Write,
            features: unwritable,
        });
    }
    if features.contains(Feature::OrphanPresent) {
        return Err(refuse(
            "cannot write: the orphan file lists inodes still to be cleaned up".into(),
            FIX_FSCK,
        ));
    }
    if !features.contains(Feature::MetadataCsum) || sb.checksum_type() != 1 {
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
            Gate::Write.hint(),
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
