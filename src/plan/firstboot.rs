//! First boot: the service that installs the packages and hands the
//! network over, and the preset file that keeps every unit state the plan
//! chose through systemd's first-boot presets (last: it must see every
//! unit any step touched).

use super::{overlays, units, write, Builder, PlanError};

pub(super) fn service(b: &mut Builder, ctx: &minijinja::Value) -> Result<(), PlanError> {
    let mut fb = overlays::render_builtin(ctx, "firstboot").map_err(|e| b.err(e))?;
    fb.extend(units::enable_own(
        "rpiimg-firstboot.service",
        "multi-user.target",
    ));
    b.step(
        format!(
            "first-boot service: packages {}",
            b.p.firstboot.packages.join(" ")
        ),
        fb,
    );
    Ok(())
}

pub(super) fn presets(b: &mut Builder) {
    let intents = units::intents(b.steps.iter().flat_map(|s| s.changes.iter()), b.f);
    let listed: Vec<String> = intents.iter().map(|(u, i)| format!("{u} {i}")).collect();
    b.step(
        format!(
            "unit states kept through systemd's first-boot presets: {}",
            listed.join(", ")
        ),
        vec![write(
            units::PRESET_FILE,
            units::preset_text(&intents),
            0o644,
        )],
    );
}
