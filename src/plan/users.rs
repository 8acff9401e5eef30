//! The user step: rename `pi` or create the profile's users, passwords,
//! groups, sudo; the databases as the node will have them.

use super::facts::Probe;
use super::{units, write, Builder, Change, PlanError};
use crate::userdb::{hash_password, Db, UserDb};

/// The user edits; returns the databases as the node will have them.
pub(super) fn steps(b: &mut Builder) -> Result<UserDb, PlanError> {
    let (p, f) = (b.p, b.f);
    let need = |path: &str| {
        f.file(path)
            .map(str::to_string)
            .ok_or_else(|| b.err(format!("the image has no {path}")))
    };
    let mut db = UserDb {
        passwd: Db::parse(&need("/etc/passwd")?),
        shadow: Db::parse(&need("/etc/shadow")?),
        group: Db::parse(&need("/etc/group")?),
        gshadow: Db::parse(&need("/etc/gshadow")?),
        subuid: Db::parse(f.file("/etc/subuid").unwrap_or("")),
        subgid: Db::parse(f.file("/etc/subgid").unwrap_or("")),
    };
    let mut changes = Vec::new();
    let mut after = Vec::new();
    let mut pi_taken = false;
    for u in &p.users {
        let home = u
            .home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", u.name));
        let (uid, gid) = if let Some(ids) = db.uid_of(&u.name) {
            ids
        } else if !pi_taken && db.uid_of("pi").is_some() {
            // The stock user becomes the profile's first user, as
            // Raspberry Pi's rename wizard would do.
            pi_taken = true;
            let ids = db.uid_of("pi").unwrap_or((1000, 1000));
            db.rename("pi", &u.name, &home);
            if f.has(Probe::HOME_PI) {
                if home
                    .rsplit_once('/')
                    .is_some_and(|(parent, _)| parent != "/home" && !parent.is_empty())
                {
                    let parent = home.rsplit_once('/').map_or("/", |(a, _)| a);
                    changes.push(Change::Mkdir {
                        path: parent.into(),
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                    });
                }
                changes.push(Change::Rename {
                    from: "/home/pi".into(),
                    to: home.clone(),
                });
            } else {
                changes.push(Change::Mkdir {
                    path: home.clone(),
                    mode: 0o755,
                    uid: ids.0,
                    gid: ids.1,
                });
            }
            if f.has(Probe::SUDOERS_PI) {
                changes.push(Change::Remove {
                    path: "/etc/sudoers.d/010_pi-nopasswd".into(),
                });
            }
            ids
        } else {
            let ids = db.create(&u.name, &home, &u.shell);
            changes.push(Change::Mkdir {
                path: home.clone(),
                mode: 0o755,
                uid: ids.0,
                gid: ids.1,
            });
            // What `useradd -m` copies, so the new user gets a normal shell setup.
            for (path, text) in f.files.range("/etc/skel/".to_string()..) {
                let Some(name) = path.strip_prefix("/etc/skel/") else {
                    break;
                };
                changes.push(Change::WriteFile {
                    path: format!("{home}/{name}"),
                    content: text.clone().into_bytes(),
                    mode: 0o644,
                    uid: ids.0,
                    gid: ids.1,
                });
            }
            ids
        };
        db.set_shell(&u.name, &u.shell);
        let hash = match (&u.password, &u.password_hash) {
            (Some(plain), _) => {
                let secret = p.secret.as_ref().ok_or_else(|| {
                    b.err(format!(
                        "users.{}: a plain password needs the cluster's key store (rpiimg plan and build make it)",
                        u.name
                    ))
                })?;
                Some(
                    hash_password(plain.expose(), secret, &[&p.hostname, &u.name])
                        .map_err(|e| b.err(e))?,
                )
            }
            (None, Some(h)) => Some(h.expose().to_string()),
            (None, None) => None,
        };
        if let Some(h) = hash {
            db.set_password_hash(&u.name, &h);
        }
        let missing = db.add_to_groups(&u.name, &u.groups);
        if !missing.is_empty() {
            return Err(b.err(format!(
                "users.{}: groups {} do not exist in the image",
                u.name,
                missing.join(", ")
            )));
        }
        after.push(Change::Chown {
            path: home.clone(),
            uid,
            gid,
            recursive: true,
        });
        if u.sudo_nopasswd {
            after.push(Change::WriteFile {
                path: format!("/etc/sudoers.d/010_{}-nopasswd", u.name),
                content: format!("{} ALL=(ALL:ALL) NOPASSWD: ALL\n", u.name).into_bytes(),
                mode: 0o440,
                uid: 0,
                gid: 0,
            });
        }
        if !u.authorized_keys.is_empty() {
            after.push(Change::Mkdir {
                path: format!("{home}/.ssh"),
                mode: 0o700,
                uid,
                gid,
            });
            after.push(Change::WriteFile {
                path: format!("{home}/.ssh/authorized_keys"),
                content: (u.authorized_keys.join("\n") + "\n").into_bytes(),
                mode: 0o600,
                uid,
                gid,
            });
        }
    }
    if p.users.is_empty() {
        return Ok(db);
    }
    changes.push(write("/etc/passwd", db.passwd.render(), 0o644));
    changes.push(shadow_file("/etc/shadow", db.shadow.render()));
    changes.push(write("/etc/group", db.group.render(), 0o644));
    changes.push(shadow_file("/etc/gshadow", db.gshadow.render()));
    changes.push(write("/etc/subuid", db.subuid.render(), 0o644));
    changes.push(write("/etc/subgid", db.subgid.render(), 0o644));
    changes.extend(after);
    let names: Vec<&str> = p.users.iter().map(|u| u.name.as_str()).collect();
    b.step(format!("users {}", names.join(", ")), changes);

    // What cancel-rename does: no wizard, a console login on tty1.
    let mut cancel = units::disable(f, "userconfig.service");
    if f.units.contains_key("userconfig.service") {
        // Masked as well: a wizard that comes back on tty8 would rename
        // the user the profile made.
        cancel.push(units::mask("userconfig.service"));
    }
    if f.units.contains_key("getty@.service") {
        cancel.extend(units::enable(f, "getty@tty1.service").map_err(|e| b.err(e))?);
    }
    if f.has(Probe::SSHD_RENAME_USER) {
        cancel.push(Change::Remove {
            path: "/etc/ssh/sshd_config.d/rename_user.conf".into(),
        });
    }
    b.step(
        "first-boot user wizard disabled and masked (as cancel-rename does, and more)",
        cancel,
    );
    Ok(db)
}

/// The shadow databases: root:shadow (gid 42), 0640, as Debian ships them.
fn shadow_file(path: &str, content: String) -> Change {
    Change::WriteFile {
        path: path.into(),
        content: content.into_bytes(),
        mode: 0o640,
        uid: 0,
        gid: 42,
    }
}
