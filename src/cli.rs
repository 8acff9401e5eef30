//! Command-line definitions (clap). No logic lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

    /// No progress output
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

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
    Inspect {
        #[command(flatten)]
        image: ImageArg,
        /// Machine-readable JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// List a directory inside the image (paths as the booted system sees them)
    #[command(
        after_help = "Examples:\n  rpiimg ls base.img /etc\n  rpiimg ls base.img /boot/firmware -l"
    )]
    Ls {
        #[command(flatten)]
        image: ImageArg,
        /// Path inside the image, e.g. /etc or /boot/firmware/overlays
        path: String,
        /// Long listing: mode, links, uid, gid, size, mtime (UTC), symlink target
        #[arg(short, long)]
        long: bool,
    },
    /// Print a file from inside the image to stdout
    #[command(
        after_help = "Examples:\n  rpiimg cat base.img /etc/fstab\n  rpiimg cat base.img /boot/firmware/config.txt"
    )]
    Cat {
        #[command(flatten)]
        image: ImageArg,
        /// Path inside the image
        path: String,
    },
}
