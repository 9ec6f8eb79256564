//! Timestamps as the objects write them.

/// Formats ns since the Unix epoch as RFC 3339 UTC with nanoseconds
/// (`2023-11-14T22:13:20.000000000Z`), the form of every time field here.
pub fn rfc3339_ns(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let nanos = ns % 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{nanos:09}Z")
}

/// Reads a UTC RFC 3339 timestamp (`…Z`, with or without a fraction of up
/// to nine digits) as ns since the Unix epoch: the inverse of
/// [`rfc3339_ns`] for what the objects hold. `None` for anything else
/// (offsets, dates before 1970, out-of-range fields).
pub fn parse_rfc3339_ns(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-');
    let field = |v: Option<&str>, len: usize| -> Option<i64> {
        let v = v?;
        (v.len() == len && v.bytes().all(|b| b.is_ascii_digit())).then(|| v.parse().ok())?
    };
    let (y, mo, day) = (
        field(d.next(), 4)?,
        field(d.next(), 2)?,
        field(d.next(), 2)?,
    );
    let (hms, frac) = match time.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (time, None),
    };
    let mut t = hms.splitn(3, ':');
    let (h, mi, sec) = (
        field(t.next(), 2)?,
        field(t.next(), 2)?,
        field(t.next(), 2)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let nanos = match frac {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.parse::<u64>().ok()? * 10u64.pow(9 - f.len() as u32)
        }
        Some(_) => return None,
        None => 0,
    };
    // Howard Hinnant's days_from_civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_timestamps_read_back_and_others_are_refused() {
        for ns in [
            0,
            1_700_000_000_123_456_789,
            951_782_400_000_000_000,
            1_796_588_693_000_000_001,
            4_102_444_800_999_999_999,
        ] {
            assert_eq!(parse_rfc3339_ns(&rfc3339_ns(ns)), Some(ns), "{ns}");
        }
        assert_eq!(
            parse_rfc3339_ns("2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500_000_000)
        );
        for bad in [
            "",
            "2023-11-14T22:13:20+01:00",
            "2023-11-14 22:13:20Z",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567890Z",
            "1969-12-31T23:59:59Z",
            "20231-11-14T22:13:20Z",
        ] {
            assert_eq!(parse_rfc3339_ns(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_ns(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            rfc3339_ns(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
