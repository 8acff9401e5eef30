//! The image as the booted system sees it: the ext4 root at `/`, and each
//! FAT partition at the mount point the image's own `/etc/fstab` gives it
//! (`/boot/firmware` on Raspberry Pi OS).

use std::io::Write;

use super::fat::Fat;
use super::fstab::{self, Spec};
use super::Stat;
use crate::error::{Error, Result};
use crate::ext4::{Ext4, Ext4Error, FileType, Inode};
use crate::image::{OpenedImage, Window};
use crate::partition::{Partition, PartitionTable};
use crate::path::{self, Kind, PathError, ResolveError, Walk};

/// The same bound on both filesystems.
use crate::ext4::MEMORY_CAP;

/// What a partition holds.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Probe {
    Ext4 { label: String, uuid: String },
    Vfat { label: String, uuid: String },
    Unknown,
}

pub struct Mount {
    pub point: String,
    pub part: u32,
    pub fat: Fat,
}

pub struct SystemView {
    root: Ext4<Window>,
    root_part: u32,
    mounts: Vec<Mount>,
    fstab: Vec<fstab::FstabEntry>,
}

#[derive(Clone)]
pub enum Node {
    Ext4(u32),
    Fat(usize, String),
}

fn probe(img: &OpenedImage, table: &PartitionTable, p: &Partition) -> Probe {
    let w = table.window(&img.file, p, false);
    if let Ok(fs) = Ext4::open(w.clone()) {
        let sb = fs.superblock();
        return Probe::Ext4 {
            label: sb.volume_name(),
            uuid: crate::bytes::uuid(&sb.uuid()),
        };
    }
    if let Ok(fat) = Fat::open(w) {
        return Probe::Vfat {
            label: fat.label(),
            uuid: fat.uuid(),
        };
    }
    Probe::Unknown
}

/// Which partition an fstab spec names.
fn find_partition(spec: &Spec, table: &PartitionTable, probes: &[(u32, Probe)]) -> Option<u32> {
    match spec {
        Spec::PartUuid(u) => table
            .partitions
            .iter()
            .find(|p| &p.partuuid == u)
            .map(|p| p.number),
        Spec::DevNumber(n) => table.get(*n).map(|p| p.number),
        Spec::Label(l) => probes.iter().find_map(|(n, pr)| match pr {
            Probe::Ext4 { label, .. } | Probe::Vfat { label, .. } if label == l => Some(*n),
            _ => None,
        }),
        Spec::Uuid(u) => probes.iter().find_map(|(n, pr)| match pr {
            Probe::Ext4 { uuid, .. } | Probe::Vfat { uuid, .. } if uuid.eq_ignore_ascii_case(u) => {
                Some(*n)
            }
            _ => None,
        }),
        Spec::Other(_) => None,
    }
}

impl SystemView {
    /// Find the root filesystem and mount what its fstab lists.
    pub fn open(img: &OpenedImage, table: &PartitionTable) -> Result<(Self, Vec<(u32, Probe)>)> {
        let probes: Vec<(u32, Probe)> = table
            .partitions
            .iter()
            .map(|p| (p.number, probe(img, table, p)))
            .collect();
        let mut root = None;
        let mut first_err = None;
        for p in &table.partitions {
            if !matches!(
                probes.iter().find(|(n, _)| *n == p.number),
                Some((_, Probe::Ext4 { .. }))
            ) {
                // Still open it to report why it failed (corrupt vs unsupported).
                if p.type_id == "0x83" || p.type_name.starts_with("Linux") {
                    if let Err(e) = Ext4::open(table.window(&img.file, p, false)) {
                        first_err.get_or_insert(e);
                    }
                }
                continue;
            }
            let fs = Ext4::open(table.window(&img.file, p, false))?;
            match fs.resolve("/etc/fstab", true) {
                Ok(_) => {
                    root = Some((p.number, fs));
                    break;
                }
                Err(Ext4Error::Path(PathError::NotFound(_))) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let Some((root_part, root)) = root else {
            if let Some(e) = first_err {
                return Err(e.into());
            }
            return Err(Error::Layout(
                "no ext4 partition with /etc/fstab found: this does not look like a Raspberry Pi OS or Ubuntu image".into(),
            ));
        };
        let fstab_inode = root.resolve("/etc/fstab", true)?;
        let fstab = fstab::parse(&String::from_utf8_lossy(&super::read_config(
            &root,
            &fstab_inode,
            "/etc/fstab",
        )?));
        let mut mounts = Vec::new();
        for e in &fstab {
            if e.mount_point == "/" || e.fs_type != "vfat" {
                continue;
            }
            let Some(n) = find_partition(&fstab::spec(&e.spec), table, &probes) else {
                continue;
            };
            let Some(p) = table.get(n) else { continue };
            let fat = Fat::open(table.window(&img.file, p, false)).map_err(|err| Error::Fat {
                part: n,
                detail: err.to_string(),
            })?;
            mounts.push(Mount {
                point: path::normalize(&e.mount_point),
                part: n,
                fat,
            });
        }
        // Longest mount point first, so nested mounts win.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.point.len()));
        Ok((
            SystemView {
                root,
                root_part,
                mounts,
                fstab,
            },
            probes,
        ))
    }

    pub fn ext4(&self) -> &Ext4<Window> {
        &self.root
    }

    pub(crate) fn root_partition(&self) -> u32 {
        self.root_part
    }

    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    pub fn fstab(&self) -> &[fstab::FstabEntry] {
        &self.fstab
    }

    fn resolve(&self, p: &str, follow_last: bool) -> Result<(Node, String)> {
        path::resolve(self, p, follow_last).map_err(ResolveError::into_fs)
    }

    /// The FAT mount a [`Node::Fat`] refers to. Nodes come from this view's
    /// own walks, but `Node` is public: one made by hand may name a mount
    /// this view does not have.
    fn mount(&self, i: usize) -> Result<&Mount> {
        self.mounts
            .get(i)
            .ok_or_else(|| Error::Usage(format!("FAT mount {i} does not exist in this image")))
    }

    fn fat_err(m: &Mount, e: std::io::Error) -> Error {
        Error::Fat {
            part: m.part,
            detail: e.to_string(),
        }
    }

    fn ext4_stat(&self, inode: &Inode) -> Result<Stat> {
        let target = if inode.file_type() == FileType::Symlink {
            Some(String::from_utf8_lossy(&self.root.readlink(inode)?).into_owned())
        } else {
            None
        };
        Ok(Stat {
            kind: inode.file_type(),
            mode: inode.permissions(),
            uid: inode.uid(),
            gid: inode.gid(),
            size: inode.size(),
            mtime: inode.mtime(),
            nlink: u32::from(inode.links_count()),
            ino: inode.ino,
            target,
            fs: "ext4",
        })
    }

    fn node_stat(&self, node: &Node) -> Result<Stat> {
        match node {
            Node::Ext4(ino) => self.ext4_stat(&self.root.live_inode(*ino)?),
            Node::Fat(i, rel) => {
                let m = self.mount(*i)?;
                m.fat
                    .stat(rel)
                    .map_err(|e| Self::fat_err(m, e))?
                    .ok_or_else(|| Error::Path(PathError::NotFound(rel.clone())))
            }
        }
    }

    /// Metadata of a path; symlinks in the last component are followed only with `follow`.
    pub fn stat(&self, p: &str, follow: bool) -> Result<Stat> {
        let (node, _) = self.resolve(p, follow).map_err(|e| e.in_path(p))?;
        self.node_stat(&node).map_err(|e| e.in_path(p))
    }

    pub fn exists(&self, p: &str) -> Result<bool> {
        match self.resolve(p, false) {
            Ok(_) => Ok(true),
            Err(Error::Path(PathError::NotFound(_)) | Error::Path(PathError::NotADirectory(_))) => {
                Ok(false)
            }
            Err(e) => Err(e.in_path(p)),
        }
    }

    /// Stream a file's content (following symlinks).
    pub fn read_to(&self, p: &str, w: &mut dyn Write) -> Result<u64> {
        let (node, canon) = self.resolve(p, true).map_err(|e| e.in_path(p))?;
        self.read_file_to(&node, &canon, w)
            .map_err(|e| e.in_path(p))
    }

    /// The content of the regular file `node` (found at `canon`).
    fn read_file_to(&self, node: &Node, canon: &str, w: &mut dyn Write) -> Result<u64> {
        let st = self.node_stat(node)?;
        match st.kind {
            FileType::Directory => Err(Error::Path(PathError::IsADirectory(canon.into()))),
            FileType::Regular => self.read_node_to(node, w),
            _ => Err(Error::Layout(format!("{canon}: not a regular file"))),
        }
    }

    /// A whole file in memory, refused (naming the file) above
    /// [`MEMORY_CAP`]: what rpiimg reads whole is configuration, and a
    /// legal sparse file of a terabyte must not exhaust memory. Large
    /// content goes through [`SystemView::read_to`].
    pub fn read(&self, p: &str) -> Result<Vec<u8>> {
        let (node, canon) = self.resolve(p, true).map_err(|e| e.in_path(p))?;
        let size = self.node_stat(&node).map_err(|e| e.in_path(p))?.size;
        let cap = usize::try_from(size).ok().filter(|_| size <= MEMORY_CAP);
        let Some(cap) = cap else {
            return Err(Error::TooLarge {
                path: p.to_string(),
                size,
                cap: MEMORY_CAP,
            });
        };
        // Both engines write exactly the size they report.
        let mut v = Vec::with_capacity(cap);
        self.read_file_to(&node, &canon, &mut v)
            .map_err(|e| e.in_path(p))?;
        Ok(v)
    }

    /// The sha256 of a file's content, streamed (any size).
    pub fn sha256(&self, p: &str) -> Result<[u8; 32]> {
        let mut h = crate::bytes::Sha256Writer::default();
        self.read_to(p, &mut h)?;
        Ok(h.finish())
    }

    /// A text file, or `None` when it does not exist.
    pub(crate) fn read_text_opt(&self, p: &str) -> Result<Option<String>> {
        match self.read(p) {
            Ok(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Err(Error::Path(PathError::NotFound(_)) | Error::Path(PathError::NotADirectory(_))) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Entries of a directory, or `None` when it does not exist. Any other
    /// failure (a damaged directory) is an error, never an empty answer.
    pub(crate) fn list_opt(&self, p: &str) -> Result<Option<Vec<(String, Stat)>>> {
        match self.list(p) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Path(PathError::NotFound(_)) | Error::Path(PathError::NotADirectory(_))) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Entries of a directory (following symlinks to it), sorted by name.
    pub fn list(&self, p: &str) -> Result<Vec<(String, Stat)>> {
        self.list_inner(p).map_err(|e| e.in_path(p))
    }

    fn list_inner(&self, p: &str) -> Result<Vec<(String, Stat)>> {
        let (node, canon) = self.resolve(p, true)?;
        if self.node_stat(&node)?.kind != FileType::Directory {
            return Err(Error::Path(PathError::NotADirectory(canon)));
        }
        let mut out: Vec<(String, Stat)> = self
            .children(&canon, &node)?
            .into_iter()
            .map(|c| (c.name, c.stat))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// An entry of a directory, as [`SystemView::children`] finds it.
struct Child {
    name: String,
    path: String,
    stat: Stat,
    node: Node,
}

/// One entry met by [`SystemView::walk`].
pub struct WalkEntry {
    pub path: String,
    pub stat: Stat,
    pub node: Node,
}

impl SystemView {
    /// Every path of the system below `/`, parents before children, each
    /// directory read once by inode (never by re-resolving its path), so
    /// the walk is linear in the number of entries however deep the tree.
    /// A directory met twice (a hard-linked directory or an entry pointing
    /// at an ancestor: corruption) is an error naming the path, not a loop.
    pub fn walk(&self) -> Result<Vec<WalkEntry>> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        seen.insert(crate::ext4::ROOT_INO);
        let mut stack = vec![("/".to_string(), Node::Ext4(crate::ext4::ROOT_INO))];
        while let Some((dir, node)) = stack.pop() {
            let children = self.children(&dir, &node).map_err(|e| e.in_path(&dir))?;
            for Child {
                path,
                stat,
                node: child,
                ..
            } in children
            {
                if stat.kind == FileType::Directory {
                    match &child {
                        Node::Ext4(ino) if !seen.insert(*ino) => {
                            return Err(Error::Damaged {
                                path: crate::term::escape(&path),
                                source: Ext4Error::corrupt(
                                    "a directory entry leads back to a directory already met (a directory cycle or hard-linked directory)",
                                    crate::ext4::Location::Inode(*ino),
                                ),
                            });
                        }
                        // A FAT mount is walked whole, below, by its own
                        // handle-based walk (FAT has no inode numbers, and
                        // its volume was proved loop-free when opened).
                        Node::Fat(..) => {}
                        Node::Ext4(_) => stack.push((path.clone(), child.clone())),
                    }
                }
                let fat_mount = match &child {
                    Node::Fat(i, rel) if rel.is_empty() && stat.kind == FileType::Directory => {
                        Some(*i)
                    }
                    _ => None,
                };
                out.push(WalkEntry {
                    path: path.clone(),
                    stat,
                    node: child,
                });
                if let Some(i) = fat_mount {
                    let m = self.mount(i)?;
                    let all = m.fat.walk().map_err(|e| Self::fat_err(m, e))?;
                    for (rel, stat) in all {
                        out.push(WalkEntry {
                            path: format!("{path}/{rel}"),
                            stat,
                            node: Node::Fat(i, rel),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// The entries of directory `node` found at `dir`, unsorted. A mount
    /// point shows the mounted filesystem's root, as on a running system.
    fn children(&self, dir: &str, node: &Node) -> Result<Vec<Child>> {
        let join = |name: &str| {
            if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            }
        };
        let mut out = Vec::new();
        match node {
            Node::Ext4(ino) => {
                let d = self.root.live_inode(*ino)?;
                for e in self.root.read_dir(&d)? {
                    let name = e.name_lossy();
                    let path = join(&name);
                    let (stat, node) = match self.mounts.iter().position(|m| m.point == path) {
                        Some(i) => {
                            let n = Node::Fat(i, String::new());
                            (self.node_stat(&n)?, n)
                        }
                        None => (
                            self.ext4_stat(&self.root.live_inode(e.ino)?)
                                .map_err(|err| err.in_path(&path))?,
                            Node::Ext4(e.ino),
                        ),
                    };
                    out.push(Child {
                        name,
                        path,
                        stat,
                        node,
                    });
                }
            }
            Node::Fat(i, rel) => {
                let m = self.mount(*i)?;
                let list = m.fat.list(rel).map_err(|e| Self::fat_err(m, e))?;
                for (name, st) in list {
                    let child = if rel.is_empty() {
                        name.clone()
                    } else {
                        format!("{rel}/{name}")
                    };
                    out.push(Child {
                        path: join(&name),
                        name,
                        stat: st,
                        node: Node::Fat(*i, child),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Stream the content of a regular file met by [`SystemView::walk`].
    pub fn read_node_to(&self, node: &Node, w: &mut dyn Write) -> Result<u64> {
        match node {
            Node::Ext4(ino) => Ok(self.root.read_to(&self.root.live_inode(*ino)?, w)?),
            Node::Fat(i, rel) => {
                let m = self.mount(*i)?;
                m.fat.read_to(rel, w).map_err(|e| Self::fat_err(m, e))
            }
        }
    }
}

impl Walk for SystemView {
    type Node = Node;
    type Error = Error;

    fn root(&self) -> Result<Node> {
        Ok(Node::Ext4(crate::ext4::ROOT_INO))
    }

    fn child(&self, dir_path: &str, dir: &Node, name: &str) -> Result<Option<Node>> {
        let full = if dir_path == "/" {
            format!("/{name}")
        } else {
            format!("{dir_path}/{name}")
        };
        if let Some(i) = self.mounts.iter().position(|m| m.point == full) {
            return Ok(Some(Node::Fat(i, String::new())));
        }
        match dir {
            Node::Ext4(ino) => {
                let d = self.root.live_inode(*ino)?;
                Ok(self.root.lookup(&d, name.as_bytes())?.map(Node::Ext4))
            }
            Node::Fat(i, rel) => {
                let child = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                let m = self.mount(*i)?;
                let st = m.fat.stat(&child).map_err(|e| Self::fat_err(m, e))?;
                Ok(st.map(|_| Node::Fat(*i, child)))
            }
        }
    }

    fn kind(&self, node: &Node) -> Result<Kind> {
        match node {
            // The ext4 engine's own answer, not a second copy of it.
            Node::Ext4(ino) => Ok(self.root.kind(ino)?),
            Node::Fat(..) => Ok(if self.node_stat(node)?.kind == FileType::Directory {
                Kind::Dir
            } else {
                Kind::Other
            }),
        }
    }
}
