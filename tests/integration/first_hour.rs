//! A newcomer's first hour (#27): every command line the README and the
//! `--help` examples print runs on the shipped files; a multi-node build
//! checks every output before any work; interrupted runs leave no partial
//! files, and stale ones of killed runs are swept; messages name the file,
//! the value and the fix.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A folder as a fresh clone has it, for the documented commands: the
/// shipped profiles, the demo base where they expect it, and the files
/// the examples name (`base.img`, the official image names, `node.img`,
/// `edits.txt`, a stock Kolla inventory under `~`).
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    demo_sha: String,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // a key store left by scripts/demo is not shipped
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let home = root.join("home");
        copy_dir(&repo().join("profiles"), &root.join("profiles"));
        std::fs::create_dir_all(root.join("demo")).unwrap();
        // scripts/demo's base: `--flavour bookworm --xz multi`.
        let demo = fixture(&["--flavour", "bookworm", "--xz", "multi"]);
        let trixie = fixture(&["--flavour", "trixie", "--xz", "multi"]);
        let raw = fixture(&["--flavour", "bookworm"]);
        let cp = |from: &Path, to: &str| {
            let to = root.join(to);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(from, &to).unwrap();
        };
        cp(&demo, "demo/base.img.xz");
        for n in [
            "base.img.xz",
            "raspios.img.xz",
            "2025-05-13-raspios-bookworm-arm64-lite.img.xz",
            "home/2025-05-13-raspios-bookworm-arm64-lite.img.xz",
        ] {
            cp(&demo, n);
        }
        cp(&trixie, "2025-10-01-raspios-trixie-arm64-lite.img.xz");
        for n in ["base.img", "node.img", "a.img", "b.img"] {
            cp(&raw, n);
        }
        let write = |name: &str, text: &str| {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("hostname", "ost09\n");
        write("ssh", "");
        write(
            "edits.txt",
            "# one transaction\nmkdir -p /etc/rpiimg-example\n",
        );
        write(
            "my/node.toml",
            "extends = \"../profiles/ost/cluster-ost.toml\"\nhostname = \"ost02\"\n",
        );
        write(
            "home/kolla-2026.1/share/kolla-ansible/ansible/inventory/multinode",
            &stock_inventory("2026.1", "", ""),
        );
        for d in ["cards", "tmp", "srv/lab"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let demo_sha = sha256_file(&demo);
        let s = Sandbox {
            _dir: dir,
            root,
            home,
            demo_sha,
        };
        // What a user has after the main job: every cluster built, and a
        // card (a file) flashed from ost04 for the verify examples.
        s.ok("rpiimg build --all profiles -q");
        s.ok("rpiimg flash --to-file out/ost/ost04.img=card.img --yes -q");
        s.ok("rpiimg flash --to-file out/ost/ost04.img=cards/ost04-card --yes -q");
        s
    }

    fn run(&self, line: &str) -> std::process::Output {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_rpiimg"));
        let path = format!(
            "{}:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        tool("bash")
            .arg("-c")
            .arg(line)
            .current_dir(&self.root)
            .env("PATH", path)
            .env("HOME", &self.home)
            .env("RPIIMG_CACHE_DIR", self.root.join("cache"))
            .env_remove("RPIIMG_KEYS_DIR")
            .env_remove("RPIIMG_PROFILES")
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap()
    }

    fn ok(&self, line: &str) {
        let o = self.run(line);
        assert!(
            o.status.success(),
            "{line}: exit {:?}\n{}{}",
            o.status.code(),
            stdout(&o),
            stderr(&o)
        );
    }

    /// The line as it runs here: devices become files (`--to-file
    /// --yes`), absolute folders move into the sandbox, placeholders get
    /// the demo's values. These are the only changes.
    fn rewrite(&self, line: &str) -> String {
        let mut l = line.to_string();
        // A pipe into jq shows one use; the command before it is what runs.
        if let Some(i) = l.find(" | jq") {
            l.truncate(i);
        }
        l = l.replace("$(git log -1 --format=%ct)", "1700000000");
        // Absolute folders of the examples, as words or after `=`.
        let inside = |w: &str| -> String {
            for abs in ["/srv/", "/tmp/"] {
                if let Some(rest) = w.strip_prefix(abs) {
                    return self.root.join(&abs[1..]).join(rest).display().to_string();
                }
            }
            w.to_string()
        };
        l = l
            .split(' ')
            .map(|w| match w.split_once('=') {
                Some((k, v)) if !w.starts_with('/') => format!("{k}={}", inside(v)),
                _ => inside(w),
            })
            .collect::<Vec<_>>()
            .join(" ");
        // An elided sha256 (`62d025b9bc7c...`) is the demo base's.
        if let Some(i) = l.find("62d025b9bc7c") {
            let end = l[i..].find(' ').map_or(l.len(), |e| i + e);
            l.replace_range(i..end, &self.demo_sha);
        }
        let flash = l.starts_with("rpiimg flash") || l.starts_with("rpiimg verify");
        if flash && l.contains("/dev/") {
            let verify = l.starts_with("rpiimg verify");
            let words: Vec<String> = l
                .split(' ')
                .map(|w| {
                    let dev = |d: &str| -> String {
                        let name = d.trim_start_matches("/dev/").replace('/', "-");
                        if verify {
                            "cards/ost04-card".into()
                        } else {
                            format!("cards/{name}")
                        }
                    };
                    if let Some((img, d)) = w.split_once("=/dev/") {
                        format!("{img}={}", dev(&format!("/dev/{d}")))
                    } else if w.starts_with("/dev/") {
                        w.split(',').map(dev).collect::<Vec<_>>().join(",")
                    } else {
                        w.to_string()
                    }
                })
                .collect();
            l = words.join(" ");
            l.push_str(if verify {
                " --flashed"
            } else {
                " --to-file --yes"
            });
        }
        l
    }
}

/// The command lines of a text: `rpiimg ...` (and `ansible-inventory`)
/// lines, with `\` continuations joined and trailing comments cut.
fn command_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for raw in text.lines() {
        let t = raw.trim();
        if cur.is_empty()
            && !(t.starts_with("rpiimg ")
                || t.starts_with("SOURCE_DATE_EPOCH=")
                || t.starts_with("ansible-inventory "))
        {
            continue;
        }
        let t = match t.find("  #").or_else(|| t.find(" # ")) {
            Some(i) => t[..i].trim_end(),
            None => t,
        };
        // `(the one beside the image)`-style notes after the command.
        let t = match t.find("   (") {
            Some(i) => t[..i].trim_end(),
            None => t,
        };
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head.trim_end());
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        // `a && b` runs as two documented commands.
        for part in cur.split(" && ") {
            out.push(part.trim().to_string());
        }
        cur.clear();
    }
    out
}

/// The README's shell blocks, one group of lines each.
fn readme_commands() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut groups = Vec::new();
    let mut block: Option<String> = None;
    for l in text.lines() {
        if l.starts_with("```") {
            if let Some(b) = block.take() {
                groups.push(command_lines(&b));
            } else if l == "```sh" {
                block = Some(String::new());
            }
            continue;
        }
        if let Some(b) = &mut block {
            b.push_str(l);
            b.push('\n');
        }
    }
    groups
}

/// The examples of `rpiimg --help` and of every subcommand's `--help`,
/// one group each.
fn help_commands() -> Vec<Vec<String>> {
    let verbs = [
        "",
        "inspect",
        "ls",
        "cat",
        "plan",
        "build",
        "verify",
        "cluster",
        "diff",
        "flash",
        "imager-list",
        "fs",
        "cache",
    ];
    let mut out = Vec::new();
    for v in verbs {
        let mut args: Vec<&str> = v.split(' ').filter(|a| !a.is_empty()).collect();
        args.push("--help");
        let o = rpiimg(&args);
        assert!(o.status.success(), "rpiimg {args:?}");
        let text = stdout(&o);
        let examples = text.split("Examples:").nth(1).unwrap_or("");
        out.push(command_lines(examples));
    }
    out
}

#[test]
fn documented_commands_run_on_the_shipped_files() {
    let readme = readme_commands();
    let help = help_commands();
    let count = |g: &[Vec<String>]| g.iter().map(Vec::len).sum::<usize>();
    assert!(
        count(&readme) >= 15 && count(&help) >= 40,
        "{readme:?}\n{help:?}"
    );
    let s = Sandbox::new();
    let raw = fixture(&["--flavour", "bookworm"]);
    let mut failed = Vec::new();
    let mut ran = 0;
    // Fresh lines that passed and write only under out/ (set aside and
    // back for each): the same line again (the README and a --help both
    // show it) would run from the same state, so it runs once.
    let mut passed_fresh = std::collections::HashSet::new();
    for group in readme.iter().chain(&help) {
        // Each block's edits start from the base, as its text assumes.
        std::fs::copy(&raw, s.root.join("node.img")).unwrap();
        for line in group {
            let run = s.rewrite(line);
            // A build or cluster line runs as on a fresh clone: without
            // the outputs of the earlier lines (kept aside, back after).
            let fresh = ["rpiimg build", "SOURCE_DATE_EPOCH", "rpiimg cluster"]
                .iter()
                .any(|p| line.starts_with(p));
            if fresh && passed_fresh.contains(&run) {
                eprintln!("  (ran above)  {run}");
                continue;
            }
            if fresh {
                let _ = std::fs::rename(s.root.join("out"), s.root.join("out.kept"));
                let _ = std::fs::remove_dir_all(s.home.join("kolla"));
            }
            let t = std::time::Instant::now();
            let o = s.run(&run);
            eprintln!("{:>6.1}s  {run}", t.elapsed().as_secs_f64());
            if fresh {
                let _ = std::fs::remove_dir_all(s.root.join("out"));
                std::fs::rename(s.root.join("out.kept"), s.root.join("out")).unwrap();
            }
            ran += 1;
            // `diff` says 1 when the images differ, as its help says.
            let want: &[i32] = if line.starts_with("rpiimg diff") {
                &[0, 1]
            } else {
                &[0]
            };
            if fresh && o.status.success() && !run.contains(" --out ") {
                passed_fresh.insert(run.clone());
            }
            if !o.status.code().is_some_and(|c| want.contains(&c)) {
                failed.push(format!(
                    "{line}\n  ran: {run}\n  exit {:?}: {}",
                    o.status.code(),
                    stderr(&o).lines().last().unwrap_or("")
                ));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {ran} documented commands failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// Help texts fit 80 columns as printed (clap wraps longer lines, which
/// once split examples from their arguments) and show no doubled defaults.
#[test]
fn help_is_printed_as_written() {
    for v in [
        "", "build", "cluster", "verify", "flash", "plan", "fs", "cache", "diff",
    ] {
        let mut args: Vec<&str> = v.split(' ').filter(|a| !a.is_empty()).collect();
        args.push("--help");
        let text = stdout(&rpiimg(&args));
        let examples = text.split("Examples:").nth(1).unwrap_or("");
        for l in examples.lines() {
            assert!(l.chars().count() <= 80, "rpiimg {v} --help: {l:?}");
        }
        assert!(!text.contains("] [default:"), "rpiimg {v} --help:\n{text}");
        let last = text.trim_end().lines().last().unwrap_or("");
        assert!(
            !last.contains("bmaptool"),
            "rpiimg {v} --help ends with {last:?}"
        );
    }
}

/// A build of several nodes where one output exists writes nothing and
/// names every existing output (also with -q); an unwritable --out and a
/// wrong pin are refused before the base is decompressed.
#[test]
fn a_multi_node_build_checks_every_output_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let base = fixture(&["--flavour", "bookworm", "--xz", "multi"]);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("ost02.img.sha256"), "mine\n").unwrap();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "build",
            "--profile",
            &profile_path("ost01-compute"),
            "--profile",
            &profile_path("ost02-compute"),
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        a.extend(extra.iter().map(ToString::to_string));
        a
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        rpiimg(&a)
    };
    let o = run(args(&[
        "--base",
        base.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]));
    assert_stderr(
        &o,
        2,
        &["ost02.img.sha256", "--force", "nothing was written"],
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names, ["ost02.img.sha256"], "ost01 was written");
    assert_eq!(
        std::fs::read_to_string(out.join("ost02.img.sha256")).unwrap(),
        "mine\n"
    );

    // Before the base is read: a cache that stays empty.
    let cache = dir.path().join("cache");
    let cold = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        rpiimg_cmd()
            .args(&a)
            .env("RPIIMG_CACHE_DIR", &cache)
            .output()
            .unwrap()
    };
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = cold(args(&[
        "--base",
        base.to_str().unwrap(),
        "--out",
        file.join("sub").to_str().unwrap(),
    ]));
    assert_stderr(&o, 2, &["is not a folder", "--out"]);
    let wrong = "0".repeat(64);
    let o = cold(args(&[
        "--base",
        base.to_str().unwrap(),
        "--sha256",
        &wrong,
        "--out",
        dir.path().join("o2").to_str().unwrap(),
    ]));
    assert_stderr(&o, 2, &["sha256 mismatch", &wrong]);
    let left: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| !n.to_string_lossy().ends_with(".img")),
        "decompressed anyway: {left:?}"
    );
}

/// The shipped --all: every cluster into its own folder, host clash
/// refused when one --out is forced on two clusters.
#[test]
fn build_all_refuses_two_profiles_of_one_host_in_one_folder() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&["--flavour", "bookworm"]);
    let o = rpiimg(&[
        "build",
        "--all",
        repo().join("profiles").to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert_stderr(
        &o,
        2,
        &[
            "ost01-compute.toml",
            "ost01-compute-vlan.toml",
            "separate output folders",
        ],
    );
    assert_eq!(all_files(dir.path()).len(), 0);
}

/// Wait for the pause hook's `.reached` file of `go`.
fn wait_reached(go: &Path, child: &mut std::process::Child) {
    let mut reached = go.as_os_str().to_owned();
    reached.push(".reached");
    let t = std::time::Instant::now();
    while !Path::new(&reached).exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "rpiimg ended before the pause point"
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(120),
            "pause point not reached"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGINT while the cache entry is filled, SIGTERM while a node image is
/// written: the run removes its partial files and exits 130 / 143.
#[test]
fn interrupted_builds_leave_no_partial_files() {
    let base = fixture(&["--flavour", "bookworm", "--xz", "multi"]);
    for (point, sig, code) in [("cache-partial", "INT", 130), ("node-partial", "TERM", 143)] {
        let dir = tempfile::tempdir().unwrap();
        let (cache, out, go) = (
            dir.path().join("cache"),
            dir.path().join("out"),
            dir.path().join("go"),
        );
        let mut child = cli()
            .build(&["ost04-control"], &base, &out)
            .arg("-q")
            .env("RPIIMG_CACHE_DIR", &cache)
            .env("RPIIMG_FAULT", format!("{point}:pause={}", go.display()))
            .command()
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_reached(&go, &mut child);
        let partials = |d: &Path| {
            names_in(d)
                .into_iter()
                .filter(|n| n.contains("partial"))
                .collect::<Vec<_>>()
        };
        let held = if point == "cache-partial" {
            partials(&cache)
        } else {
            partials(&out)
        };
        assert_eq!(held.len(), 1, "{point}: {held:?}");
        let st = tool("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let o = child.wait_with_output().unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{point}: {e}");
        assert!(e.contains("partial file(s) removed"), "{e}");
        assert!(
            partials(&cache).is_empty() && partials(&out).is_empty(),
            "{point}: {:?} {:?}",
            names_in(&cache),
            names_in(&out)
        );
        assert!(!out.join("ost04.img").exists());
    }
}

/// Partial files of a run that was killed outright are removed by the
/// next run; one whose writer still holds its lock is left alone.
#[test]
fn stale_partials_are_swept_and_live_ones_kept() {
    let base = fixture(&["--flavour", "bookworm", "--xz", "multi"]);
    let sha = sha256_file(&base);
    let dir = tempfile::tempdir().unwrap();
    let (cache, out) = (dir.path().join("cache"), dir.path().join("out"));
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let stale_out = out.join(".ost04.img.rpiimg-partial-dead01");
    let stale_cache = cache.join(format!(".partial-{sha}-dead01.img"));
    let live = out.join(".ost09.img.rpiimg-partial-live01");
    for p in [&stale_out, &stale_cache, &live] {
        std::fs::write(p, vec![7u8; 4096]).unwrap();
    }
    let held = std::fs::File::open(&live).unwrap();
    assert!(rpiimg::lock::try_lock(&held, rpiimg::lock::Access::Exclusive).unwrap());
    cli()
        .build(&["ost04-control"], &base, &out)
        .arg("-q")
        .env("RPIIMG_CACHE_DIR", &cache)
        .ok();
    assert!(
        !stale_out.exists() && !stale_cache.exists(),
        "{:?} {:?}",
        names_in(&out),
        names_in(&cache)
    );
    assert!(
        live.exists(),
        "a partial file with a live writer was removed"
    );
}

/// Messages that name the thing at fault and the fix.
#[test]
fn messages_name_the_file_the_value_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&["--flavour", "bookworm", "--xz", "multi"]);
    let p = profile_path("ost04-control");
    let err = |args: &[&str]| {
        let o = rpiimg(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    };
    // A folder as --base.
    let e = err(&[
        "plan",
        "--profile",
        &p,
        "--base",
        dir.path().to_str().unwrap(),
    ]);
    assert!(
        e.contains("is a directory, not an image file") && !e.contains("os error 21"),
        "{e}"
    );
    // A missing --base that was passed: no "or pass --base".
    let e = err(&[
        "plan",
        "--profile",
        &p,
        "--base",
        dir.path().join("nope.img").to_str().unwrap(),
    ]);
    assert!(
        e.contains("nope.img does not exist (--base names it)") && !e.contains("or pass --base"),
        "{e}"
    );
    // A missing flash image.
    let e = err(&[
        "flash",
        "--to-file",
        "--yes",
        &format!("{}=x.img", dir.path().join("gone.img").display()),
    ]);
    assert!(
        e.contains("gone.img: cannot open the image") && e.contains("check the path"),
        "{e}"
    );
    // A bad address in the cluster file a node profile extends.
    let cluster = std::fs::read_to_string(repo().join("profiles/ost/cluster-ost.toml"))
        .unwrap()
        .replace("192.168.10.24", "192.168.10.324")
        .replace("../../demo/", "");
    std::fs::write(dir.path().join("cluster-ost.toml"), cluster).unwrap();
    std::fs::write(
        dir.path().join("n.toml"),
        "extends = \"cluster-ost.toml\"\nhostname = \"ost01\"\n",
    )
    .unwrap();
    let e = err(&[
        "plan",
        "--profile",
        dir.path().join("n.toml").to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
    ]);
    assert!(e.contains("cluster-ost.toml: cluster.nodes[3] (ost04).address = \"192.168.10.324\": invalid IPv4 address") && e.contains("n.toml extends this file"), "{e}");
    // TOML syntax: one line, no literal \n.
    std::fs::write(dir.path().join("s.toml"), "hostname = \"x\nswap_mib = 1\n").unwrap();
    let e = err(&[
        "plan",
        "--profile",
        dir.path().join("s.toml").to_str().unwrap(),
    ]);
    assert!(
        e.contains("s.toml: line 1, column") && !e.contains("\\n"),
        "{e}"
    );
    // An invalid profile among several: no key store is made for any.
    let keys = dir.path().join("keys");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("extends = \"{}\"\nhostname = \"ost9\"\nswap_mib = -1\n", p),
    )
    .unwrap();
    let o = cli()
        .build(
            &["ost01-compute", bad.to_str().unwrap()],
            &base,
            &dir.path().join("o"),
        )
        .env("RPIIMG_KEYS_DIR", &keys)
        .env("RPIIMG_CACHE_DIR", dir.path().join("c"))
        .output();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        !keys.exists(),
        "a key store was made before every profile was valid"
    );
    // A --json run's error is a JSON object on stdout, with its kind.
    let o = rpiimg(&[
        "inspect",
        dir.path().join("gone.img").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["error"]["kind"], "host_io", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("gone.img"),
        "{v}"
    );
    // -q quiets progress, not warnings.
    let o = cli().plan("ost03-network", &base).arg("-q").output();
    assert!(stderr(&o).contains("warning:"), "{}", stderr(&o));
}

/// A full cache disk is said to be one (as root: a small tmpfs).
#[test]
fn a_full_cache_disk_is_not_called_a_corrupt_xz() {
    if !is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let _mounted = tmpfs(&cache, "1M").expect("mount a tmpfs");
    let base = fixture(&["--flavour", "bookworm", "--xz", "multi"]);
    let o = rpiimg_cmd()
        .args(["inspect", base.to_str().unwrap()])
        .env("RPIIMG_CACHE_DIR", &cache)
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("cannot write the decompressed image")
            && e.contains("free space there")
            && e.contains("--cache-dir")
            && !e.contains("corrupt"),
        "{e}"
    );
    assert!(
        names_in(&cache).iter().all(|n| !n.contains("partial")),
        "{:?}",
        names_in(&cache)
    );
}

/// `diff` shows FAT files without a mode (FAT stores none), where the
/// plan's mode would be contradicted by the mount's.
#[test]
fn diff_shows_no_mode_for_fat_files() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture(&["--flavour", "bookworm"]);
    let out = dir.path().join("out");
    cli().build(&["ost04-control"], &base, &out).arg("-q").ok();
    let o = rpiimg(&[
        "diff",
        base.to_str().unwrap(),
        out.join("ost04.img").to_str().unwrap(),
    ]);
    let text = stdout(&o);
    let ssh = text
        .lines()
        .find(|l| l.contains("/boot/firmware/ssh"))
        .unwrap_or_default();
    assert!(
        ssh.contains("file on FAT, no mode or owner, 0 bytes"),
        "{text}"
    );
    // Output paths are shown normalised, never through `..`.
    let o = cli()
        .build(&["ost04-control"], &base, &dir.path().join("x/../y"))
        .arg("-q")
        .output();
    assert!(
        o.status.success() && !stdout(&o).contains("/../"),
        "{}",
        stdout(&o)
    );
}
