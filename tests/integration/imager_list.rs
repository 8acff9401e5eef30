//! `rpiimg imager-list` and `build --imager-json`: a Raspberry Pi Imager
//! custom repository that Imager's published schema accepts, naming files
//! that exist, with the sizes and sha256 Imager checks.

use std::path::Path;

use crate::support::*;

const SCHEMA: &str = "tests/fixtures/imager/os-list-schema.json";

/// Validate with Python's jsonschema (the oracle); `Err` is its message.
fn validate(list: &Path) -> Result<(), String> {
    let o = tool("python3")
        .arg("-c")
        .arg(
            "import json, sys\n\
             try:\n    import jsonschema\n\
             except ImportError:\n    sys.exit('python3 module jsonschema missing: install the Debian package python3-jsonschema')\n\
             jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))",
        )
        .arg(list)
        .arg(repo().join(SCHEMA))
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!err.contains("jsonschema missing"), "{err}");
    if o.status.success() {
        Ok(())
    } else {
        Err(err)
    }
}

fn sha256_of_xz(p: &Path) -> String {
    let o = tool("xz").arg("-dc").arg(p).output().unwrap();
    assert!(o.status.success(), "xz -dc {}", p.display());
    let mut sum = tool("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        sum.stdin.take().unwrap().write_all(&o.stdout).unwrap();
    }
    let out = sum.wait_with_output().unwrap();
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

#[test]
fn the_list_validates_against_imagers_schema_and_names_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let base = fixture(&["--flavour", "trixie"]);
    let o = cli()
        .build(&["ost01-compute", "ost04-control"], &base, &out)
        .args(["--xz", "--imager-json", "-q"])
        .ok();
    let list = out.join("rpiimg-os-list.json");
    assert!(stdout(&o).contains("rpiimg-os-list.json"), "{}", stdout(&o));
    validate(&list).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&list).unwrap()).unwrap();
    let entries = v["os_list"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for (e, node) in entries.iter().zip(["ost01", "ost04"]) {
        assert!(e["name"].as_str().unwrap().starts_with(node));
        assert_eq!(
            e["init_format"], "none",
            "Imager must not customise the image"
        );
        let url = e["url"].as_str().unwrap();
        let path = Path::new(url.strip_prefix("file://").unwrap());
        assert!(
            path.is_absolute() && path.ends_with(format!("{node}.img.xz")),
            "{url}"
        );
        assert_eq!(
            e["image_download_size"].as_u64().unwrap(),
            std::fs::metadata(path).unwrap().len()
        );
        assert_eq!(
            e["image_download_sha256"].as_str().unwrap(),
            sha256_file(path)
        );
        // What Imager checks after decompressing: the node image itself.
        let img = out.join(format!("{node}.img"));
        assert_eq!(e["extract_sha256"].as_str().unwrap(), sha256_of_xz(path));
        assert_eq!(e["extract_sha256"].as_str().unwrap(), sha256_file(&img));
        assert_eq!(
            e["extract_size"].as_u64().unwrap(),
            std::fs::metadata(&img).unwrap().len()
        );
        assert!(e["bmap_url"].as_str().unwrap().ends_with(".img.bmap"));
        let date = e["release_date"].as_str().unwrap();
        assert!(date.len() == 10 && date.as_bytes()[4] == b'-', "{date}");
    }
    // The separate command writes the same list; an existing one needs --force.
    let again = dir.path().join("again.json");
    let a = again.to_str().unwrap();
    rpiimg_ok(&["imager-list", out.to_str().unwrap(), "--output", a]);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        std::fs::read(&list).unwrap()
    );
    let o = rpiimg(&["imager-list", out.to_str().unwrap(), "--output", a]);
    assert_eq!(o.status.code(), Some(2));
    // A changed entry is what the schema refuses: the oracle can fail.
    let mut bad = v.clone();
    bad["os_list"][0]["init_format"] = "bogus".into();
    let bad_path = dir.path().join("bad.json");
    std::fs::write(&bad_path, serde_json::to_vec(&bad).unwrap()).unwrap();
    assert!(validate(&bad_path).is_err());
}

#[test]
fn a_directory_without_node_images_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = rpiimg(&["imager-list", dir.path().to_str().unwrap()]);
    assert_stderr(&o, 2, &["no node manifests"]);
    // A manifest naming a file outside its directory is refused, and so is
    // one from a newer rpiimg.
    let manifest = |version: u32, image: &str| {
        format!(
            r#"{{"manifest_version":{version},"rpiimg":"9.9.9","node":"x","profile":"x.toml","os":"bookworm",
            "base":{{"path":"b.img","sha256":null}},
            "image":{{"image":"{image}","size":1,"sha256":"00","bmap":null,"xz":null,"xz_sha256":null}},
            "resolved_profile":{{}},"warnings":[],"changes":[]}}"#
        )
    };
    let m = dir.path().join("x.manifest.json");
    std::fs::write(&m, manifest(1, "../etc/passwd")).unwrap();
    let o = rpiimg(&["imager-list", dir.path().to_str().unwrap()]);
    assert_stderr(&o, 2, &["not a file name"]);
    std::fs::write(&m, manifest(99, "x.img")).unwrap();
    let o = rpiimg(&["imager-list", dir.path().to_str().unwrap()]);
    assert_stderr(&o, 2, &["manifest version 99 is newer"]);
    assert!(!dir.path().join("rpiimg-os-list.json").exists());
}
