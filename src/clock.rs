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
