//! Property test of the ext4 writer: random sequences of operations are
//! applied both to the engine and to an in-memory model of the tree; each
//! sequence must end `e2fsck -fn` clean and match the model through
//! `debugfs rdump` (content, kind, mode, owner, link targets).
//!
//! 60 sequences by default; `RPIIMG_MODEL_CASES=1000 cargo test --release
//! --test integration ext4_model` for the long run (about 3 minutes).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Arc;

use crate::support::*;
use rpiimg::ext4::write::{Content, Meta, Writer};
use rpiimg::image::Window;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap()
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

#[derive(Clone, Debug)]
struct FileData {
    content: Vec<u8>,
    meta: Meta,
}

#[derive(Clone, Debug)]
enum Node {
    File(usize),
    Dir(Meta),
    Link(String),
}

#[derive(Clone, Debug, Default)]
struct Model {
    paths: BTreeMap<String, Node>,
    files: Vec<FileData>,
}

impl Model {
    fn dirs(&self) -> Vec<String> {
        let mut v = vec!["/t".to_string()];
        v.extend(
            self.paths
                .iter()
                .filter(|(_, n)| matches!(n, Node::Dir(_)))
                .map(|(p, _)| p.clone()),
        );
        v
    }
    fn children(&self, dir: &str) -> Vec<String> {
        let pre = format!("{dir}/");
        self.paths
            .keys()
            .filter(|p| p.starts_with(&pre) && !p[pre.len()..].contains('/'))
            .cloned()
            .collect()
    }
    fn remove_tree(&mut self, p: &str) {
        let pre = format!("{p}/");
        self.paths.retain(|k, _| k != p && !k.starts_with(&pre));
    }
    fn rename(&mut self, from: &str, to: &str) {
        let pre = format!("{from}/");
        let moved: Vec<(String, Node)> = self
            .paths
            .iter()
            .filter(|(k, _)| *k == from || k.starts_with(&pre))
            .map(|(k, n)| (k.clone(), n.clone()))
            .collect();
        self.remove_tree(to);
        for (k, _) in &moved {
            self.paths.remove(k);
        }
        for (k, n) in moved {
            self.paths.insert(format!("{to}{}", &k[from.len()..]), n);
        }
    }
}

fn name(r: &mut Rng) -> String {
    const PARTS: [&str; 8] = [
        "a",
        "conf",
        "netplan",
        "café",
        "x",
        "долго",
        "unit.service",
        "n",
    ];
    let mut s = String::new();
    for _ in 0..=r.below(3) {
        s.push_str(PARTS[r.below(PARTS.len())]);
    }
    if r.chance(20) {
        s.push_str(&"z".repeat(r.below(200)));
    }
    format!("{s}{}", r.below(1000))
}

fn content(r: &mut Rng) -> Vec<u8> {
    let len = match r.below(10) {
        0 => 0,
        1 => 300_000 + r.below(200_000),
        2..=4 => r.below(9000),
        _ => r.below(300),
    };
    let seed = u8::try_from(r.below(250)).unwrap();
    (0..len)
        .map(|i| seed.wrapping_add(u8::try_from(i % 251).unwrap()))
        .collect()
}

fn meta(r: &mut Rng) -> Meta {
    Meta {
        mode: [0o644, 0o600, 0o755, 0o4755, 0o1777, 0o440][r.below(6)],
        uid: [0, 1000, 70000][r.below(3)],
        gid: [0, 42, 1000][r.below(3)],
    }
}

/// One random valid operation, applied to engine and model.
fn step(r: &mut Rng, w: &mut Writer<Window>, m: &mut Model) -> rpiimg::ext4::Result<()> {
    let dirs = m.dirs();
    let paths: Vec<String> = m.paths.keys().cloned().collect();
    match r.below(12) {
        0..=3 => {
            // new file, or rewrite of an existing regular file
            let existing: Vec<&String> = paths
                .iter()
                .filter(|p| matches!(m.paths[*p], Node::File(_)))
                .collect();
            let (p, c, mt) = (
                if !existing.is_empty() && r.chance(30) {
                    existing[r.below(existing.len())].clone()
                } else {
                    format!("{}/{}", dirs[r.below(dirs.len())], name(r))
                },
                content(r),
                meta(r),
            );
            if matches!(m.paths.get(&p), Some(Node::Dir(_))) {
                return Ok(());
            }
            w.write_file(&p, Content::Bytes(c.clone()), mt)?;
            match m.paths.get(&p) {
                Some(Node::File(id)) => {
                    m.files[*id] = FileData {
                        content: c,
                        meta: mt,
                    };
                }
                _ => {
                    m.files.push(FileData {
                        content: c,
                        meta: mt,
                    });
                    m.paths.insert(p, Node::File(m.files.len() - 1));
                }
            }
        }
        4 => {
            let p = format!("{}/{}", dirs[r.below(dirs.len())], name(r));
            if m.paths.contains_key(&p) {
                return Ok(());
            }
            let mt = meta(r);
            w.mkdir(&p, mt, false)?;
            m.paths.insert(p, Node::Dir(mt));
        }
        5 => {
            let p = format!("{}/{}", dirs[r.below(dirs.len())], name(r));
            if matches!(m.paths.get(&p), Some(Node::Dir(_))) {
                return Ok(());
            }
            let target = if r.chance(50) {
                "../etc/hostname".to_string()
            } else {
                format!("/usr/share/{}", "long/".repeat(20))
            };
            w.symlink(&p, target.as_bytes(), 0, 0)?;
            m.paths.insert(p, Node::Link(target));
        }
        6 => {
            // hard link to an existing file
            let files: Vec<&String> = paths
                .iter()
                .filter(|p| matches!(m.paths[*p], Node::File(_)))
                .collect();
            if files.is_empty() {
                return Ok(());
            }
            let src = files[r.below(files.len())].clone();
            let p = format!("{}/{}", dirs[r.below(dirs.len())], name(r));
            if m.paths.contains_key(&p) {
                return Ok(());
            }
            w.link(&src, &p)?;
            let n = m.paths[&src].clone();
            m.paths.insert(p, n);
        }
        7 => {
            if paths.is_empty() {
                return Ok(());
            }
            let p = paths[r.below(paths.len())].clone();
            if matches!(m.paths[&p], Node::Dir(_)) && !m.children(&p).is_empty() {
                w.remove_tree(&p)?;
            } else {
                w.remove(&p)?;
            }
            m.remove_tree(&p);
        }
        8 | 9 => {
            if paths.is_empty() {
                return Ok(());
            }
            let from = paths[r.below(paths.len())].clone();
            let to_dir = dirs[r.below(dirs.len())].clone();
            if to_dir == from || to_dir.starts_with(&format!("{from}/")) {
                return Ok(());
            }
            let to = format!("{to_dir}/{}", name(r));
            let from_dir = matches!(m.paths[&from], Node::Dir(_));
            match m.paths.get(&to) {
                Some(Node::Dir(_)) => return Ok(()),
                Some(_) if from_dir => return Ok(()),
                _ => {}
            }
            w.rename(&from, &to)?;
            m.rename(&from, &to);
        }
        10 => {
            if paths.is_empty() {
                return Ok(());
            }
            let p = paths[r.below(paths.len())].clone();
            let mt = meta(r);
            match m.paths[&p].clone() {
                Node::File(id) => {
                    w.chmod(&p, mt.mode)?;
                    w.chown(&p, mt.uid, mt.gid)?;
                    m.files[id].meta = mt;
                }
                Node::Dir(_) => {
                    w.chmod(&p, mt.mode)?;
                    w.chown(&p, mt.uid, mt.gid)?;
                    m.paths.insert(p, Node::Dir(mt));
                }
                Node::Link(_) => {}
            }
        }
        _ => {
            let p = format!("{}/{}", dirs[r.below(dirs.len())], name(r));
            if !m.paths.contains_key(&p) {
                w.mkdir(&format!("{p}/deep/er"), Meta::root(0o750), true)?;
                for (q, mt) in [
                    (p.clone(), Meta::root(0o755)),
                    (format!("{p}/deep"), Meta::root(0o755)),
                    (format!("{p}/deep/er"), Meta::root(0o750)),
                ] {
                    m.paths.insert(q, Node::Dir(mt));
                }
            }
        }
    }
    Ok(())
}

fn compare(img: &Path, m: &Model) {
    let out = tempfile::tempdir().unwrap();
    let o = tool("debugfs")
        .arg("-R")
        .arg(format!("rdump /t {}", out.path().display()))
        .arg(img)
        .output()
        .unwrap();
    assert!(o.status.success());
    let host = out.path().join("t");
    let root = is_root();
    let mut seen = 0;
    for (p, n) in &m.paths {
        let hp = host.join(p.strip_prefix("/t/").unwrap());
        let md = std::fs::symlink_metadata(&hp)
            .unwrap_or_else(|e| panic!("{p}: missing in debugfs dump: {e}"));
        seen += 1;
        use std::os::unix::fs::MetadataExt;
        let check_meta = |mt: &Meta| {
            // rdump's mkdir/chown drop setuid, setgid and sticky bits: read those from debugfs stat.
            assert_eq!(md.mode() & 0o777, u32::from(mt.mode & 0o777), "{p}: mode");
            if mt.mode & 0o7000 != 0 {
                let st = debugfs(img, 0, &format!("stat \"{p}\""));
                assert!(
                    st.contains(&format!("Mode:  {:05o}", mt.mode)),
                    "{p}: mode {:o}: {st}",
                    mt.mode
                );
            }
            if root {
                assert_eq!((md.uid(), md.gid()), (mt.uid, mt.gid), "{p}: owner");
            }
        };
        match n {
            Node::File(id) => {
                assert!(md.is_file(), "{p}: not a file");
                assert!(
                    std::fs::read(&hp).unwrap() == m.files[*id].content,
                    "{p}: content differs"
                );
                check_meta(&m.files[*id].meta);
            }
            Node::Dir(mt) => {
                assert!(md.is_dir(), "{p}: not a directory");
                check_meta(mt);
            }
            Node::Link(t) => {
                assert_eq!(
                    std::fs::read_link(&hp).unwrap().to_str().unwrap(),
                    t,
                    "{p}: target"
                );
            }
        }
    }
    let mut on_disk = 0;
    let mut stack = vec![host.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            on_disk += 1;
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert_eq!(
        on_disk, seen,
        "debugfs shows entries the model does not have"
    );
}

fn run_case(case: u64) {
    let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ (case + 1).wrapping_mul(0x1000_0000_01B3));
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fs.img");
    let features = [
        "^orphan_file,^metadata_csum_seed",
        "orphan_file,metadata_csum_seed",
        "64bit,huge_file,^orphan_file,^metadata_csum_seed",
    ][r.below(3)];
    mkfs(
        &img,
        &MkfsOpts {
            size_mib: 48,
            features,
            unsigned_hash: r.chance(50),
            populate: None,
        },
    );
    let mut model = Model::default();
    let open = |img: &Path| {
        let f = OpenOptions::new().read(true).write(true).open(img).unwrap();
        let len = f.metadata().unwrap().len();
        Writer::open(Window::new(Arc::new(f), 0, len, true), 1_760_000_000).unwrap()
    };
    let mut w = open(&img);
    w.mkdir("/t", Meta::root(0o755), false).unwrap();
    w.finish().unwrap().commit().unwrap();
    for txn in 0..3 {
        let before = sha256_file(&img);
        let saved = model.clone();
        let mut w = open(&img);
        let n = 10 + r.below(40);
        for _ in 0..n {
            step(&mut r, &mut w, &mut model)
                .unwrap_or_else(|e| panic!("case {case} ({features}) txn {txn}: {e}"));
        }
        if r.chance(25) {
            // A failing edit at the end: the whole transaction must vanish.
            assert!(w
                .write_file(
                    "/t/no/such/dir/x",
                    Content::Bytes(b"x".to_vec()),
                    Meta::root(0o644)
                )
                .is_err());
            drop(w);
            model = saved;
            assert_eq!(
                sha256_file(&img),
                before,
                "case {case}: failed transaction changed the image"
            );
            continue;
        }
        w.finish().unwrap().commit().unwrap();
        let p = e2fsck_problems(&img, 0);
        assert!(
            p.is_empty(),
            "case {case} ({features}) txn {txn}: e2fsck -fn:\n{}",
            p.join("\n")
        );
        compare(&img, &model);
    }
}

#[test]
fn random_sequences_match_the_model() {
    let cases: u64 = std::env::var("RPIIMG_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    for case in 0..cases {
        run_case(case);
    }
}
