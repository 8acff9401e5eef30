//! Checks every node image must pass whatever its profile says: the
//! filesystems are internally consistent, first-boot identity is intact,
//! the boot chain names the right partitions, sensitive files have safe modes.

use super::Check;
use crate::error::Result;
use crate::ext4::features::Feature;
use crate::ext4::group::{BG_BLOCK_UNINIT, BG_INODE_UNINIT};
use crate::ext4::{checksum, Ext4, Location};
use crate::fs::fstab;
use crate::fs::view::SystemView;
use crate::image::ReadAt;
use crate::partition::PartitionTable;

fn count_zero_bits(map: &[u8], n: usize) -> u32 {
    let mut c = 0;
    for i in 0..n {
        if map[i / 8] & (1 << (i % 8)) == 0 {
            c += 1;
        }
    }
    c
}

/// Superblock and descriptor checksums are verified by opening the
/// filesystem; here: every initialised bitmap's checksum and free count,
/// and the superblock totals.
pub(crate) fn ext4_consistency<D: ReadAt>(fs: &Ext4<D>) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let sb = fs.superblock();
    let groups = fs.groups();
    let seed = fs.csum_seed();
    let mask = groups.bitmap_csum_mask();
    let bpg = u64::from(sb.blocks_per_group());
    let ipg = sb.inodes_per_group() as usize;
    let (mut free_b, mut free_i) = (0u64, 0u64);
    for g in 0..sb.group_count() {
        free_b += u64::from(groups.free_blocks(g));
        free_i += u64::from(groups.free_inodes(g));
        let at = Location::Bitmap { group: g };
        if groups.flags(g) & BG_BLOCK_UNINIT == 0 {
            let map = fs.read_block(groups.block_bitmap(g), &at)?;
            let first = u64::from(sb.first_data_block()) + u64::from(g) * bpg;
            let n = usize::try_from((sb.blocks_count() - first).min(bpg)).unwrap_or(0);
            let bytes = usize::try_from(bpg / 8).unwrap_or(0);
            if sb.has(Feature::MetadataCsum)
                && checksum::bitmap(seed, &map[..bytes]) & mask != groups.block_bitmap_csum(g)
            {
                problems.push(format!("group {g}: block bitmap checksum does not match"));
            }
            let free = count_zero_bits(&map, n);
            if free != groups.free_blocks(g) {
                problems.push(format!(
                    "group {g}: {} free blocks recorded, bitmap has {free}",
                    groups.free_blocks(g)
                ));
            }
        }
        if groups.flags(g) & BG_INODE_UNINIT == 0 {
            let map = fs.read_block(groups.inode_bitmap(g), &at)?;
            if sb.has(Feature::MetadataCsum)
                && checksum::bitmap(seed, &map[..ipg / 8]) & mask != groups.inode_bitmap_csum(g)
            {
                problems.push(format!("group {g}: inode bitmap checksum does not match"));
            }
            let free = count_zero_bits(&map, ipg);
            if free != groups.free_inodes(g) {
                problems.push(format!(
                    "group {g}: {} free inodes recorded, bitmap has {free}",
                    groups.free_inodes(g)
                ));
            }
        }
    }
    if free_b != sb.free_blocks_count() {
        problems.push(format!(
            "superblock free blocks {} != sum over groups {free_b}",
            sb.free_blocks_count()
        ));
    }
    if free_i != u64::from(sb.free_inodes_count()) {
        problems.push(format!(
            "superblock free inodes {} != sum over groups {free_i}",
            sb.free_inodes_count()
        ));
    }
    Ok(problems)
}

/// All profile-independent checks.
pub(crate) fn check(view: &SystemView, table: &PartitionTable) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let mut problems = ext4_consistency(view.ext4())?;
    problems.extend(view.ext4().metadata_problems(20)?);
    out.push(Check::new(
        "ext4 root: checksums and counts consistent (superblock, group descriptors, bitmaps against the blocks and inodes in use, free counts, every in-use inode, its link count and block count, its extent, directory and xattr blocks, every directory entry, the journal superblock)",
        problems.is_empty(),
        problems.join("; "),
    ));

    let mid = view.read_text_opt("/etc/machine-id")?;
    let first_boot = matches!(
        mid.as_deref().map(str::trim),
        Some("") | Some("uninitialized") | None
    );
    out.push(Check::new(
        "machine-id in its first-boot state (empty or 'uninitialized')",
        first_boot,
        format!("/etc/machine-id holds {:?}", mid.unwrap_or_default().trim()),
    ));
    let dbus = view.exists("/var/lib/dbus/machine-id")?;
    out.push(Check::new(
        "no /var/lib/dbus/machine-id",
        !dbus,
        "/var/lib/dbus/machine-id exists: every board would share its D-Bus machine id".into(),
    ));

    // Every PARTUUID the boot chain names must exist in the partition table.
    let known: Vec<&str> = table
        .partitions
        .iter()
        .map(|p| p.partuuid.as_str())
        .collect();
    let mut named: Vec<(String, String)> = Vec::new();
    if let Some(cmd) = view.read_text_opt("/boot/firmware/cmdline.txt")? {
        for w in cmd.split_whitespace() {
            if let Some(u) = w.strip_prefix("root=PARTUUID=") {
                named.push(("cmdline.txt root=".into(), u.to_string()));
            }
        }
    }
    for e in view.fstab() {
        if let fstab::Spec::PartUuid(u) = fstab::spec(&e.spec) {
            named.push((format!("fstab {}", e.mount_point), u));
        }
    }
    let missing: Vec<String> = named
        .iter()
        .filter(|(_, u)| !known.iter().any(|k| k.eq_ignore_ascii_case(u)))
        .map(|(w, u)| {
            format!(
                "{w} names PARTUUID={u}, not in the table (disk id {})",
                table.disk_id
            )
        })
        .collect();
    out.push(Check::new(
        "cmdline.txt and fstab PARTUUIDs match the partition table",
        missing.is_empty() && !named.is_empty(),
        if named.is_empty() {
            "no PARTUUID found in cmdline.txt or fstab".into()
        } else {
            missing.join("; ")
        },
    ));

    for (dir, mode, what) in [
        ("/etc/netplan", 0o600, "netplan files are 0600"),
        ("/etc/sudoers.d", 0o440, "sudoers drop-ins are 0440"),
    ] {
        let mut bad = Vec::new();
        if let Some(list) = view.list_opt(dir)? {
            for (name, st) in list {
                if st.kind == crate::ext4::FileType::Regular && st.mode != mode {
                    bad.push(format!("{dir}/{name} is {:04o}", st.mode));
                }
            }
        }
        out.push(Check::new(what, bad.is_empty(), bad.join("; ")));
    }
    Ok(out)
}
