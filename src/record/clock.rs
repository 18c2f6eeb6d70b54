//! Wall-clock times as recordings name them: UTC civil dates (file names, RFC 3339 in
//! listings and playlists) and the `start`/`end` a playback request gives (RFC 3339 with
//! `Z` or an offset, or Unix seconds). No time-zone database: recordings are named in UTC.

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) to days since 1970-01-01 (the inverse of [`civil_from_days`]).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds of a UTC civil time; None when a field is out of range.
pub(crate) fn unix_of(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<i64> {
    let ok =
        (1970..=9999).contains(&y) && (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && s < 61;
    ok.then(|| days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]` (a space for `T` too; no zone: UTC), or Unix
/// seconds (`1796647860.5`): Unix seconds. None for anything else.
pub fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.len() > 40 {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && (0.0..=253_402_300_800.0).contains(&secs)).then_some(secs);
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok()).flatten()
    };
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let base = unix_of(i64::from(num(0..4)?), num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?)?;
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        frac = format!("0.{}", &f[..digits]).parse().ok()?;
        rest = &f[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':').unwrap_or((rest.get(1..3)?, rest.get(3..)?));
            let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
            if h > 23 || m > 59 || rest.len() > 6 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    Some((base - offset) as f64 + frac)
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_time(unix_ms: i64) -> String {
    let (secs, ms) = (unix_ms.div_euclid(1000), unix_ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_form_a_request_gives() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        for z in [-1000, 0, 11_016, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(parse_time("2026-12-07T12:51:00Z"), Some(1_796_647_860.0));
        assert_eq!(parse_time("2026-12-07T13:51:00+01:00"), Some(1_796_647_860.0));
        assert_eq!(parse_time("2026-12-07T12:51:00.250Z"), Some(1_796_647_860.25));
        assert_eq!(parse_time("2026-12-07 12:51:00"), Some(1_796_647_860.0));
        assert_eq!(parse_time("1796647860"), Some(1_796_647_860.0));
        assert_eq!(format_time(1_796_647_860_250), "2026-12-07T12:51:00.250Z");
        for bad in [
            "",
            "yesterday",
            "2026-13-07T12:51:00Z",
            "2026-12-07T25:00:00Z",
            "2026-12-07T12:51:00+1",
            "../x",
            "-5",
            "NaN",
            "inf",
            "2026-12-07T12:51:00.Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
