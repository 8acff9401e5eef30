//! Host inputs a profile or a command line names are read bounded and
//! contained (issue 10, classes 11 and 14): no endless read of a device or
//! FIFO, no host file pulled in through an overlay's symbolic link, no
//! endless template.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

/// A node profile in `dir` extending the repository's cluster, plus `extra`.
fn node_profile(dir: &Path, extra: &str) -> String {
    let p = dir.join("node.toml");
    std::fs::write(
        &p,
        format!(
            "extends = {:?}\nhostname = \"ost04\"\n{extra}\n",
            profile_path("cluster-ost")
        ),
    )
    .unwrap();
    p.display().to_string()
}

/// `rpiimg plan` of `profile`: (exit code, stderr, stdout), in bounded time.
fn plan(profile: &str) -> (Option<i32>, String, String) {
    let base = fixture(&["--flavour", "trixie"]);
    let t = Instant::now();
    let o = rpiimg(&[
        "plan",
        "--profile",
        profile,
        "--base",
        base.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    (o.status.code(), stderr(&o), stdout(&o))
}

/// `plan` of `profile` exits 2 and its stderr says every needle; its stderr.
fn plan_refused(profile: &str, needles: &[&str]) -> String {
    let (code, err, _) = plan(profile);
    assert_eq!(code, Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
    err
}

#[test]
fn devices_fifos_and_huge_profiles_are_refused_not_read() {
    let d = tempfile::tempdir().unwrap();
    // extends pointing at a device.
    let p = d.path().join("zero.toml");
    std::fs::write(&p, "extends = \"/dev/zero\"\nhostname = \"ost04\"\n").unwrap();
    plan_refused(p.to_str().unwrap(), &["/dev/zero", "not a regular file"]);
    // files.source naming a FIFO (nobody ever writes to it).
    let fifo = d.path().join("fifo");
    assert!(tool("mkfifo").arg(&fifo).status().unwrap().success());
    let prof = node_profile(
        d.path(),
        &format!(
            "[[files]]\npath = \"/etc/x\"\nsource = {:?}\n",
            fifo.display().to_string()
        ),
    );
    plan_refused(&prof, &["not a regular file"]);
    // A profile over the 1 MiB bound.
    let big = d.path().join("big.toml");
    std::fs::write(
        &big,
        format!("# {}\nhostname = \"ost04\"\n", "x".repeat(2 << 20)),
    )
    .unwrap();
    plan_refused(big.to_str().unwrap(), &["more than the 1048576 bytes"]);
}

/// The other small files a command line names (a profile, a manifest, an
/// `fs batch` file) are read the same way: a FIFO nobody writes to or a
/// device is refused at once, naming it, instead of hanging or filling memory.
#[test]
fn command_line_files_that_are_not_regular_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo.toml");
    assert!(tool("mkfifo").arg(&fifo).status().unwrap().success());
    let img = copy_fixture(&["--flavour", "trixie"], d.path());
    let before = std::fs::read(&img).unwrap();
    let fifo_s = fifo.to_str().unwrap();
    let img_s = img.to_str().unwrap();
    let limit = Duration::from_secs(60);
    let cases: [&[&str]; 5] = [
        &["plan", "--profile", fifo_s, "--base", img_s],
        &["verify", img_s, "--manifest", fifo_s],
        &["verify", img_s, "--manifest", "/dev/zero"],
        &["fs", img_s, "batch", fifo_s],
        &["fs", img_s, "batch", "/dev/zero"],
    ];
    for args in cases {
        let o = rpiimg_within(args, limit);
        let err = assert_stderr(&o, 2, &["not a regular file"]);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    assert!(
        std::fs::read(&img).unwrap() == before,
        "the image is unchanged"
    );
}

#[test]
fn overlay_links_that_leave_the_overlay_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let secret = d.path().join("host-secret");
    std::fs::write(&secret, "root:$6$hostsecret:19000::::::\n").unwrap();
    let ov = d.path().join("ov");
    std::fs::create_dir_all(ov.join("etc")).unwrap();
    std::os::unix::fs::symlink(&secret, ov.join("etc/leak")).unwrap();
    let prof = node_profile(d.path(), "overlays = [\"ov\"]");
    let (code, err, out) = plan(&prof);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("outside") && err.contains("etc/leak"), "{err}");
    assert!(!out.contains("hostsecret") && !err.contains("hostsecret"));
    // A link that stays inside the overlay is fine; mgmt/ is not image content.
    std::fs::remove_file(ov.join("etc/leak")).unwrap();
    std::fs::write(ov.join("etc/real"), "inside\n").unwrap();
    std::os::unix::fs::symlink("real", ov.join("etc/alias")).unwrap();
    std::fs::create_dir_all(ov.join("mgmt")).unwrap();
    std::fs::write(ov.join("mgmt/hosts.j2"), "# custom hosts\n").unwrap();
    let (code, err, out) = plan(&prof);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("\"/etc/alias\"") && out.contains("\"/etc/real\""),
        "{out}"
    );
    assert!(
        !out.contains("/mgmt/"),
        "bundle templates are not copied into the image"
    );
}

/// Links in the directories a profile names lead anywhere too: an overlay
/// that is itself a link, or a `[[files]]` source reached through a linked
/// directory, is refused, and the host's file never reaches the output.
#[test]
fn linked_directories_in_what_a_profile_names_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let host = d.path().join("host");
    std::fs::create_dir_all(host.join("etc")).unwrap();
    std::fs::write(host.join("etc/shadow"), "HOSTSECRET-123\n").unwrap();
    let prof_dir = d.path().join("prof");
    std::fs::create_dir_all(prof_dir.join("keys")).unwrap();
    std::os::unix::fs::symlink(&host, prof_dir.join("ov")).unwrap();
    std::os::unix::fs::symlink(host.join("etc"), prof_dir.join("keys/dirlink")).unwrap();
    for (extra, named) in [
        ("overlays = [\"ov\"]", "ov"),
        (
            "[[files]]\npath = \"/etc/x\"\nsource = \"keys/dirlink/shadow\"",
            "dirlink",
        ),
    ] {
        let prof = node_profile(&prof_dir, extra);
        let (code, err, out) = plan(&prof);
        assert_eq!(code, Some(2), "{extra}: {err}");
        assert!(
            err.contains("symbolic link") && err.contains(named),
            "{extra}: {err}"
        );
        assert!(!out.contains("HOSTSECRET") && !err.contains("HOSTSECRET"));
    }
    // The same files named by their real place are fine.
    std::fs::create_dir_all(prof_dir.join("real")).unwrap();
    std::fs::write(prof_dir.join("real/x"), "named\n").unwrap();
    let prof = node_profile(
        &prof_dir,
        "[[files]]\npath = \"/etc/x\"\nsource = \"real/x\"",
    );
    let (code, err, _) = plan(&prof);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn endless_templates_stop_with_an_error() {
    let d = tempfile::tempdir().unwrap();
    let prof = node_profile(
        d.path(),
        "[[files]]\npath = \"/etc/big\"\ncontent = \"{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}\"\n",
    );
    plan_refused(&prof, &["/etc/big", "fuel"]);
}

#[test]
fn line_breaks_in_values_are_refused_everywhere() {
    let d = tempfile::tempdir().unwrap();
    for (extra, key, code) in [
        // systemd-sysctl splits on CR: a second sysctl line.
        ("[sysctl]\n\"net.ipv4.ip_forward\" = \"1\\rkernel.panic = 1\"\n", "sysctl.net.ipv4.ip_forward", "U+000D"),
        // U+2028 is a line break to YAML: a new top-level key in netplan.
        ("[vars]\nnote = \"a\\u2028network: {}\"\n", "vars.note", "U+2028"),
        ("[ssh]\nenable = true\npassword_authentication = true\n[[users]]\nname = \"ubuntu\"\nshell = \"/bin/bash\\u000b\"\n", "users[0].shell", "U+000B"),
    ] {
        let prof = node_profile(d.path(), extra);
        plan_refused(&prof, &[key, code]);
    }
    // A file's own content may span lines.
    let prof = node_profile(
        d.path(),
        "[[files]]\npath = \"/etc/motd.d/lab\"\ncontent = \"line one\\nline two\\n\"\n",
    );
    let (status, err, _) = plan(&prof);
    assert_eq!(status, Some(0), "{err}");
}

/// Secrets of the profile appear in no plan output or manifest (unless
/// `plan --json --show-secrets` is asked for).
#[test]
fn secrets_stay_out_of_plans_and_manifests() {
    let d = tempfile::tempdir().unwrap();
    let psk = "Wifi-Psk-Secret-7731";
    let var = "Var-Secret-5512";
    let hash = "$6$saltsaltsalt$Hash-Secret-9043";
    let plain = "Plain-Secret-2210";
    let prof = node_profile(
        d.path(),
        &format!(
            "[network.wifi]\nssid = \"lab\"\npsk = \"{psk}\"\n[vars]\ntoken = \"{var}\"\n[[files]]\npath = \"/etc/lab-token\"\ncontent = \"token={{{{ vars.token }}}}\\n\"\n[[users]]\nname = \"ubuntu\"\npassword_hash = \"{hash}\"\n[[users]]\nname = \"student\"\npassword = \"{plain}\"\n"
        ),
    );
    let (status, err, json) = plan(&prof);
    assert_eq!(status, Some(0), "{err}");
    let base = fixture(&["--flavour", "trixie"]);
    let text = stdout(&rpiimg(&[
        "plan",
        "--profile",
        &prof,
        "--base",
        base.to_str().unwrap(),
    ]));
    for s in [psk, var, hash, plain] {
        assert!(
            !json.contains(s) && !text.contains(s) && !err.contains(s),
            "{s} leaked"
        );
    }
    assert!(json.contains("<redacted: holds a secret"), "{json}");
    let shown = stdout(&rpiimg(&[
        "plan",
        "--profile",
        &prof,
        "--base",
        base.to_str().unwrap(),
        "--json",
        "--show-secrets",
    ]));
    assert!(
        shown.contains(psk) && shown.contains(var),
        "--show-secrets shows them"
    );
    // The build's manifest and its messages.
    let out = d.path().join("out");
    let o = cli().build(&[&prof], &base, &out).output();
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = std::fs::read_to_string(out.join("ost04.manifest.json")).unwrap();
    // The hash derived from the plain password, as the image holds it.
    let img = out.join("ost04.img");
    let shadow = stdout(&rpiimg(&["cat", img.to_str().unwrap(), "/etc/shadow"]));
    let derived = shadow
        .lines()
        .find_map(|l| l.strip_prefix("student:"))
        .and_then(|l| l.split(':').next())
        .expect("student in /etc/shadow")
        .to_string();
    assert!(derived.starts_with('$'), "{derived}");
    assert!(!json.contains(&derived), "derived hash in plan --json");
    assert!(
        manifest.contains("\"password\": \"<redacted>\""),
        "secrets are redacted by their type"
    );
    for s in [psk, var, hash, plain, &derived] {
        assert!(
            !manifest.contains(s) && !stderr(&o).contains(s) && !stdout(&o).contains(s),
            "{s} in the manifest or output"
        );
    }
}

/// A secret written transformed (`|upper`, `|reverse`, `|yaml` escaping)
/// or too short to search for is still redacted: plan decides by whether a
/// text depends on a secret, not by finding the value in it.
#[test]
fn transformed_and_short_secrets_stay_out_of_plans() {
    let d = tempfile::tempdir().unwrap();
    let token = "Var-Secret-5512";
    let db = r#"Db"Pass\Secret"#;
    let prof = node_profile(
        d.path(),
        r#"[vars]
token = "Var-Secret-5512"
db_password = 'Db"Pass\Secret'
short = "q9"
[[files]]
path = "/etc/lab-forms"
content = "{{ vars.token|upper }} {{ vars.token|reverse }}\n"
[[files]]
path = "/etc/lab-db.yaml"
content = "password: {{ vars.db_password|yaml }}\n"
[[files]]
path = "/etc/lab-short"
content = "pin={{ vars.short }} {{ vars.short|upper }}\n"
[[files]]
path = "/etc/lab-plain"
content = "no secret here\n"
"#,
    );
    let forms: Vec<String> = [token, db]
        .iter()
        .flat_map(|s| {
            let json = serde_json::to_string(s).unwrap();
            [
                s.to_string(),
                s.to_uppercase(),
                s.to_lowercase(),
                s.chars().rev().collect(),
                json.trim_matches('"').to_string(),
            ]
        })
        // The 2-character one, where it is written (alone, "q9" could turn
        // up by chance in a host key's base64).
        .chain(["pin=q9".to_string(), "Q9\n".to_string()])
        .collect();
    let leaks = |what: &str, text: &str| {
        for f in &forms {
            assert!(!text.contains(f.as_str()), "{f:?} leaked in {what}");
        }
    };
    let base = fixture(&["--flavour", "trixie"]);
    let base = base.to_str().unwrap();
    let (status, err, json) = plan(&prof);
    assert_eq!(status, Some(0), "{err}");
    leaks("plan --json", &json);
    leaks("stderr", &err);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let text_of = |v: &serde_json::Value, path: &str| -> String {
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["changes"].as_array().unwrap())
            .find(|c| c["path"] == path)
            .map(|c| c["text"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{path} not planned"))
    };
    for p in ["/etc/lab-forms", "/etc/lab-db.yaml", "/etc/lab-short"] {
        assert!(
            text_of(&v, p).starts_with("<redacted: holds a secret"),
            "{p}"
        );
    }
    // Only what depends on a secret: the rest stays readable.
    assert_eq!(text_of(&v, "/etc/lab-plain"), "no secret here\n");
    let o = rpiimg(&["plan", "--profile", &prof, "--base", base]);
    assert!(o.status.success(), "{}", stderr(&o));
    leaks("plan", &stdout(&o));
    // --render-to follows the same rule: every file, the secret ones as
    // the line saying why.
    let r = d.path().join("render");
    let o = rpiimg(&[
        "plan",
        "--profile",
        &prof,
        "--base",
        base,
        "--render-to",
        r.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut n = 0;
    let mut todo = vec![r.clone()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                n += 1;
                let text = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned();
                leaks(&e.path().display().to_string(), &text);
                assert!(!text.contains("PRIVATE KEY"), "{}", e.path().display());
            }
        }
    }
    assert!(n > 10, "{n} files rendered");
    let short = std::fs::read_to_string(r.join("etc/lab-short")).unwrap();
    assert!(short.starts_with("<redacted: holds a secret"), "{short}");
    assert_eq!(
        std::fs::read_to_string(r.join("etc/lab-plain")).unwrap(),
        "no secret here\n"
    );
    // --show-secrets shows them, in both.
    let shown = stdout(&rpiimg(&[
        "plan",
        "--profile",
        &prof,
        "--base",
        base,
        "--json",
        "--show-secrets",
    ]));
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        text_of(&v, "/etc/lab-forms"),
        "VAR-SECRET-5512 2155-terceS-raV\n"
    );
    assert_eq!(
        text_of(&v, "/etc/lab-db.yaml"),
        "password: \"Db\\\"Pass\\\\Secret\"\n"
    );
    assert_eq!(text_of(&v, "/etc/lab-short"), "pin=q9 Q9\n");
    let r = d.path().join("render-shown");
    let o = rpiimg(&[
        "plan",
        "--profile",
        &prof,
        "--base",
        base,
        "--render-to",
        r.to_str().unwrap(),
        "--show-secrets",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(r.join("etc/lab-short")).unwrap(),
        "pin=q9 Q9\n"
    );
}

/// The `yaml` filter's output reads back, with a YAML 1.1 parser (PyYAML
/// on libyaml, the parser family netplan uses), as exactly the string
/// that went in, and as one key: no value can start a line of its own.
#[test]
fn yaml_quoting_round_trips_through_a_yaml_parser() {
    let values = [
        "lab",
        "it's \"quoted\" \\ back",
        "k: v\u{2028}evil: 1",
        "cr\rlf\nnel\u{85}ps\u{2029}tab\tesc\u{1b}del\u{7f}csi\u{9b}",
        "# not a comment",
        "- not a list",
        "ünïcödé ✓",
    ];
    let mut doc = String::new();
    for (i, v) in values.iter().enumerate() {
        doc.push_str(&format!("k{i}: {}\n", rpiimg::template::yaml_quote(v)));
    }
    let mut child = tool("python3")
        .args([
            "-c",
            "import sys, json, yaml; d = yaml.load(sys.stdin.read(), Loader=yaml.CSafeLoader); print(json.dumps(d))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{doc}");
    let back: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(back.len(), values.len(), "{back:?}");
    for (i, v) in values.iter().enumerate() {
        assert_eq!(back[&format!("k{i}")], *v);
    }
}

/// Names from an image reach the terminal escaped as `ls -b` shows them
/// (issue 10, class 9): an ESC sequence, a BEL or a newline in a file name
/// cannot recolour the screen or fake a line of `ls`, `diff`, `verify` or
/// an error; `--json` keeps the name exact.
#[test]
fn image_names_are_escaped_for_terminals() {
    let d = tempfile::tempdir().unwrap();
    let base = fixture(&["--flavour", "trixie"]);
    let img = d.path().join("node.img");
    std::fs::copy(&base, &img).unwrap();
    let i = img.to_str().unwrap();
    let name = "evil\u{1b}]0;pwned\u{7}\nok   fake";
    let shown = "evil\\033]0;pwned\\a\\nok   fake";
    let local = d.path().join("x");
    std::fs::write(&local, "x\n").unwrap();
    // A sudoers drop-in of the wrong mode: verify names it in a FAIL line.
    let inside = format!("/etc/sudoers.d/{name}");
    let o = rpiimg(&[
        "fs",
        i,
        "put",
        local.to_str().unwrap(),
        &inside,
        "--mode",
        "0644",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let raw = |s: &str| s.contains('\u{1b}') || s.contains('\u{7}');
    for args in [
        &["ls", i, "/etc/sudoers.d"][..],
        &["ls", "-l", i, "/etc/sudoers.d"],
        &["diff", base.to_str().unwrap(), i],
        &["verify", i],
    ] {
        let o = rpiimg(args);
        let (out, err) = (stdout(&o), stderr(&o));
        assert!(
            !raw(&out) && !raw(&err),
            "{args:?} printed a raw control: {out:?}"
        );
        assert!(out.contains(shown), "{args:?} shows {shown}: {out}");
        assert!(
            !out.lines().any(|l| l.starts_with("ok   fake")),
            "{args:?}: a name faked a line"
        );
    }
    // An error naming the path.
    let o = rpiimg(&["cat", i, &format!("{inside}/below")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!raw(&stderr(&o)), "{:?}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    // JSON stays exact.
    let o = rpiimg(&["diff", base.to_str().unwrap(), i, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v
        .to_string()
        .contains(&serde_json::to_string(&inside).unwrap()[1..20]));
    assert!(serde_json::to_string(&v)
        .unwrap()
        .contains("\\u001b]0;pwned\\u0007\\nok   fake"));
}

/// A cluster name is one component of host paths (the key store's folder,
/// out/mgmt-<name>/): a name that is a path is refused by `plan` and
/// `cluster` with exit 2, before anything is written anywhere (issue 26,
/// class 2).
#[test]
fn cluster_names_that_are_paths_are_refused_before_any_write() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    for name in ["x/../../victim", "..", ".hidden", "a b", "ost\nx", ""] {
        let dir = tempfile::tempdir_in(d.path()).unwrap();
        let p = dir.path().join("node.toml");
        std::fs::write(
            &p,
            format!(
                "extends = {:?}\nhostname = \"ost04\"\n[cluster]\nname = {:?}\n",
                profile_path("cluster-ost"),
                name
            ),
        )
        .unwrap();
        let prof = p.display().to_string();
        plan_refused(&prof, &["cluster.name", "is not a cluster name"]);
        let o = rpiimg(&[
            "cluster",
            "--profile",
            &prof,
            "--out",
            dir.path().join("m").to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "{name:?}");
        // Nothing but the profile in its folder, nothing in the victim.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["node.toml"], "{name:?}");
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "{name:?}");
    }
}
