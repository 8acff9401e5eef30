//! The firmware's boot configuration (`config.txt` on the boot partition).
//!
//! A Raspberry Pi 5 boots `kernel_2712.img` by default, built with 16 KiB
//! pages (raspios-image-facts.md, "Additions"). The seed guide disables
//! ProxySQL because it breaks on Pi OS's page size, and other container
//! images built for arm64 assume 4 KiB pages too. `kernel=kernel8.img`
//! gives a Pi 5 the 4 KiB-page kernel, which pi-gen ships on every image;
//! it goes under a `[pi5]` filter, so the card still boots right if it
//! is moved to a Pi 4, where kernel8.img is the default anyway.

use super::{write, Builder, PlanError};
use crate::profile::Board;

const MARK: &str = "# rpiimg:";

pub(super) fn steps(b: &mut Builder) -> Result<(), PlanError> {
    if b.node.board != Some(Board::Pi5) {
        return Ok(());
    }
    let Some(text) = b.f.file("/boot/firmware/config.txt") else {
        return Err(b.err(
            "cluster.nodes board = \"pi5\": the base image has no /boot/firmware/config.txt to choose the 4 KiB-page kernel in; use a stock Raspberry Pi OS image",
        ));
    };
    b.step(
        "Raspberry Pi 5: the 4 KiB-page kernel (kernel8.img), as OpenStack's containers need (ProxySQL and others assume 4 KiB pages; the Pi 5's default kernel_2712.img uses 16 KiB)",
        vec![write("/boot/firmware/config.txt", with_4k_kernel(text), 0o644)],
    );
    Ok(())
}

/// `config.txt` with a `[pi5] kernel=kernel8.img` block at its end (an
/// earlier block of ours is replaced, so a rebuilt image has one). The
/// block ends with `[all]`, so lines added after it apply to every board
/// again, as they did before.
pub(super) fn with_4k_kernel(text: &str) -> String {
    let kept = text.find(&format!("\n{MARK}")).map_or(text, |i| &text[..i]);
    let mut s = kept.trim_end_matches('\n').to_string();
    if !s.is_empty() {
        s.push('\n');
    }
    s.push_str(&format!(
        "\n{MARK} a Raspberry Pi 5 boots the 4 KiB-page kernel (OpenStack's containers need it)\n[pi5]\nkernel=kernel8.img\n[all]\n"
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_is_appended_once() {
        let stock = "dtparam=audio=on\n[cm5]\ndtoverlay=dwc2,dr_mode=host\n\n[all]\n";
        let once = with_4k_kernel(stock);
        assert!(once.starts_with(stock), "{once}");
        assert!(
            once.ends_with("[pi5]\nkernel=kernel8.img\n[all]\n"),
            "{once}"
        );
        assert_eq!(with_4k_kernel(&once), once);
        assert!(with_4k_kernel("arm_64bit=1").starts_with("arm_64bit=1\n\n# rpiimg:"));
    }
}
