//! fio's number syntax: sizes with k/m/g suffixes, times with s/ms/m
//! suffixes, and fio's way of printing numbers (`IOPS=12.3k`,
//! `BW=48.0MiB/s`).

use std::time::Duration;

use crate::text::scale;

/// Parse a size as fio does with `kb_base` (1024, fio's default, or 1000).
///
/// A decimal or `0x` hexadecimal integer, then an optional suffix, case
/// ignored: none or `b` (bytes); `k`/`kb`, `m`/`mb`, `g`/`gb`, `t`/`tb`,
/// `p`/`pb` (powers of `kb_base`); `kib`, `mib`, `gib`, `tib`, `pib`
/// (powers of the *other* base). The last rule is fio's compatibility
/// mode, kept so that a job file means the same bytes to both tools: with
/// the default `kb_base=1024`, `1k` is 1024 bytes but `1KiB` is 1000.
pub fn parse_size(s: &str, kb_base: u64) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty size".into());
    }
    if t.ends_with('%') {
        return Err("sizes in percent of the device are not supported".into());
    }
    let (digits, radix, rest) = if let Some(h) = t.strip_prefix("0x").or(t.strip_prefix("0X")) {
        let end = h.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(h.len());
        (&h[..end], 16, &h[end..])
    } else {
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        (&t[..end], 10, &t[end..])
    };
    if digits.is_empty() {
        return Err("not a number (examples: 4096, 4k, 1m, 2g)".into());
    }
    if rest.starts_with('.') {
        return Err("fractions are not supported (write 1536k, not 1.5m)".into());
    }
    let n = u64::from_str_radix(digits, radix).map_err(|_| "number too large".to_string())?;
    let other = if kb_base == 1000 { 1024 } else { 1000 };
    let (base, pow) = match rest.to_ascii_lowercase().as_str() {
        "" | "b" => (kb_base, 0),
        "k" | "kb" => (kb_base, 1),
        "m" | "mb" => (kb_base, 2),
        "g" | "gb" => (kb_base, 3),
        "t" | "tb" => (kb_base, 4),
        "p" | "pb" => (kb_base, 5),
        "kib" => (other, 1),
        "mib" => (other, 2),
        "gib" => (other, 3),
        "tib" => (other, 4),
        "pib" => (other, 5),
        _ => {
            return Err(format!(
                "unknown size suffix {rest:?} (use k, m, g, t or p; fio's k is 1024)"
            ));
        }
    };
    base.checked_pow(pow)
        .and_then(|m| n.checked_mul(m))
        .ok_or_else(|| "size overflows 64 bits".to_string())
}

/// Parse a time as fio does: an integer with an optional unit, `us`/`usec`,
/// `ms`/`msec`, `s`/`sec`, `m`/`min`, `h`/`hour`, `d`/`day`; without a unit
/// it is seconds (fio's unit for runtime and ramp_time).
pub fn parse_time(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(end);
    if digits.is_empty() {
        return Err("not a time (examples: 10, 10s, 500ms, 2m)".into());
    }
    if unit.starts_with('.') {
        return Err("fractions are not supported (write 1500ms, not 1.5s)".into());
    }
    let n: u64 = digits.parse().map_err(|_| "number too large".to_string())?;
    let us_per: u64 = match unit.to_ascii_lowercase().as_str() {
        "us" | "usec" => 1,
        "ms" | "msec" => 1_000,
        "" | "s" | "sec" => 1_000_000,
        "m" | "min" => 60_000_000,
        "h" | "hour" => 3_600_000_000,
        "d" | "day" => 86_400_000_000,
        other => {
            return Err(format!(
                "unknown time unit {other:?} (use us, ms, s, m, h or d; none means seconds)"
            ));
        }
    };
    n.checked_mul(us_per)
        .map(Duration::from_micros)
        .ok_or_else(|| "time too long".to_string())
}

/// A count as fio prints it: at most four significant digits, then k, M,
/// G (powers of 1000): `987`, `9876`, `12.3k`, `150k`.
pub fn fmt_count(v: f64) -> String {
    if v < 10_000.0 {
        return format!("{v:.0}");
    }
    scaled(v, 1000.0, &["", "k", "M", "G", "T", "P"])
}

/// Bytes in binary units with four significant digits: `58.7MiB`.
pub fn fmt_bytes_bin(v: f64) -> String {
    scaled(v, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB"])
}

/// Bytes in decimal units with four significant digits: `61.5MB`.
pub fn fmt_bytes_dec(v: f64) -> String {
    scaled(v, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB"])
}

fn scaled(v: f64, step: f64, units: &[&str]) -> String {
    let (v, i) = scale(v, step, 1000.0, units);
    let unit = units.get(i).copied().unwrap_or("");
    if i == 0 && v == v.trunc() {
        format!("{v:.0}{unit}")
    } else if v < 10.0 {
        format!("{v:.2}{unit}")
    } else if v < 100.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_fio() {
        assert_eq!(parse_size("4096", 1024), Ok(4096));
        assert_eq!(parse_size("4k", 1024), Ok(4096));
        assert_eq!(parse_size("4K", 1024), Ok(4096));
        assert_eq!(parse_size("4kb", 1024), Ok(4096));
        assert_eq!(parse_size("1m", 1024), Ok(1 << 20));
        assert_eq!(parse_size("1g", 1024), Ok(1 << 30));
        assert_eq!(parse_size("2T", 1024), Ok(2 << 40));
        assert_eq!(parse_size("0x2000", 1024), Ok(8192));
        assert_eq!(parse_size("4096b", 1024), Ok(4096));
        // fio's compatibility mode: IEC suffixes are powers of 1000 ...
        assert_eq!(parse_size("8KiB", 1024), Ok(8000));
        assert_eq!(parse_size("1MiB", 1024), Ok(1_000_000));
        // ... and kb_base=1000 swaps the two.
        assert_eq!(parse_size("1k", 1000), Ok(1000));
        assert_eq!(parse_size("1KiB", 1000), Ok(1024));
        assert!(parse_size("", 1024).is_err());
        assert!(parse_size("k", 1024).is_err());
        assert!(parse_size("1.5m", 1024).is_err());
        assert!(parse_size("4q", 1024).is_err());
        assert!(parse_size("50%", 1024).is_err());
        assert!(parse_size("99999999999p", 1024).is_err());
    }

    #[test]
    fn times_follow_fio() {
        assert_eq!(parse_time("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_time("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_time("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_time("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_time("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_time("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_time("").is_err());
        assert!(parse_time("1.5s").is_err());
        assert!(parse_time("10y").is_err());
    }

    #[test]
    fn numbers_print_like_fio() {
        assert_eq!(fmt_count(987.0), "987");
        assert_eq!(fmt_count(9876.4), "9876");
        assert_eq!(fmt_count(15021.9), "15.0k");
        assert_eq!(fmt_count(150_000.0), "150k");
        assert_eq!(fmt_count(2_500_000.0), "2.50M");
        assert_eq!(fmt_bytes_bin(61_530_021.0), "58.7MiB");
        assert_eq!(fmt_bytes_dec(61_530_021.0), "61.5MB");
        assert_eq!(fmt_bytes_bin(4096.0), "4.00KiB");
        assert_eq!(fmt_bytes_bin(512.0), "512B");
    }
}
