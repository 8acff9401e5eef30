//! The user step: rename `pi` or create the profile's users, passwords,
//! groups, sudo; the databases as the node will have them.

use super::facts::Probe;
use super::{units, write, Builder, Change, PlanError};
use crate::userdb::{hash_password, Db, UserDb};

/// The sudoers drop-in with every user's passwordless rule. sudo reads
/// `/etc/sudoers.d` in name order after the main file and the last
/// matching rule wins, so ours sorts last; and it skips names that contain
/// a '.' (sudoers(5)), so one fixed name rather than one per user (a user
/// name may hold a dot).
pub(super) const SUDOERS_DROPIN: &str = "/etc/sudoers.d/zz-rpiimg";

/// The user edits; returns the databases as the node will have them.
pub(super) fn steps(b: &mut Builder) -> Result<UserDb, PlanError> {
    let mut db = read_db(b)?;
    let p = b.p;
    // Home directories first, then the databases, then what goes into the
    // homes (owned by ids the databases now hold).
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
            pi_taken = true;
            rename_pi(b, &mut db, &u.name, &home, &mut changes)
        } else {
            create(b, &mut db, u, &home, &mut changes)
        };
        db.set_shell(&u.name, &u.shell);
        if let Some(h) = password_hash(b, u)? {
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
        after.extend(home_files(u, &home, uid, gid));
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
    let sudo: String = p
        .users
        .iter()
        .filter(|u| u.sudo_nopasswd)
        .map(|u| format!("{} ALL=(ALL:ALL) NOPASSWD: ALL\n", u.name))
        .collect();
    if !sudo.is_empty() {
        changes.push(write(
            SUDOERS_DROPIN,
            format!("# Written by rpiimg from the node profile.\n{sudo}"),
            0o440,
        ));
    }
    let names: Vec<&str> = p.users.iter().map(|u| u.name.as_str()).collect();
    b.step(format!("users {}", names.join(", ")), changes);
    cancel_wizard(b)?;
    Ok(db)
}

/// The image's user databases (passwd, shadow, group and gshadow must exist).
fn read_db(b: &Builder) -> Result<UserDb, PlanError> {
    let f = b.f;
    let need = |path: &str| {
        f.file(path)
            .map(str::to_string)
            .ok_or_else(|| b.err(format!("the image has no {path}")))
    };
    Ok(UserDb {
        passwd: Db::parse(&need("/etc/passwd")?),
        shadow: Db::parse(&need("/etc/shadow")?),
        group: Db::parse(&need("/etc/group")?),
        gshadow: Db::parse(&need("/etc/gshadow")?),
        subuid: Db::parse(f.file("/etc/subuid").unwrap_or("")),
        subgid: Db::parse(f.file("/etc/subgid").unwrap_or("")),
    })
}

/// The stock user `pi` becomes the profile's first user, as Raspberry Pi's
/// rename wizard would do: same ids, its home moved to `home`.
fn rename_pi(
    b: &Builder,
    db: &mut UserDb,
    name: &str,
    home: &str,
    changes: &mut Vec<Change>,
) -> (u32, u32) {
    let f = b.f;
    let ids = db.uid_of("pi").unwrap_or((1000, 1000));
    db.rename("pi", name, home);
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
            to: home.to_string(),
        });
    } else {
        changes.push(Change::Mkdir {
            path: home.to_string(),
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
}

/// A new user with a home holding what `useradd -m` copies from /etc/skel,
/// so the user gets a normal shell setup.
fn create(
    b: &Builder,
    db: &mut UserDb,
    u: &crate::profile::User,
    home: &str,
    changes: &mut Vec<Change>,
) -> (u32, u32) {
    let ids = db.create(&u.name, home, &u.shell);
    changes.push(Change::Mkdir {
        path: home.to_string(),
        mode: 0o755,
        uid: ids.0,
        gid: ids.1,
    });
    for (path, text) in b.f.files.range("/etc/skel/".to_string()..) {
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
}

/// The crypt hash for /etc/shadow: a plain password hashed with a salt
/// derived from the cluster's key store (reproducible builds), or the
/// profile's hash as given.
fn password_hash(b: &Builder, u: &crate::profile::User) -> Result<Option<String>, PlanError> {
    let p = b.p;
    Ok(match (&u.password, &u.password_hash) {
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
    })
}

/// What goes into (and under) a user's home once the databases are
/// written: ownership and authorized SSH keys (sudo rights go into one
/// drop-in for all users, [`SUDOERS_DROPIN`]).
fn home_files(u: &crate::profile::User, home: &str, uid: u32, gid: u32) -> Vec<Change> {
    let mut out = vec![Change::Chown {
        path: home.to_string(),
        uid,
        gid,
        recursive: true,
    }];
    if !u.authorized_keys.is_empty() {
        out.push(Change::Mkdir {
            path: format!("{home}/.ssh"),
            mode: 0o700,
            uid,
            gid,
        });
        out.push(Change::WriteFile {
            path: format!("{home}/.ssh/authorized_keys"),
            content: (u.authorized_keys.join("\n") + "\n").into_bytes(),
            mode: 0o600,
            uid,
            gid,
        });
    }
    out
}

/// What cancel-rename does: no wizard, a console login on tty1.
fn cancel_wizard(b: &mut Builder) -> Result<(), PlanError> {
    let f = b.f;
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
    Ok(())
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
