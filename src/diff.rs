//! File-level differences between two images (typically a node image and
//! its base): added, removed and changed paths, with what changed.

use crate::term::escape;
use std::collections::BTreeMap;

use crate::error::Result;
use crate::ext4::FileType;
use crate::fs::view::{Node, SystemView};
use crate::fs::Stat;

/// Files larger than this with a byte-identical inode record (same blocks,
/// same times) are taken as unchanged without reading them, unless `full`.
const TRUST_INODE_ABOVE: u64 = 64 << 10;

struct Entry {
    stat: Stat,
    node: Node,
    raw_inode: Option<Vec<u8>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Summary {
    pub kind: String,
    pub mode: String,
    pub owner: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Changed {
    pub path: String,
    /// Human descriptions: "content", "mode 0644 -> 0600", ...
    pub changes: Vec<String>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct Diff {
    pub added: Vec<(String, Summary)>,
    pub removed: Vec<(String, Summary)>,
    pub changed: Vec<Changed>,
}

impl Diff {
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    pub(crate) fn render(&self) -> String {
        let mut s = String::new();
        let line = |sum: &Summary| {
            let mut l = if sum.mode.is_empty() {
                format!("{} on FAT, no mode or owner, {} bytes", sum.kind, sum.size)
            } else {
                format!("{} {} {} {} bytes", sum.kind, sum.mode, sum.owner, sum.size)
            };
            if let Some(t) = &sum.target {
                l.push_str(&format!(" -> {}", escape(t)));
            }
            l
        };
        let mut all: Vec<(String, String)> = Vec::new();
        for (p, sum) in &self.added {
            all.push((p.clone(), format!("+ {}  ({})", escape(p), line(sum))));
        }
        for (p, sum) in &self.removed {
            all.push((p.clone(), format!("- {}  ({})", escape(p), line(sum))));
        }
        for c in &self.changed {
            all.push((
                c.path.clone(),
                format!("M {}  ({})", escape(&c.path), escape(&c.changes.join(", "))),
            ));
        }
        all.sort();
        for (_, l) in all {
            s.push_str(&l);
            s.push('\n');
        }
        s.push_str(&format!(
            "{} added, {} removed, {} changed\n",
            self.added.len(),
            self.removed.len(),
            self.changed.len()
        ));
        s
    }
}

fn kind_name(k: FileType) -> &'static str {
    match k {
        FileType::Regular => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        _ => "special",
    }
}

/// A path's summary; FAT stores no modes or owners (what a mount shows
/// comes from its options), so a FAT entry has none (empty strings).
fn summary(e: &Entry) -> Summary {
    let st = &e.stat;
    let fat = matches!(e.node, Node::Fat(..));
    Summary {
        kind: kind_name(st.kind).into(),
        mode: if fat {
            String::new()
        } else {
            format!("{:04o}", st.mode)
        },
        owner: if fat {
            String::new()
        } else {
            format!("{}:{}", st.uid, st.gid)
        },
        size: st.size,
        target: st.target.clone(),
    }
}

/// Every path of `view` with its record (one linear walk; see
/// [`SystemView::walk`]).
fn entries(view: &SystemView) -> Result<BTreeMap<String, Entry>> {
    let mut out = BTreeMap::new();
    for e in view.walk()? {
        let raw_inode = match e.node {
            Node::Ext4(ino) => Some(view.ext4().live_inode(ino)?.raw().to_vec()),
            Node::Fat(..) => None,
        };
        out.insert(
            e.path,
            Entry {
                stat: e.stat,
                node: e.node,
                raw_inode,
            },
        );
    }
    Ok(out)
}

fn content_hash(view: &SystemView, node: &Node) -> Result<[u8; 32]> {
    let mut h = crate::bytes::Sha256Writer::default();
    view.read_node_to(node, &mut h)?;
    Ok(h.finish())
}

/// Compare every path of `a` with `b`. With `full`, every common regular
/// file's content is compared even when its inode record is unchanged.
pub(crate) fn diff(a: &SystemView, b: &SystemView, full: bool) -> Result<Diff> {
    let ma = entries(a)?;
    let mb = entries(b)?;
    let mut d = Diff::default();
    for (p, eb) in &mb {
        if !ma.contains_key(p) {
            d.added.push((p.clone(), summary(eb)));
        }
    }
    for (p, ea) in &ma {
        let Some(eb) = mb.get(p) else {
            d.removed.push((p.clone(), summary(ea)));
            continue;
        };
        let (sa, sb) = (&ea.stat, &eb.stat);
        let mut changes = Vec::new();
        if sa.kind != sb.kind {
            changes.push(format!(
                "type {} -> {}",
                kind_name(sa.kind),
                kind_name(sb.kind)
            ));
        }
        if sa.mode != sb.mode {
            changes.push(format!("mode {:04o} -> {:04o}", sa.mode, sb.mode));
        }
        if (sa.uid, sa.gid) != (sb.uid, sb.gid) {
            changes.push(format!(
                "owner {}:{} -> {}:{}",
                sa.uid, sa.gid, sb.uid, sb.gid
            ));
        }
        if sa.target != sb.target {
            changes.push(format!(
                "target {} -> {}",
                sa.target.as_deref().unwrap_or("-"),
                sb.target.as_deref().unwrap_or("-")
            ));
        }
        if sa.kind == FileType::Regular && sb.kind == FileType::Regular {
            let same_inode = ea.raw_inode.is_some() && ea.raw_inode == eb.raw_inode;
            let differs = if sa.size != sb.size {
                true
            } else if same_inode && !full && sa.size > TRUST_INODE_ABOVE {
                false
            } else {
                content_hash(a, &ea.node)? != content_hash(b, &eb.node)?
            };
            if differs {
                changes.push(if sa.size == sb.size {
                    "content".to_string()
                } else {
                    format!("content ({} -> {} bytes)", sa.size, sb.size)
                });
            }
        }
        if !changes.is_empty() {
            d.changed.push(Changed {
                path: p.clone(),
                changes,
            });
        }
    }
    Ok(d)
}
