//! Directory references, as e2fsck's passes 2 to 4 judge them: every
//! directory entry names an inode in use, with the file type its mode
//! says; every directory is reached from the root exactly once; and every
//! in-use inode's link count is the number of entries naming it ('.', the
//! entry in its parent and each subdirectory's '..' for a directory).
//!
//! The inode pass in `check` fills a [`Census`] (a few bytes per inode,
//! capped by the superblock's inode count); [`Census::walk`] then reads
//! every directory reachable from the root once, iteratively, marking
//! each directory when it is first reached, so a cycle is reported and
//! never followed. Nothing here resolves a path.

use super::features::Feature;
use super::inode::{FileType, Inode, ROOT_INO};
use super::{Ext4, ReadAt};

/// Past this many entries a directory's link count is not kept
/// (`EXT4_LINK_MAX`): with `dir_nlink` the kernel stores 1.
const LINK_MAX: u32 = 65000;
/// An inode holding an extended attribute's value: named by no entry.
const EA_INODE_FL: u32 = 0x0020_0000;

// A census entry: the link count in the low 16 bits, then the mode's type
// nibble, then flags.
const TYPE_SHIFT: u32 = 16;
const IN_USE: u32 = 1 << 20;
const UNREADABLE: u32 = 1 << 21;
const NOT_NAMED: u32 = 1 << 22;
const VISITED: u32 = 1 << 23;

/// What the inode pass learned about each inode and how many entries the
/// walk found naming it. Indexed by inode number (index 0 unused).
pub(super) struct Census {
    state: Vec<u32>,
    refs: Vec<u16>,
}

impl Census {
    /// A census for `inodes` inodes, or `None` when the inode tables the
    /// superblock describes could not fit in the filesystem (so a hostile
    /// inode count cannot make this allocate more than the image holds).
    pub(super) fn new<D: ReadAt>(fs: &Ext4<D>) -> Option<Census> {
        let sb = &fs.sb;
        let table_bytes = u64::from(sb.inodes_count()).checked_mul(u64::from(sb.inode_size()))?;
        let fs_bytes = sb.blocks_count().checked_mul(fs.block_size() as u64)?;
        if table_bytes > fs_bytes {
            return None;
        }
        let n = usize::try_from(sb.inodes_count()).ok()?.checked_add(1)?;
        Some(Census {
            state: vec![0; n],
            refs: vec![0; n],
        })
    }

    /// Record an inode the pass read (its bitmap bit is set).
    pub(super) fn record(&mut self, inode: &Inode) {
        let mut s = u32::from(inode.links_count()) | (u32::from(inode.mode() >> 12) << TYPE_SHIFT);
        // In use as e2fsck's pass 1 decides: linked and with a mode.
        if inode.links_count() != 0 && inode.mode() != 0 {
            s |= IN_USE;
        }
        if inode.flags() & EA_INODE_FL != 0 {
            s |= NOT_NAMED;
        }
        self.set(inode.ino, s);
    }

    /// An inode whose bitmap bit is set but whose record failed its
    /// checks (already reported): entries to it are counted, not judged.
    pub(super) fn unreadable(&mut self, ino: u32) {
        self.set(ino, IN_USE | UNREADABLE);
    }

    fn set(&mut self, ino: u32, s: u32) {
        if let Some(slot) = usize::try_from(ino)
            .ok()
            .and_then(|i| self.state.get_mut(i))
        {
            *slot = s;
        }
    }

    fn get(&self, ino: u32) -> Option<u32> {
        usize::try_from(ino)
            .ok()
            .and_then(|i| self.state.get(i))
            .copied()
    }

    fn is_dir(s: u32) -> bool {
        s & UNREADABLE == 0 && FileType::from_mode(mode_type(s)) == FileType::Directory
    }

    fn count(&mut self, ino: u32) {
        if let Some(r) = usize::try_from(ino).ok().and_then(|i| self.refs.get_mut(i)) {
            *r = r.saturating_add(1);
        }
    }

    /// Mark a directory reached; false if it already was.
    fn visit(&mut self, ino: u32) -> bool {
        match usize::try_from(ino)
            .ok()
            .and_then(|i| self.state.get_mut(i))
        {
            Some(s) if *s & VISITED == 0 => {
                *s |= VISITED;
                true
            }
            _ => false,
        }
    }

    /// Walk every directory reachable from the root, judging each entry
    /// and counting the entries naming each inode; then compare the counts
    /// with the link counts. Problems are appended to `found`.
    pub(super) fn walk<D: ReadAt>(&mut self, fs: &Ext4<D>, found: &mut Vec<String>) {
        let first_ino = fs.sb.first_ino();
        let filetype = fs.sb.has(Feature::Filetype);
        let root = self.get(ROOT_INO).unwrap_or(0);
        if root & IN_USE == 0 || !Self::is_dir(root) {
            found.push("the root inode is not a directory in use".into());
            return;
        }
        // Whether every reachable directory was read whole: if not, the
        // counts are short and comparing them would only add noise.
        let mut complete = true;
        self.visit(ROOT_INO);
        // (directory, the directory it was reached from); each directory
        // is pushed once, when first reached, so the stack holds at most
        // one entry per inode.
        let mut stack = vec![(ROOT_INO, ROOT_INO)];
        while let Some((dir, parent)) = stack.pop() {
            let inode = match fs.inode(dir) {
                Ok(i) => i,
                Err(_) => {
                    // Reported by the inode pass.
                    complete = false;
                    continue;
                }
            };
            let (mut dot, mut dotdot) = (false, false);
            let read = fs.for_each_dir_block(&inode, |_, entries| {
                for e in entries {
                    // Only a problem needs the words; most entries have none.
                    let what = || format!("entry '{}' in directory inode {dir}", e.name_lossy());
                    match e.name.as_slice() {
                        b"." => {
                            dot = true;
                            if e.ino != dir {
                                found.push(format!("{} names inode {}, not itself", what(), e.ino));
                            }
                        }
                        b".." => {
                            dotdot = true;
                            if e.ino != parent {
                                found.push(format!(
                                    "{} names inode {}, its parent is {parent}",
                                    what(),
                                    e.ino
                                ));
                            }
                        }
                        _ => {}
                    }
                    // Reserved inodes other than the root are named by no
                    // entry (e2fsck: "has bad inode #").
                    let s = match self.get(e.ino) {
                        Some(s) if e.ino == ROOT_INO || e.ino >= first_ino => s,
                        _ => {
                            found.push(format!("{} names inode {}, which no entry may name", what(), e.ino));
                            continue;
                        }
                    };
                    if s & IN_USE == 0 {
                        found.push(format!("{} names unused inode {}", what(), e.ino));
                        continue;
                    }
                    self.count(e.ino);
                    if s & UNREADABLE != 0 {
                        // It may be a directory whose entries go uncounted.
                        complete = false;
                        continue;
                    }
                    let kind = FileType::from_mode(mode_type(s));
                    if filetype && e.file_type != kind {
                        found.push(format!(
                            "{} gives inode {} the file type {}, its mode says {}",
                            what(),
                            e.ino,
                            type_name(e.file_type),
                            type_name(kind)
                        ));
                    }
                    if e.name == b"." || e.name == b".." || !Self::is_dir(s) {
                        continue;
                    }
                    if self.visit(e.ino) {
                        stack.push((e.ino, dir));
                    } else {
                        found.push(format!(
                            "{} is a second link to directory inode {} (a directory cycle or hard link; not followed)",
                            what(),
                            e.ino
                        ));
                    }
                }
                Ok(false)
            });
            if let Err(e) = read {
                found.push(format!("directory inode {dir}: {e}"));
                complete = false;
            }
            if !dot || !dotdot {
                let missing = if dot { "'..'" } else { "'.'" };
                found.push(format!("directory inode {dir} has no {missing} entry"));
            }
        }
        self.unvisited_dirs(fs, found);
        if complete {
            self.compare(fs, found);
        } else {
            found.push("link counts not compared: a directory could not be read".into());
        }
    }

    /// In-use directories the walk did not reach still have their blocks
    /// checked (the line vouches for every in-use inode's directory
    /// blocks); `compare` reports them as unreachable.
    fn unvisited_dirs<D: ReadAt>(&self, fs: &Ext4<D>, found: &mut Vec<String>) {
        let dirs = (1u32..)
            .zip(self.state.iter().skip(1))
            .filter(|&(_, &s)| s & IN_USE != 0 && s & VISITED == 0 && Self::is_dir(s));
        for (ino, _) in dirs {
            if let Err(e) = fs.inode(ino).and_then(|i| fs.read_dir(&i)) {
                found.push(format!("directory inode {ino}: {e}"));
            }
        }
    }

    /// Each in-use inode's link count against the entries naming it (e2fsck
    /// pass 4), skipping the inodes it skips: reserved ones other than the
    /// root, and those the superblock or a flag says no entry names.
    fn compare<D: ReadAt>(&self, fs: &Ext4<D>, found: &mut Vec<String>) {
        let sb = &fs.sb;
        let dir_nlink = sb.has(Feature::DirNlink);
        // The journal, the orphan file and the quota files are inodes
        // the superblock names (usually reserved ones, but not always).
        let quota = |off: usize| {
            let raw = sb.raw();
            let word = raw.get(off..).and_then(<[u8]>::first_chunk::<4>);
            word.map_or(0, |w| u32::from_le_bytes(*w))
        };
        let special = [
            sb.journal_inum(),
            sb.orphan_file_inum(),
            quota(0x240),
            quota(0x244),
            quota(0x26C),
        ];
        let first_ino = sb.first_ino();
        let all = (1u32..).zip(self.state.iter().skip(1).zip(self.refs.iter().skip(1)));
        for (ino, (&s, &refs)) in all {
            if s & IN_USE == 0
                || s & (UNREADABLE | NOT_NAMED) != 0
                || (ino != ROOT_INO && ino < first_ino)
                || special.contains(&ino)
            {
                continue;
            }
            let links = s & 0xFFFF;
            let refs = u32::from(refs);
            let dir = Self::is_dir(s);
            if refs == 0 {
                let what = if dir { "directory inode" } else { "inode" };
                found.push(format!(
                    "{what} {ino} is in use but not reachable from the root (no directory entry names it)"
                ));
                continue;
            }
            if dir && refs > LINK_MAX && !dir_nlink {
                found.push(format!(
                    "directory inode {ino} has more than {LINK_MAX} links, without the dir_nlink feature"
                ));
                continue;
            }
            // With dir_nlink, a directory's count of 1 means "not counted":
            // the kernel stores it once the count passes LINK_MAX and
            // keeps it when subdirectories are removed again.
            if dir && dir_nlink && links == 1 {
                continue;
            }
            if links != refs {
                let noun = if refs == 1 {
                    "entry names"
                } else {
                    "entries name"
                };
                found.push(format!(
                    "inode {ino} has link count {links}, but {refs} directory {noun} it"
                ));
            }
        }
    }
}

fn mode_type(s: u32) -> u16 {
    // The nibble stored by `record`; four bits fit a u16.
    u16::try_from((s >> TYPE_SHIFT) & 0xF).unwrap_or(0) << 12
}

fn type_name(t: FileType) -> String {
    format!("{t:?}").to_lowercase()
}
