//! The shapes most tests repeat: an rpiimg command line (`build
//! --profile ... --base ... --out ...`), and "exits with this code and says
//! these things".

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Output};

use super::{profile_path, stderr, stdout, test_env, tool};

/// A profile argument: a name of `profiles/`, or a path as it is.
fn profile_arg(p: &str) -> String {
    if p.contains('/') || p.ends_with(".toml") {
        p.to_string()
    } else {
        profile_path(p)
    }
}

/// An rpiimg command line being put together, with the tests' cache and
/// key store (see `rpiimg_cmd`) unless `env` names others.
pub(crate) struct Run {
    args: Vec<OsString>,
    /// Set, or removed (`None`), in this order after the tests' own.
    envs: Vec<(String, Option<OsString>)>,
    umask: Option<&'static str>,
}

/// Start an rpiimg command line.
pub(crate) fn cli() -> Run {
    Run {
        args: Vec::new(),
        envs: Vec::new(),
        umask: None,
    }
}

impl Run {
    pub(crate) fn arg(mut self, a: impl AsRef<OsStr>) -> Run {
        self.args.push(a.as_ref().to_owned());
        self
    }

    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Run {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub(crate) fn env(mut self, k: &str, v: impl AsRef<OsStr>) -> Run {
        self.envs.push((k.to_string(), Some(v.as_ref().to_owned())));
        self
    }

    /// Each `(name, value)` of `envs` set.
    pub(crate) fn envs(self, envs: &[(&str, &str)]) -> Run {
        envs.iter().fold(self, |r, (k, v)| r.env(k, v))
    }

    pub(crate) fn env_remove(mut self, k: &str) -> Run {
        self.envs.push((k.to_string(), None));
        self
    }

    /// Run under this umask (e.g. "022", the usual one, which would give
    /// 0644 files).
    pub(crate) fn umask(mut self, mask: &'static str) -> Run {
        self.umask = Some(mask);
        self
    }

    /// `--profile P` for each profile (a name of `profiles/` or a path).
    pub(crate) fn profiles(mut self, profiles: &[&str]) -> Run {
        for p in profiles {
            self = self.arg("--profile").arg(profile_arg(p));
        }
        self
    }

    /// `build --profile P... --base BASE --out OUT`.
    pub(crate) fn build(self, profiles: &[&str], base: &Path, out: &Path) -> Run {
        self.arg("build")
            .profiles(profiles)
            .arg("--base")
            .arg(base)
            .arg("--out")
            .arg(out)
    }

    /// `plan --profile P --base BASE`.
    pub(crate) fn plan(self, profile: &str, base: &Path) -> Run {
        self.arg("plan")
            .profiles(&[profile])
            .arg("--base")
            .arg(base)
    }

    /// `cluster --profile P --base BASE --out OUT`.
    pub(crate) fn cluster(self, profile: &str, base: &Path, out: &Path) -> Run {
        self.arg("cluster")
            .profiles(&[profile])
            .arg("--base")
            .arg(base)
            .arg("--out")
            .arg(out)
    }

    /// The command, to spawn or change further.
    pub(crate) fn command(self) -> Command {
        let mut c = match self.umask {
            None => Command::new(env!("CARGO_BIN_EXE_rpiimg")),
            Some(m) => {
                let mut c = tool("sh");
                c.arg("-c")
                    .arg(format!("umask {m} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_rpiimg"));
                c
            }
        };
        test_env(&mut c);
        c.args(&self.args);
        for (k, v) in &self.envs {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    pub(crate) fn output(self) -> Output {
        self.command().output().expect("run rpiimg")
    }

    /// Run it; it must succeed.
    pub(crate) fn ok(self) -> Output {
        let line = self
            .args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let o = self.output();
        assert!(
            o.status.success(),
            "rpiimg {line}: exit {:?}\n{}{}",
            o.status.code(),
            stdout(&o),
            stderr(&o)
        );
        o
    }

    /// Run it; it must exit `code` with every needle on stderr (its stderr).
    pub(crate) fn fails(self, code: i32, needles: &[&str]) -> String {
        assert_stderr(&self.output(), code, needles)
    }
}

/// The run exited `code` and its stderr says every needle (a refusal,
/// a warning); its stderr.
#[track_caller]
pub(crate) fn assert_stderr(o: &Output, code: i32, needles: &[&str]) -> String {
    let e = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}stderr:\n{e}",
        stdout(o)
    );
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}:\n{e}");
    }
    e
}

/// The run exited `code` and its stdout (verify's report) says every
/// needle; its stdout.
#[track_caller]
pub(crate) fn assert_stdout(o: &Output, code: i32, needles: &[&str]) -> String {
    let out = stdout(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{out}stderr:\n{}",
        stderr(o)
    );
    for n in needles {
        assert!(out.contains(n), "stdout lacks {n:?}:\n{out}");
    }
    out
}
