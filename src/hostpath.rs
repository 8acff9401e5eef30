//! Host paths for people: a file's name as manifests record it, and a
//! path lexically normalised for messages. Below every layer that prints
//! paths (`output`, `flash`, `builder`), so none of them needs another.

use std::path::{Path, PathBuf};

/// A path's file name, as manifests name their siblings and inputs (the
/// whole path when it has none).
pub fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A path for people: lexically normalised (`profiles/../out` -> `out`).
pub(crate) fn display_path(p: &Path) -> String {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            _ => out.push(c),
        }
    }
    let s: PathBuf = out.iter().collect();
    if s.as_os_str().is_empty() {
        ".".into()
    } else {
        s.display().to_string()
    }
}

#[cfg(test)]
mod display_tests {
    #[test]
    fn paths_for_people_are_normalised() {
        use std::path::Path;
        assert_eq!(
            super::display_path(Path::new("profiles/../out/ost04.img")),
            "out/ost04.img"
        );
        assert_eq!(super::display_path(Path::new("./a/./b")), "a/b");
        assert_eq!(super::display_path(Path::new("../x")), "../x");
        assert_eq!(super::display_path(Path::new("/srv/../img")), "/img");
    }
}
