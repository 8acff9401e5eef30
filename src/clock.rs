//! The one place rpiimg reads a time for what it writes.
//!
//! Images must be a function of their inputs (the base image, the profiles,
//! the rpiimg version), so `build` never reads the clock: the time stamped
//! on everything it creates or changes is `SOURCE_DATE_EPOCH` when set (the
//! reproducible-builds convention), else the newest time recorded in the
//! base image's root filesystem superblock (last mount, last write, last
//! check, creation). Only `rpiimg fs`, an interactive edit like `touch`,
//! falls back to the clock.
//!
//! It also holds every conversion of times: civil dates, the text forms
//! rpiimg prints, and FAT's local-time timestamps.

use crate::error::{Error, Result};

/// `SOURCE_DATE_EPOCH`, when set: seconds since 1970-01-01 UTC.
pub(crate) fn source_date_epoch() -> Result<Option<i64>> {
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
pub(crate) fn build_time(base_newest: i64) -> Result<i64> {
    Ok(source_date_epoch()?.unwrap_or(base_newest))
}

/// For interactive edits (`rpiimg fs`): `SOURCE_DATE_EPOCH`, else the clock.
pub(crate) fn edit_time() -> Result<i64> {
    Ok(source_date_epoch()?.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
    }))
}

/// (year, month, day, hour, minute, second) in UTC of seconds since the
/// epoch (Howard Hinnant's civil-from-days algorithm).
pub(crate) fn civil(t: i64) -> (i64, i64, i64, i64, i64, i64) {
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

/// `YYYY-MM-DD HH:MM` in UTC, as listings show times.
pub(crate) fn format_time(t: i64) -> String {
    let (y, m, d, hh, mm, _) = civil(t);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}")
}

/// `YYYY-MM-DD` in UTC.
pub(crate) fn format_date(t: i64) -> String {
    let (y, m, d, ..) = civil(t);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Seconds since the epoch of a UTC civil date and time (Howard Hinnant's
/// days-from-civil).
pub(crate) fn from_civil(y: i64, m: i64, d: i64, hh: i64, mm: i64, ss: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86400 + hh * 3600 + mm * 60 + ss
}

/// Seconds since the epoch of a FAT timestamp (FAT stores local time; we treat it as UTC).
pub(crate) fn from_fat(dt: fatfs::DateTime) -> i64 {
    let (y, m, d) = (
        i64::from(dt.date.year),
        i64::from(dt.date.month),
        i64::from(dt.date.day),
    );
    from_civil(
        y,
        m,
        d,
        i64::from(dt.time.hour),
        i64::from(dt.time.min),
        i64::from(dt.time.sec),
    )
}

/// A FAT timestamp for seconds since the epoch (as UTC; clamped to FAT's
/// 1980-2107 range; two-second resolution).
pub(crate) fn fat_datetime(t: i64) -> fatfs::DateTime {
    const MIN: i64 = 315_532_800; // 1980-01-01
    const MAX: i64 = 4_354_819_198; // 2107-12-31 23:59:58
    let (y, m, d, hh, mm, ss) = civil(t.clamp(MIN, MAX));
    // The clamp keeps every field in range (years 1980 to 2107), so this
    // never falls back.
    let n = |v: i64| u16::try_from(v).unwrap_or(0);
    fatfs::DateTime {
        date: fatfs::Date {
            year: n(y),
            month: n(m),
            day: n(d),
        },
        time: fatfs::Time {
            hour: n(hh),
            min: n(mm),
            // Two-second resolution: clear the low bit (ss is 0..=59).
            sec: n(ss & !1),
            millis: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01 00:00");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_date(951_782_400), "2000-02-29");
        for t in [0, 951_782_400, 1_700_000_000, 4_354_819_198] {
            let (y, m, d, hh, mm, ss) = civil(t);
            assert_eq!(from_civil(y, m, d, hh, mm, ss), t);
        }
    }

    #[test]
    fn fat_from_fat() {
        let dt = fatfs::DateTime {
            date: fatfs::Date {
                year: 2023,
                month: 11,
                day: 14,
            },
            time: fatfs::Time {
                hour: 22,
                min: 13,
                sec: 20,
                millis: 0,
            },
        };
        assert_eq!(from_fat(dt), 1_700_000_000);
        assert_eq!(fat_datetime(1_700_000_000), dt);
        for t in [315_532_800, 951_782_400, 1_709_251_199, 4_102_444_800] {
            assert_eq!(from_fat(fat_datetime(t)), t / 2 * 2, "{t}");
        }
        assert_eq!(from_fat(fat_datetime(0)), 315_532_800, "clamped to 1980");
    }
}
