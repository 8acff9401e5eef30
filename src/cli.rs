//! Command-line definitions (clap). No logic lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::value::{Mode, OwnerSpec};

const EXAMPLES: &str = "\
Examples:
  rpiimg inspect 2025-05-13-raspios-bookworm-arm64-lite.img.xz
  rpiimg inspect base.img --json | jq .users
  rpiimg ls base.img /etc/systemd/system/multi-user.target.wants -l
  rpiimg cat base.img /boot/firmware/cmdline.txt
  rpiimg cat base.img.xz /etc/os-release --sha256 62d025b9bc7c...";

#[derive(Debug, Parser)]
#[command(
    name = "rpiimg",
    version,
    about = "Turn one stock Raspberry Pi OS Lite image into ready-to-flash, configured images per cluster node - offline, no root",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Where decompressed .img.xz bases are cached [env: RPIIMG_CACHE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Where `--profile NAME` is looked up (./profiles unless given): DIR/NAME.toml or DIR/<cluster>/NAME.toml [env: RPIIMG_PROFILES]
    #[arg(long, global = true, value_name = "DIR")]
    pub profiles: Option<PathBuf>,

    /// No progress bars or notices (warnings and errors are still printed)
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// A base image overriding the profile's.
#[derive(Debug, Args, Clone)]
pub struct BaseArg {
    /// Base image (.img or .img.xz) instead of the profile's base.image
    #[arg(long, value_name = "IMAGE")]
    pub base: Option<PathBuf>,
    /// Refuse the base unless its sha256 is HEX (overrides base.sha256)
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
}

const BUILD_EXAMPLES: &str = "\
Each node gets <host>.img (sparse), <host>.img.sha256, <host>.img.bmap,
<host>.manifest.json and with --xz <host>.img.xz(.sha256) in its output
folder: --out, else the profile's [output] dir (out/<cluster>/ for the
shipped profiles). Every output of every node is checked before any work:
existing outputs are kept unless --force. Files appear under their final
names only when complete; an interrupted build removes its partial files.
The base is decompressed once into the cache.

Builds are reproducible: the same base, profiles, key store and rpiimg give
the same bytes. Times written come from SOURCE_DATE_EPOCH, else from the
base's root filesystem superblock (never the clock).

Examples:
  rpiimg build --profile ost04-control
  rpiimg build --all profiles/ost --out /srv/images --xz
  rpiimg build --profile ost01-compute --profile ost02-compute \\
      --base ~/2025-05-13-raspios-bookworm-arm64-lite.img.xz
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \\
      rpiimg build --all profiles --check-reproducible
  rpiimg flash out/ost/ost04.img=/dev/sdX     # then flash it";

pub(crate) const CLUSTER_EXAMPLES: &str = "\
The bundle is for one Kolla-Ansible release: [kolla] release in the profile,
or else the newest release below that accepts the base image's OS (read from
its /etc/os-release). A release whose prechecks refuse the base's OS is
refused here, naming the releases that would do:

  2023.1  kolla-ansible 16.7.0  Debian bullseye, bookworm
  2025.1  kolla-ansible 20.6.0  Debian bookworm
  2026.1  kolla-ansible 22.2.0  Debian bookworm, trixie

It holds the release's complete inventory (multinode) with each node's
connection variables in host_vars/, the globals drop-in globals.d/rpiimg.yml, the nova and neutron overrides, deploy.sh (the guide's
management-host steps) and first-cloud.sh (its first cloud). The SSH host
keys in known_hosts are the ones the node images carry: both come from the
cluster's key store (.rpiimg-keys/ beside the profile), so they stay right
across rebuilds and reflashes. `rpiimg build` writes the same files into
<out>/mgmt-<cluster>/.

Examples:
  rpiimg cluster --profile cluster-ost --out ~/kolla
  rpiimg cluster --profile cluster-ost \\
      --base 2025-10-01-raspios-trixie-arm64-lite.img.xz
  rpiimg cluster --profile cluster-ost-vlan --kolla-inventory \\
      ~/kolla-2026.1/share/kolla-ansible/ansible/inventory/multinode
  ansible-inventory -i ~/kolla/multinode --graph";

/// An image argument with its optional pin.
#[derive(Debug, Args)]
pub struct ImageArg {
    /// Disk image: .img, or .img.xz (decompressed once into the cache)
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    /// Refuse the image unless the file's sha256 is HEX
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report partitions, filesystems, OS, users, units, swap, machine-id and cmdline
    #[command(
        after_help = "Examples:\n  rpiimg inspect base.img\n  rpiimg inspect base.img.xz --json"
    )]
    Inspect(InspectArgs),
    /// List a directory inside the image (paths as the booted system sees them)
    #[command(
        after_help = "Examples:\n  rpiimg ls base.img /etc\n  rpiimg ls base.img /boot/firmware -l"
    )]
    Ls(LsArgs),
    /// Print a file from inside the image to stdout
    #[command(
        after_help = "Examples:\n  rpiimg cat base.img /etc/fstab\n  rpiimg cat base.img /boot/firmware/config.txt"
    )]
    Cat(CatArgs),
    /// Print the plan of changes for a node (reads the base image, writes nothing)
    #[command(
        after_help = "Examples:\n  rpiimg plan --profile ost04-control\n  rpiimg plan --profile profiles/ost/ost01-compute.toml --base base.img --json\n  rpiimg plan --profile ost04-control --render-to /tmp/ost04   # for review"
    )]
    Plan(PlanArgs),
    /// Build one ready-to-flash image per node from the profile's base image
    #[command(after_help = BUILD_EXAMPLES)]
    Build(BuildArgs),
    /// Prove what an image contains (exit 0 all good, 1 mismatch, 2 cannot read)
    #[command(
        after_help = "Always checks what every node image must satisfy:\nconsistent ext4 checksums and counts, machine-id in its first-boot state,\ncmdline.txt/fstab PARTUUIDs present in the partition table, netplan files 0600,\nsudoers drop-ins 0440. With --manifest also the image's size and sha256\n(unless --fast) and every recorded change.\n\nExamples:\n  rpiimg verify out/ost/ost04.img\n  rpiimg verify out/ost/ost04.img --profile ost04-control\n  rpiimg verify out/ost/ost04.img --manifest out/ost/ost04.manifest.json --json\n  rpiimg verify out/ost/ost04.img --manifest         # the one beside the image\n  rpiimg verify out/ost/ost04.img --manifest --fast  # without hashing the image\n  rpiimg verify /dev/sdb --manifest out/ost/ost04.manifest.json   # a card\n  rpiimg verify card.img --manifest out/ost/ost04.manifest.json --flashed\n  rpiimg verify --cluster out/ost/ost01.img out/ost/ost02.img \\\n      out/ost/ost03.img out/ost/ost04.img"
    )]
    Verify(VerifyArgs),
    /// The management host's files for a cluster: hosts, known_hosts, the
    /// Kolla-Ansible inventory and globals drop-in, overrides, deploy scripts
    #[command(after_help = CLUSTER_EXAMPLES)]
    Cluster(ClusterArgs),
    /// File-level differences between two images (e.g. a node image and its base)
    #[command(
        after_help = "Exit status: 0 no differences, 1 differences, 2 error.\n\nExamples:\n  rpiimg diff base.img.xz out/ost/ost04.img\n  rpiimg diff a.img b.img --json"
    )]
    Diff(DiffArgs),
    /// Write node images onto cards: several at once, only mapped blocks, read back and verified
    #[command(after_help = FLASH_EXAMPLES)]
    Flash(FlashArgs),
    /// Write a Raspberry Pi Imager os_list JSON ("custom repository") for the node images in DIR
    #[command(after_help = IMAGER_EXAMPLES)]
    ImagerList(ImagerListArgs),
    /// Edit files inside an image in place: ext4 root and FAT boot partition, all or nothing
    #[command(after_help = FS_EXAMPLES)]
    Fs(FsArgs),
    /// List or clear the decompressed .img.xz bases in the cache
    #[command(after_help = CACHE_EXAMPLES)]
    Cache(CacheArgs),
}

const CACHE_EXAMPLES: &str = "\
Each .img.xz is decompressed once into the cache (--cache-dir,
RPIIMG_CACHE_DIR, default ~/.cache/rpiimg), as <sha256 of the .xz>.img with
a seal (<sha256>.seal: the image's size and sha256 and the file's identity).
Every use checks the entry against its seal; build also hashes it while
copying it. An entry another run is filling or using is left alone by clear
(exit 1 when one was kept).

States: sealed; changed since sealed (hashed on next use); damaged: not the
sealed size; unsealed (filled again on next use); being filled by another run.

Examples:
  rpiimg cache list
  rpiimg cache list --json | jq '.[] | select(.state != \"sealed\")'
  rpiimg cache clear 62d025b9bc7c1f3a...   # its sha256 or a unique prefix
  rpiimg cache clear --all
  rpiimg --cache-dir /srv/rpiimg-cache cache list";

/// `rpiimg cache`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub op: CacheOp,
}

/// What `rpiimg cache` does.
#[derive(Debug, Subcommand)]
pub enum CacheOp {
    /// Every entry: the .xz's sha256, size, bytes on disk, state
    List {
        /// JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Remove one entry (by the .xz's sha256 or a unique prefix) or all of them
    Clear {
        /// sha256 of the .xz (as `cache list` shows it), or a unique prefix of at least 8 digits
        #[arg(
            value_name = "SHA256",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        sha256: Option<String>,
        /// Every entry that no other run is filling or using
        #[arg(long)]
        all: bool,
    },
}

/// `rpiimg inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub image: ImageArg,
    /// Machine-readable JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `rpiimg ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub image: ImageArg,
    /// Path inside the image, e.g. /etc or /boot/firmware/overlays
    pub path: String,
    /// Long listing: mode, links, uid, gid, size, mtime (UTC), symlink target
    #[arg(short, long)]
    pub long: bool,
}

/// `rpiimg cat`.
#[derive(Debug, Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub image: ImageArg,
    /// Path inside the image
    pub path: String,
}

/// `rpiimg plan`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("shows_texts").args(["json", "render_to"]).multiple(true)))]
pub struct PlanArgs {
    /// Node profile: a name (ost04-control: found in --profiles DIR) or a path
    #[arg(long, value_name = "PROFILE")]
    pub profile: String,
    #[command(flatten)]
    pub base: BaseArg,
    /// JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Also write every file the plan writes under DIR, mirroring target paths
    #[arg(long, value_name = "DIR")]
    pub render_to: Option<PathBuf>,
    /// With --json or --render-to: show file texts that depend on the
    /// profile's secrets (passwords, Wi-Fi key, [vars]) and write host
    /// private keys under DIR; they are redacted by default
    #[arg(long, requires = "shows_texts")]
    pub show_secrets: bool,
}

/// `rpiimg build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Node profile (repeatable): a name (found in --profiles DIR) or a path
    #[arg(long, value_name = "PROFILE", required_unless_present = "all")]
    pub profile: Vec<String>,
    /// Every node profile in DIR and its folders (profiles that name a hostname) [default: the --profiles folder]
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "", conflicts_with = "profile")]
    pub all: Option<PathBuf>,
    #[command(flatten)]
    pub base: BaseArg,
    /// Output directory [default: the profile's output.dir]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write <host>.img.xz (multi-threaded)
    #[arg(long)]
    pub xz: bool,
    /// Do not write the .bmap file
    #[arg(long)]
    pub no_bmap: bool,
    /// Overwrite existing outputs
    #[arg(long)]
    pub force: bool,
    /// xz threads (0: all cores)
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: u32,
    /// Build twice (the second time with an empty cache) into temporary
    /// folders, fail naming the first differing file and byte range,
    /// else keep the first build's outputs
    #[arg(long)]
    pub check_reproducible: bool,
    /// Make new SSH host keys for these nodes (on purpose: clients will
    /// see changed keys); recorded in the cluster's key store
    #[arg(long, conflicts_with = "check_reproducible")]
    pub rotate_host_keys: bool,
    /// Also write rpiimg-os-list.json, a Raspberry Pi Imager custom
    /// repository of the output directory's node images
    #[arg(long)]
    pub imager_json: bool,
}

/// `rpiimg verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Image(s) to check (several with --cluster)
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Also check every item of this node profile's plan (recomputed from its base)
    #[arg(long, value_name = "PROFILE", conflicts_with = "manifest")]
    pub profile: Option<String>,
    #[command(flatten)]
    pub base: BaseArg,
    /// Also check every change recorded in this build manifest (no profile
    /// needed); bare --manifest takes the one beside the image
    /// (out/ost/ost04.img -> out/ost/ost04.manifest.json). A missing manifest is an
    /// error: without it, the image's output set is incomplete.
    #[arg(long, value_name = "MANIFEST.json", num_args = 0..=1, default_missing_value = "",
          value_parser = clap::value_parser!(std::ffi::OsString))]
    pub manifest: Option<std::ffi::OsString>,
    /// With --manifest: skip comparing the image's sha256 with the
    /// manifest's (a pass over every byte, about a second per GiB); the
    /// size and every recorded change are still checked
    #[arg(long, requires = "manifest")]
    pub fast: bool,
    /// With --manifest: the image is a card (or a file) flashed from the
    /// build's block map, so compare its mapped ranges with the .bmap's
    /// sha256s instead of the whole image (its free space keeps old bytes);
    /// the default for a block device
    #[arg(long, requires = "manifest", conflicts_with = "fast")]
    pub flashed: bool,
    /// The images are one cluster: hostnames, addresses, MACs and host keys must differ
    #[arg(long)]
    pub cluster: bool,
    /// JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `rpiimg cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Cluster profile (or any node profile of the cluster): a name (found in --profiles DIR) or a path
    #[arg(long, value_name = "PROFILE")]
    pub profile: String,
    /// Output directory [default: <profile's output.dir>/mgmt-<cluster>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub base: BaseArg,
    /// Your own copy of the release's stock inventory
    /// (share/kolla-ansible/ansible/inventory/multinode): its groups are kept
    /// as they are (refused when it is another release's)
    #[arg(long, value_name = "FILE")]
    pub kolla_inventory: Option<PathBuf>,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
}

/// `rpiimg diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The image to compare from (e.g. the base; .img or .img.xz)
    pub a: PathBuf,
    /// The image to compare to
    pub b: PathBuf,
    /// JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Compare the content of every file, even when its inode is unchanged
    #[arg(long)]
    pub full: bool,
}

/// `rpiimg fs`.
#[derive(Debug, Args)]
pub struct FsArgs {
    #[command(flatten)]
    pub image: ImageArg,
    #[command(subcommand)]
    pub op: FsOp,
}

const FLASH_EXAMPLES: &str = "\
Each card gets the blocks its image's .bmap maps (without a .bmap: the ranges
its partitions use), in parallel, one writer per card. Each mapped chunk is
first read from the card and only the 4 KiB blocks that differ are written
(a card holding an earlier build of the node is re-flashed in about one read);
a card that holds something else is seen in its first 16 MiB and written in
full from there (--full: never compare). Every written range is then read back
from the card and compared. Before the first write the image's first 64 KiB
(its partition table) is cleared on the card, and it is written last, so a
card whose flash was cut short, or that failed verification, has no partition
table: flash it again.

Refused before anything is written, naming the device and why: a device with
a partition mounted or used as swap or held by LVM/RAID/crypt; the disk of the
running system; a fixed (not removable, not USB/MMC) disk unless --allow-fixed;
a device smaller than its image; a partition instead of the whole card; a
path that is not a block device unless --to-file; the same target twice.
Lists every target (model, size, transport) and asks before writing unless --yes.

Exit status: 0 all cards verified, 1 a card failed, 2 refused or unreadable
input, 130 interrupted (Ctrl-C; the report says which cards are complete).
Linux only.

Examples:
  rpiimg flash out/ost/ost01.img=/dev/sdb out/ost/ost02.img=/dev/sdc
  rpiimg flash --cluster out/ost --devices /dev/sdb,/dev/sdc,/dev/sdd,/dev/sde
  rpiimg flash out/ost/ost04.img=/dev/disk/by-id/usb-Generic_SD_Reader-0:0
  rpiimg flash --to-file out/ost/ost04.img=/tmp/card.img --yes  # a file as card
  rpiimg flash --full out/ost/ost01.img=/dev/sdb      # write all, compare none";

const IMAGER_EXAMPLES: &str = "\
The list names each node image (the .img.xz when there is one, else the .img)
by a file:// URL with its size and sha256, so Imager checks what it writes.
init_format is \"none\": Imager offers no OS customisation, which would
overwrite what rpiimg configured. In Imager: App Options > Content Repository
> Use custom file, then pick the node under Choose OS.

Examples:
  rpiimg imager-list out/ost
  rpiimg imager-list out/ost --output /srv/lab/ost-os-list.json
  rpiimg build --all profiles --xz --imager-json";

/// `rpiimg flash`.
#[derive(Debug, Args)]
pub struct FlashArgs {
    /// IMAGE=DEVICE pairs, e.g. out/ost/ost01.img=/dev/sdb (.img or .img.xz)
    #[arg(
        value_name = "IMAGE=DEVICE",
        required_unless_present = "cluster",
        conflicts_with = "cluster"
    )]
    pub pairs: Vec<String>,
    /// Flash every node image in DIR, in name order, onto --devices in the order given
    #[arg(long, value_name = "DIR", requires = "devices")]
    pub cluster: Option<PathBuf>,
    /// Devices for --cluster, comma-separated, one per node image
    #[arg(
        long,
        value_name = "DEV,DEV...",
        value_delimiter = ',',
        requires = "cluster"
    )]
    pub devices: Vec<PathBuf>,
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Allow targets that are not removable (no removable flag, not USB or MMC)
    #[arg(long)]
    pub allow_fixed: bool,
    /// Allow regular files as targets (created if missing, never shrunk)
    #[arg(long)]
    pub to_file: bool,
    /// Write every mapped range; by default the card is read first and only what differs is written
    #[arg(long)]
    pub full: bool,
    /// JSON report instead of text
    #[arg(long)]
    pub json: bool,
}

/// `rpiimg imager-list`.
#[derive(Debug, Args)]
pub struct ImagerListArgs {
    /// Output directory of `rpiimg build`
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Where to write the list [default: DIR/rpiimg-os-list.json]
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Overwrite an existing list
    #[arg(long)]
    pub force: bool,
}

const FS_EXAMPLES: &str = "\
Paths are as the booted system sees them: / is the ext4 root, /boot/firmware
the FAT partition its fstab mounts. Symlinks inside the image resolve inside
the image. A failed command leaves the image byte-identical.

Examples:
  rpiimg fs node.img put ./hostname /etc/hostname --mode 644 --owner root:root
  rpiimg fs node.img mkdir -p /etc/systemd/network
  rpiimg fs node.img ln -s /dev/null /etc/systemd/system/NetworkManager.service
  rpiimg fs node.img mv /home/pi /home/ost
  rpiimg fs node.img chown -R 1000:1000 /home/ost
  rpiimg fs node.img rm -r /etc/NetworkManager/system-connections
  rpiimg fs node.img put ./ssh /boot/firmware/ssh
  rpiimg fs node.img stat /etc/shadow
  rpiimg fs node.img batch edits.txt   # one transaction of such lines";

/// One edit: the `rpiimg fs` subcommands, also the lines of a batch file.
#[derive(Debug, Clone, Subcommand)]
pub enum FsOp {
    /// Copy a local file into the image (create or replace)
    Put {
        /// Local file to copy (streamed; any size)
        local: PathBuf,
        /// Destination path; an existing directory receives the file under its own name
        path: String,
        /// Permission bits in octal [default: the local file's]
        #[arg(long, value_name = "OCTAL")]
        mode: Option<Mode>,
        /// Owner as USER:GROUP, names from the image's passwd/group or numbers [default: 0:0]
        #[arg(long, value_name = "USER:GROUP")]
        owner: Option<OwnerSpec>,
    },
    /// Create a directory
    Mkdir {
        /// Make missing parents (0755 root); no error if it exists
        #[arg(short, long)]
        parents: bool,
        path: String,
        /// Permission bits in octal
        #[arg(long, value_name = "OCTAL", default_value = "755")]
        mode: Mode,
        /// Owner as USER:GROUP
        #[arg(long, value_name = "USER:GROUP")]
        owner: Option<OwnerSpec>,
    },
    /// Make a link: symbolic with -s (replacing a file or link at PATH), else hard
    Ln {
        #[arg(short, long)]
        symbolic: bool,
        /// Link target (symlink) or existing path (hard link)
        target: String,
        path: String,
        /// Owner of a new symlink as USER:GROUP
        #[arg(long, value_name = "USER:GROUP")]
        owner: Option<OwnerSpec>,
    },
    /// Remove a file, symlink or empty directory (-r: a whole tree)
    Rm {
        #[arg(short, long)]
        recursive: bool,
        /// No error if PATH does not exist
        #[arg(short, long)]
        force: bool,
        path: String,
    },
    /// Move or rename (into TO when TO is a directory)
    Mv { from: String, to: String },
    /// Change permission bits
    Chmod {
        /// Octal mode, e.g. 600 or 2775
        mode: Mode,
        path: String,
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Change owner and group (of a symlink itself, not its target)
    Chown {
        /// USER:GROUP, USER or USER: (with the user's login group), names or numbers
        owner: OwnerSpec,
        path: String,
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Show a path's metadata (read-only)
    Stat {
        path: String,
        /// JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Apply a file of edits (one per line, as the commands above; # comments) as one transaction
    Batch {
        /// Edit list; relative local paths in it are relative to its directory
        file: PathBuf,
    },
}

/// A batch file line, parsed with the same definitions as the command line.
#[derive(Debug, Parser)]
#[command(name = "batch line", no_binary_name = true, disable_help_flag = true)]
pub(crate) struct BatchLine {
    #[command(subcommand)]
    pub op: FsOp,
}
