//! Paths inside an image: resolution shared by the ext4 engine and the
//! system view (a leaf module: it knows no filesystem), and the one set of
//! errors a path can meet.
//!
//! Symlinks resolve as the booted system would resolve them, but `/` is the
//! image's root: an absolute target restarts at the image root and `..`
//! never climbs above it, so no path can escape the image.

/// Why a path does not lead where it was asked to, whatever the filesystem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0}: no such file or directory in the image")]
    NotFound(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
}

/// Maximum symlinks followed in one resolution (Linux's MAXSYMLINKS).
pub(crate) const MAX_SYMLINKS: usize = 40;

/// What a resolver needs to know about one node.
pub(crate) enum Kind {
    Dir,
    Symlink(Vec<u8>),
    Other,
}

/// A tree that can be walked one name at a time.
pub(crate) trait Walk {
    type Node: Clone;
    type Error;
    fn root(&self) -> Result<Self::Node, Self::Error>;
    /// Look up `name` in directory `dir`, whose absolute path is `dir_path`.
    fn child(
        &self,
        dir_path: &str,
        dir: &Self::Node,
        name: &str,
    ) -> Result<Option<Self::Node>, Self::Error>;
    fn kind(&self, node: &Self::Node) -> Result<Kind, Self::Error>;
}

/// Why a path did not resolve: the path, or the filesystem under it.
pub(crate) enum ResolveError<E> {
    Path(PathError),
    Fs(E),
}

impl<E: From<PathError>> ResolveError<E> {
    /// The walker's own error, path errors included.
    pub(crate) fn into_fs(self) -> E {
        match self {
            ResolveError::Path(p) => p.into(),
            ResolveError::Fs(e) => e,
        }
    }
}

/// Split a path into its non-empty components.
pub(crate) fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

/// Normalise an absolute path lexically (no symlinks): `.` dropped, `..` popped.
pub(crate) fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in components(path) {
        match c {
            "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

fn join(stack: &[String]) -> String {
    format!("/{}", stack.join("/"))
}

/// Resolve `path` to its node and canonical absolute path; the last
/// component is followed only when `follow_last`.
pub(crate) fn resolve<W: Walk>(
    w: &W,
    path: &str,
    follow_last: bool,
) -> Result<(W::Node, String), ResolveError<W::Error>> {
    let root = w.root().map_err(ResolveError::Fs)?;
    let mut stack: Vec<(String, W::Node)> = Vec::new();
    let mut pending: Vec<String> = components(path).rev().map(str::to_string).collect();
    let mut hops = 0usize;
    while let Some(name) = pending.pop() {
        let names: Vec<String> = stack.iter().map(|(n, _)| n.clone()).collect();
        let here = stack.last().map_or(&root, |(_, n)| n).clone();
        match name.as_str() {
            "." => continue,
            ".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        match w.kind(&here).map_err(ResolveError::Fs)? {
            Kind::Dir => {}
            _ => return Err(ResolveError::Path(PathError::NotADirectory(join(&names)))),
        }
        let dir_path = join(&names);
        let Some(node) = w.child(&dir_path, &here, &name).map_err(ResolveError::Fs)? else {
            let mut full = names.clone();
            full.push(name);
            return Err(ResolveError::Path(PathError::NotFound(join(&full))));
        };
        let is_last = pending.is_empty();
        match w.kind(&node).map_err(ResolveError::Fs)? {
            Kind::Symlink(target) if !is_last || follow_last => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(ResolveError::Path(PathError::Loop(path.to_string())));
                }
                let target = String::from_utf8_lossy(&target).into_owned();
                if target.starts_with('/') {
                    stack.clear();
                }
                pending.extend(components(&target).rev().map(str::to_string));
            }
            _ => stack.push((name, node)),
        }
    }
    let canonical = join(&stack.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    let node = stack.pop().map_or(root, |(_, n)| n);
    Ok((node, canonical))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A toy tree: path -> kind, for testing the resolver without an image.
    struct Tree(BTreeMap<String, Option<String>>);

    impl Walk for Tree {
        type Node = String;
        type Error = ();
        fn root(&self) -> Result<String, ()> {
            Ok("/".into())
        }
        fn child(&self, dir_path: &str, _: &String, name: &str) -> Result<Option<String>, ()> {
            let p = if dir_path == "/" {
                format!("/{name}")
            } else {
                format!("{dir_path}/{name}")
            };
            Ok(self.0.contains_key(&p).then_some(p))
        }
        fn kind(&self, n: &String) -> Result<Kind, ()> {
            Ok(match self.0.get(n) {
                None if n == "/" => Kind::Dir,
                Some(None) => Kind::Dir,
                Some(Some(t)) if t == "FILE" => Kind::Other,
                Some(Some(t)) => Kind::Symlink(t.as_bytes().to_vec()),
                None => Kind::Other,
            })
        }
    }

    fn tree() -> Tree {
        let mut m = BTreeMap::new();
        m.insert("/etc".into(), None);
        m.insert("/etc/hostname".into(), Some("FILE".into()));
        m.insert(
            "/etc/os-release".into(),
            Some("../usr/lib/os-release".into()),
        );
        m.insert("/usr".into(), None);
        m.insert("/usr/lib".into(), None);
        m.insert("/usr/lib/os-release".into(), Some("FILE".into()));
        m.insert("/lib".into(), Some("usr/lib".into()));
        m.insert("/escape".into(), Some("../../../../etc/hostname".into()));
        m.insert("/abs".into(), Some("/etc/../etc/hostname".into()));
        m.insert("/loop".into(), Some("/loop".into()));
        Tree(m)
    }

    fn canon(p: &str, follow: bool) -> Result<String, String> {
        match resolve(&tree(), p, follow) {
            Ok((_, c)) => Ok(c),
            Err(ResolveError::Path(PathError::NotFound(p))) => Err(format!("notfound {p}")),
            Err(ResolveError::Path(PathError::NotADirectory(p))) => Err(format!("notdir {p}")),
            Err(ResolveError::Path(PathError::Loop(_))) => Err("loop".into()),
            Err(ResolveError::Path(PathError::IsADirectory(_))) => Err("isdir".into()),
            Err(ResolveError::Fs(())) => Err("fs".into()),
        }
    }

    #[test]
    fn relative_and_absolute_links() {
        assert_eq!(
            canon("/etc/os-release", true).unwrap(),
            "/usr/lib/os-release"
        );
        assert_eq!(canon("/etc/os-release", false).unwrap(), "/etc/os-release");
        assert_eq!(
            canon("/lib/os-release", false).unwrap(),
            "/usr/lib/os-release"
        );
        assert_eq!(canon("/abs", true).unwrap(), "/etc/hostname");
    }

    #[test]
    fn dotdot_never_leaves_the_image() {
        assert_eq!(canon("/escape", true).unwrap(), "/etc/hostname");
        assert_eq!(canon("/../../etc/hostname", true).unwrap(), "/etc/hostname");
    }

    #[test]
    fn errors() {
        assert_eq!(canon("/loop", true).unwrap_err(), "loop");
        assert_eq!(canon("/nope/x", true).unwrap_err(), "notfound /nope");
        assert_eq!(
            canon("/etc/hostname/x", true).unwrap_err(),
            "notdir /etc/hostname"
        );
    }

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize("/a/./b/../c//"), "/a/c");
        assert_eq!(normalize("/../.."), "/");
    }
}
