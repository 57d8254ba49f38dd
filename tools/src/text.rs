//! How the tools write keys, uuids, times and sizes, and read keys back.

/// Prefix of a key given (or shown) as hex.
pub const HEX_PREFIX: &str = "hex:";

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A key as the command line takes it back: the text itself when every
/// byte is printable ASCII (space included) and it does not start with
/// `hex:`, otherwise `hex:` and its bytes in hex.
pub fn key_text(key: &[u8]) -> String {
    let printable = !key.is_empty() && key.iter().all(|&b| (0x20..0x7f).contains(&b));
    if printable && !key.starts_with(HEX_PREFIX.as_bytes()) {
        // Printable ASCII is valid UTF-8.
        String::from_utf8_lossy(key).into_owned()
    } else {
        format!("{HEX_PREFIX}{}", hex(key))
    }
}

/// Parse a key given on the command line: `hex:...` for binary keys,
/// anything else is the key's bytes as written.
pub fn parse_key(arg: &str) -> Result<Vec<u8>, String> {
    let Some(h) = arg.strip_prefix(HEX_PREFIX) else {
        return Ok(arg.as_bytes().to_vec());
    };
    if h.len() % 2 != 0 {
        return Err(format!("{arg:?}: odd number of hex digits"));
    }
    (0..h.len())
        .step_by(2)
        .map(|i| {
            h.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("{arg:?}: not hex"))
        })
        .collect()
}

/// The canonical 8-4-4-4-12 form of a uuid.
pub fn uuid(u: &[u8; 16]) -> String {
    let h = hex(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Seconds since the epoch as an RFC 3339 UTC time, e.g.
/// `2026-01-31T12:00:00Z`.
pub fn utc(secs: u64) -> String {
    let (year, month, day) = civil_date(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The (year, month 1..=12, day 1..=31) of `days` since 1970-01-01, in the
/// proleptic Gregorian calendar (Howard Hinnant's civil_from_days), so
/// that no time zone database is needed.
pub fn civil_date(days: u64) -> (i64, u64, u64) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u64, day as u64)
}

/// `v` divided by `step` until it is below `limit` or `units` has no
/// larger unit; returns it and the index of its unit in `units`. Every
/// size the tools print scales this way; they differ in step, limit and
/// digits.
pub fn scale(mut v: f64, step: f64, limit: f64, units: &[&str]) -> (f64, usize) {
    let mut i = 0;
    while v >= limit && i + 1 < units.len() {
        v /= step;
        i += 1;
    }
    (v, i)
}

/// A byte count for people: `12345678 (11.8 MiB)`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let (v, i) = scale(n as f64, 1024.0, 1024.0, &UNITS);
    match UNITS.get(i) {
        Some(unit) if i > 0 => format!("{n} ({v:.1} {unit})"),
        _ => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for k in [
            &b"plain key"[..],
            b"\x00\x01\xff",
            b"hex:looks like hex",
            b"tab\there",
        ] {
            assert_eq!(parse_key(&key_text(k)).unwrap(), k);
        }
        assert_eq!(key_text(b"abc"), "abc");
        assert_eq!(key_text(b"\x00\xff"), "hex:00ff");
        assert!(parse_key("hex:0").is_err());
        assert!(parse_key("hex:zz").is_err());
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn byte_counts_for_people() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1024 (1.0 KiB)");
        assert_eq!(bytes(12_345_678), "12345678 (11.8 MiB)");
        assert_eq!(bytes(u64::MAX), "18446744073709551615 (16.0 EiB)");
    }

    #[test]
    fn uuid_form() {
        let u: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(uuid(&u), "00010203-0405-0607-0809-0a0b0c0d0e0f");
    }
}
