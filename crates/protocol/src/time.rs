//! Wire timestamps: RFC 3339, written in UTC with a `Z`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::InvalidValue;

/// An instant on the wire: RFC 3339 (`2026-11-22T10:15:30.250Z`).
///
/// Read with any offset (`+02:00`) and up to nanoseconds, written in UTC with
/// a `Z` and exactly three fractional digits (milliseconds), so that written
/// timestamps have one width and sort as strings. The crate never reads a clock: the server
/// builds these from its own.
///
/// The calendar arithmetic is our own (a few lines of proleptic Gregorian
/// day counting, checked against `jiff` in the tests): the browser client
/// carries this crate, and a full date-time library would be a third of
/// its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds since the Unix epoch, within the years 0000..=9999.
    seconds: i64,
    /// Nanoseconds past `seconds`, below one billion.
    nanos: u32,
}

/// The shape an RFC 3339 timestamp must have, for the JSON Schema; the
/// calendar (no 31 February) is checked too.
#[cfg(feature = "schema")]
pub(crate) const TIMESTAMP_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$";

const SECONDS_PER_DAY: i64 = 86_400;
/// 0000-01-01T00:00:00Z, the first instant with a four-digit year.
const MIN_SECONDS: i64 = days_from_civil(0, 1, 1) * SECONDS_PER_DAY;
/// 9999-12-31T23:59:59Z, the last one.
const MAX_SECONDS: i64 = days_from_civil(9999, 12, 31) * SECONDS_PER_DAY + SECONDS_PER_DAY - 1;

impl Timestamp {
    /// The last instant a timestamp can say: 9999-12-31T23:59:59.999Z.
    pub const MAX: Self = Self { seconds: MAX_SECONDS, nanos: 999_000_000 };

    /// The instant `ms` milliseconds after the Unix epoch, or `None` outside
    /// the years 0000..=9999.
    pub fn from_unix_ms(ms: i64) -> Option<Self> {
        let seconds = ms.div_euclid(1000);
        let nanos = ms.rem_euclid(1000) as u32 * 1_000_000;
        (MIN_SECONDS..=MAX_SECONDS).contains(&seconds).then_some(Self { seconds, nanos })
    }

    /// Milliseconds since the Unix epoch (rounded down).
    pub fn as_unix_ms(self) -> i64 {
        self.seconds * 1000 + i64::from(self.nanos / 1_000_000)
    }
}

impl FromStr for Timestamp {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidValue("must be an RFC 3339 date-time such as 2026-11-22T10:15:30.250Z".into());
        if !has_rfc3339_shape(s) {
            return Err(invalid());
        }
        // The shape check made every field below a run of ASCII digits.
        let number = |range: std::ops::Range<usize>| s[range].bytes().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        let (year, month, day) = (number(0..4), number(5..7), number(8..10));
        let (hour, minute, second) = (number(11..13), number(14..16), number(17..19));
        let mut rest = &s[19..];
        let mut nanos = 0;
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
            nanos = number(20..20 + digits) * 10i64.pow(9 - digits as u32);
            rest = &fraction[digits..];
        }
        let offset = match rest.as_bytes()[0] {
            b'Z' => 0,
            sign => {
                let at = s.len() - 5;
                let (hours, minutes) = (number(at..at + 2), number(at + 3..at + 5));
                if hours > 23 || minutes > 59 {
                    return Err(invalid());
                }
                let offset = hours * 3600 + minutes * 60;
                if sign == b'-' { -offset } else { offset }
            }
        };
        let valid = (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day)
            && hour <= 23
            && minute <= 59
            && second <= 60;
        if !valid {
            return Err(invalid());
        }
        // A leap second (:60) is read as :59, as most clocks show it.
        let time = hour * 3600 + minute * 60 + second.min(59);
        let seconds = days_from_civil(year, month, day) * SECONDS_PER_DAY + time - offset;
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
            return Err(invalid());
        }
        Ok(Self { seconds, nanos: nanos as u32 })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = civil_from_days(self.seconds.div_euclid(SECONDS_PER_DAY));
        let time = self.seconds.rem_euclid(SECONDS_PER_DAY);
        let (hour, minute, second, ms) = (time / 3600, time / 60 % 60, time % 60, self.nanos / 1_000_000);
        write!(f, "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{ms:03}Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`: years in eras of 400, March-based years).
const fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` after 1970-01-01, the inverse of [`days_from_civil`].
const fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An RFC 3339 date-time; the server writes UTC with a Z.",
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, as [`TIMESTAMP_PATTERN`] says.
fn has_rfc3339_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| b.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0..4) && at(4, b'-') && digits(5..7) && at(7, b'-') && digits(8..10) && at(10, b'T'))
        || !(digits(11..13) && at(13, b':') && digits(14..16) && at(16, b':') && digits(17..19))
    {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        let fraction = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&fraction) {
            return false;
        }
        i += 1 + fraction;
    }
    match b.get(i) {
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => i + 6 == b.len() && digits(i + 1..i + 3) && at(i + 3, b':') && digits(i + 4..i + 6),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_read_with_any_offset_and_written_in_utc() {
        let ts: Timestamp = "2026-11-22T12:15:30.25+02:00".parse().expect("valid");
        assert_eq!(ts.to_string(), "2026-11-22T10:15:30.250Z");
        assert_eq!("2026-11-22T10:15:30Z".parse::<Timestamp>().map(|t| t.as_unix_ms()).ok(), Some(1_795_342_530_000));
    }

    #[test]
    fn other_shapes_and_impossible_dates_are_refused() {
        for bad in [
            "2026-11-22 10:15:30Z",
            "2026-11-22t10:15:30z",
            "2026-11-22T10:15:30",
            "2026-11-22T10:15:30.Z",
            "2026-11-22T10:15:30.1234567890Z",
            "2026-11-22T10:15:30+0200",
            "2026-02-31T10:15:30Z",
            "2026-11-22",
            "",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_calendar_knows_leap_years_and_the_edges_of_four_digit_years() {
        for (good, written) in [
            ("2024-02-29T00:00:00Z", "2024-02-29T00:00:00.000Z"),
            ("2000-02-29T23:59:59Z", "2000-02-29T23:59:59.000Z"),
            ("0000-01-01T00:00:00Z", "0000-01-01T00:00:00.000Z"),
            ("9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(good.parse::<Timestamp>().map(|t| t.to_string()).ok().as_deref(), Some(written));
        }
        for bad in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-11-00T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T10:60:00Z",
            "2026-11-22T10:15:61Z",
            "2026-11-22T10:15:30+24:00",
            "2026-11-22T10:15:30+02:60",
            "0000-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
        assert_eq!(Timestamp::from_unix_ms(i64::MAX), None);
        assert_eq!(Timestamp::from_unix_ms(i64::MIN), None);
    }

    /// The hand-written calendar agrees with jiff on instants spread over the
    /// whole range, both ways and with offsets, fractions and leap seconds.
    #[test]
    fn the_calendar_agrees_with_jiff() {
        let first = MIN_SECONDS * 1000;
        let last = 253_402_207_200_000; // jiff ends at 9999-12-30T22:00:00Z
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut samples: Vec<i64> = (0..20_000).map(|_| first + (next() % (last - first) as u64) as i64).collect();
        samples.extend([first, last, 0, -1, 951_782_400_000, 1_795_342_530_250]);
        for ms in samples {
            let ours = Timestamp::from_unix_ms(ms).expect("in range");
            let theirs = jiff::Timestamp::from_millisecond(ms).expect("in jiff's range");
            assert_eq!(ours.to_string(), format!("{theirs:.3}"), "{ms}");
            assert_eq!(ours.as_unix_ms(), ms);
            let offset = (next() % (24 * 60)) as i64 - 12 * 60;
            let zone = jiff::tz::Offset::from_seconds((offset * 60) as i32).expect("a small offset");
            let text = format!("{}", theirs.display_with_offset(zone));
            if text.len() >= 25 && !text.starts_with('-') && text.as_bytes()[4] == b'-' {
                let parsed: Timestamp = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(parsed, ours, "{text}");
            }
        }
        for text in ["2016-12-31T23:59:60Z", "2026-11-22T10:15:30.123456789+05:45", "2026-11-22T10:15:30.1-00:00"] {
            let ours: Timestamp = text.parse().expect("valid");
            let theirs: jiff::Timestamp = text.parse().expect("valid for jiff");
            assert_eq!(ours.to_string(), format!("{theirs:.3}"), "{text}");
        }
    }

    #[test]
    fn milliseconds_round_trip() {
        let ts = Timestamp::from_unix_ms(1_795_342_530_250).expect("in range");
        assert_eq!(ts.to_string(), "2026-11-22T10:15:30.250Z");
        assert_eq!(ts.as_unix_ms(), 1_795_342_530_250);
        let whole = Timestamp::from_unix_ms(1_795_342_530_000).expect("in range");
        assert_eq!(whole.to_string(), "2026-11-22T10:15:30.000Z");
    }
}
