//! The one place rpiimg reads a time for what it writes.
//!
//! Images must be a function of their inputs (the base image, the profiles,
//! the rpiimg version), so `build` never reads the clock: the time stamped
//! on everything it creates or changes is `SOURCE_DATE_EPOCH` when set (the
//! reproducible-builds convention), else the newest time recorded in the
//! base image's root filesystem superblock (last mount, last write, last
//! check, creation). Only `rpiimg fs`, an interactive edit like `touch`,
//! falls back to the clock.

use crate::error::{Error, Result};

/// `SOURCE_DATE_EPOCH`, when set: seconds since 1970-01-01 UTC.
pub fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(None),
        Ok(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970; set it to an integer such as $(git log -1 --format=%ct) or unset it"
            ))
        }),
    }
}

/// The time a build stamps: `SOURCE_DATE_EPOCH`, else `base_newest`.
pub fn build_time(base_newest: i64) -> Result<i64> {
    Ok(source_date_epoch()?.unwrap_or(base_newest))
}

/// For interactive edits (`rpiimg fs`): `SOURCE_DATE_EPOCH`, else the clock.
pub fn edit_time() -> Result<i64> {
    Ok(source_date_epoch()?.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
    }))
}

/// (year, month, day, hour, minute, second) in UTC of seconds since the
/// epoch (Howard Hinnant's civil-from-days algorithm).
pub fn civil(t: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, secs) = (t.div_euclid(86400), t.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}
