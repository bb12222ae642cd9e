//! Time as plain milliseconds, so the core never reads a clock.

/// A point in time or a duration, in milliseconds. In production it counts
/// from the Unix epoch; in the simulator it counts from the start of the run.
pub type Millis = u64;

/// Milliseconds in one second.
pub const SECOND: Millis = 1_000;
/// Milliseconds in one minute.
pub const MINUTE: Millis = 60 * SECOND;
/// Milliseconds in one hour.
pub const HOUR: Millis = 60 * MINUTE;
/// Milliseconds in one day.
pub const DAY: Millis = 24 * HOUR;

/// The warning AWS gives before it reclaims a Spot instance: "a warning that
/// is issued two minutes before Amazon EC2 stops or terminates your Spot
/// Instance" (EC2 User Guide, Spot Instance interruption notices).
pub const SPOT_NOTICE_LEAD: Millis = 2 * MINUTE;

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days in month `m` (1–12) of year `y` (proleptic Gregorian).
fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parse an RFC 3339 time (`2026-11-24T08:22:00Z`, fractions and `±HH:MM`
/// offsets accepted; ASCII whitespace around it ignored) to Unix
/// milliseconds. Total: any other input, including non-ASCII text anywhere,
/// an impossible date, an offset beyond ±23:59 or a time before 1970, is
/// `None`, never a panic. It reads bytes only, so no index can fall inside a
/// multi-byte character.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let b = s.trim_ascii().as_bytes();
    let byte = |at: usize| b.get(at).copied();
    // `n` ASCII digits from `at` as a number; `None` if any is missing or not a digit.
    let digits = |at: usize, n: usize| -> Option<i64> {
        b.get(at..at.checked_add(n)?)?
            .iter()
            .try_fold(0i64, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0')))
    };
    if byte(4) != Some(b'-')
        || byte(7) != Some(b'-')
        || !matches!(byte(10), Some(b'T' | b't' | b' '))
        || byte(13) != Some(b':')
        || byte(16) != Some(b':')
    {
        return None;
    }
    let (y, mo, d) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (h, mi, sec) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=days_in_month(y, mo)).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut at = 19;
    let mut millis = 0i64;
    if byte(at) == Some(b'.') {
        at += 1;
        let first = at;
        while let Some(c) = byte(at).filter(u8::is_ascii_digit) {
            // Milliseconds: the first three digits count, the rest are cut off.
            if at - first < 3 {
                millis = millis * 10 + i64::from(c - b'0');
            }
            at += 1;
        }
        match at - first {
            0 => return None,
            1 => millis *= 100,
            2 => millis *= 10,
            _ => {}
        }
    }
    let offset_s = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hh, mm) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            if hh > 23 || mm > 59 {
                return None;
            }
            let offset = hh * 3600 + mm * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    u64::try_from(secs * 1000 + millis).ok()
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(ms: Millis) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_junk() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-24T08:22:00Z"), Some(1_795_508_520_000));
        assert_eq!(parse_rfc3339("2026-11-24T08:22:00.5Z"), Some(1_795_508_520_500));
        assert_eq!(parse_rfc3339("2026-11-24T09:22:00+01:00"), Some(1_795_508_520_000));
        for t in [0, 951_782_400_000, 1_795_508_520_000] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        for junk in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-24 08:22",
            "2026-11-24T08:22:00",
            "2026-11-24T08:22:00.Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-24T08:22:00+24:00",
            "2026-11-24T08:22:00+01:60",
            "2026-11-24T08:22:00+-1:00",
            "2026-11-24T08:22:00++1:00",
            "+026-11-24T08:22:00Z",
            "1969-12-31T23:59:59Z",
            "2026-11-24T08:22:00ZZ",
        ] {
            assert_eq!(parse_rfc3339(junk), None, "{junk}");
        }
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
        assert_eq!(parse_rfc3339("2026-11-24T08:22:00.123456789Z"), Some(1_795_508_520_123));
        assert_eq!(parse_rfc3339("2026-11-24T08:22:00.12Z"), Some(1_795_508_520_120));
        assert_eq!(parse_rfc3339("2026-11-24T03:52:00-04:30"), Some(1_795_508_520_000));
    }

    /// A multi-byte character where the offset, a field or the fraction is
    /// expected is junk, not a panic ("byte index 3 is not a char boundary").
    #[test]
    fn multi_byte_characters_are_junk() {
        for junk in [
            "2026-11-24T08:22:00+€ab",
            "2026-11-24T08:22:00+0€:0",
            "2026-11-24T08:22:00+01:€",
            "2026-11-24T08:22:00.€Z",
            "2026-11-24T08:22:0€Z",
            "2026-11-24T08:2€:00Z",
            "2026-11-24T€:22:00Z",
            "2026-11-2€T08:22:00Z",
            "2€26-11-24T08:22:00Z",
            "2026-11-24T08:22:00Z€",
            "€€€€€€€€€€€€€€€€€€€€€€€€",
            "２０２６-11-24T08:22:00Z",
            "2026-11-24T08:22:00Z\u{a0}",
            "\u{a0}2026-11-24T08:22:00Z",
        ] {
            assert_eq!(parse_rfc3339(junk), None, "{junk}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// A valid time to mutate: `2026-11-24T08:22:00.5+01:00`.
        const VALID: &str = "2026-11-24T08:22:00.5+01:00";

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            /// Any string at all: an answer, never a panic.
            #[test]
            fn any_string_is_answered(s in any::<String>()) {
                let _ = parse_rfc3339(&s);
            }

            /// Strings shaped like a time, each field possibly holding a
            /// multi-byte character: never a panic, and a time only for ASCII.
            #[test]
            fn time_shaped_strings_are_answered(
                s in "[0-9€]{4}-[0-9é]{2}-[0-9€]{2}[Tt ][0-9€]{2}:[0-9€]{2}:[0-9€]{2}(\\.[0-9€]{0,4})?(Z|[+\\-€][0-9€]{2}:[0-9€]{2}|[+\\-][0-9€:ab]{1,6}|\\PC{0,3})"
            ) {
                if parse_rfc3339(&s).is_some() {
                    prop_assert!(s.is_ascii(), "{s:?}");
                }
            }

            /// A valid time with one character replaced or inserted anywhere:
            /// never a panic; a non-ASCII character is never accepted.
            #[test]
            fn a_valid_time_with_one_character_changed(at in 0usize..VALID.len() + 1, c in any::<char>(), insert in any::<bool>()) {
                let mut s = VALID.to_string();
                if insert || at == s.len() {
                    s.insert(at, c);
                } else {
                    s.replace_range(at..at + 1, c.encode_utf8(&mut [0; 4]));
                }
                let parsed = parse_rfc3339(&s);
                if !c.is_ascii() {
                    prop_assert_eq!(parsed, None, "{:?}", s);
                }
            }

            /// Every time from 1970 to 9999 survives formatting and parsing
            /// (to the second, which is what the format keeps).
            #[test]
            fn format_then_parse_is_the_identity(ms in 0u64..253_402_300_800_000) {
                prop_assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Some(ms / 1000 * 1000));
            }

            /// An offset moves the time by exactly its length.
            #[test]
            fn offsets_shift_by_their_length(ms in 86_400_000u64..253_402_214_400_000, hh in 0u64..24, mm in 0u64..60, east in any::<bool>()) {
                let utc = format_rfc3339(ms);
                let offset = (hh * 3600 + mm * 60) * 1000;
                let local_ms = if east { ms + offset } else { ms - offset };
                let local = format_rfc3339(local_ms);
                let sign = if east { '+' } else { '-' };
                let with_offset = format!("{}{sign}{hh:02}:{mm:02}", &local[..19]);
                prop_assert_eq!(parse_rfc3339(&with_offset), parse_rfc3339(&utc), "{} vs {}", with_offset, utc);
            }

            /// Whatever follows an accepted time makes it junk.
            #[test]
            fn trailing_text_is_refused(ms in 0u64..253_402_300_800_000, tail in "[^ \\t\\n\\r\\x0B\\x0C]\\PC{0,4}") {
                let s = format!("{}{tail}", format_rfc3339(ms));
                prop_assert_eq!(parse_rfc3339(&s), None, "{:?}", s);
            }
        }
    }
}
