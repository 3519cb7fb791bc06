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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(jiff::Timestamp);

/// The shape an RFC 3339 timestamp must have, for the JSON Schema; the
/// calendar (no 31 February) is checked too.
#[cfg(feature = "schema")]
pub(crate) const TIMESTAMP_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$";

impl Timestamp {
    /// The instant `ms` milliseconds after the Unix epoch, or `None` outside
    /// the years 1..=9999.
    pub fn from_unix_ms(ms: i64) -> Option<Self> {
        jiff::Timestamp::from_millisecond(ms).ok().map(Self)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_unix_ms(self) -> i64 {
        self.0.as_millisecond()
    }
}

impl From<jiff::Timestamp> for Timestamp {
    fn from(ts: jiff::Timestamp) -> Self {
        Self(ts)
    }
}

impl From<Timestamp> for jiff::Timestamp {
    fn from(ts: Timestamp) -> Self {
        ts.0
    }
}

impl FromStr for Timestamp {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidValue("must be an RFC 3339 date-time such as 2026-11-22T10:15:30.250Z".into());
        if !has_rfc3339_shape(s) {
            return Err(invalid());
        }
        // jiff reads a wider grammar (lowercase, spaces, ISO 8601 forms); the
        // shape check above keeps it to RFC 3339, jiff checks the calendar.
        jiff::Timestamp::from_str(s).map(Self).map_err(|_| invalid())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}", self.0)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:.3}", self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
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
    fn milliseconds_round_trip() {
        let ts = Timestamp::from_unix_ms(1_795_342_530_250).expect("in range");
        assert_eq!(ts.to_string(), "2026-11-22T10:15:30.250Z");
        assert_eq!(ts.as_unix_ms(), 1_795_342_530_250);
        let whole = Timestamp::from_unix_ms(1_795_342_530_000).expect("in range");
        assert_eq!(whole.to_string(), "2026-11-22T10:15:30.000Z");
    }
}
