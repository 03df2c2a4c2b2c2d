//! Durations as written on the command line and in configs: `30s`, `5m`, `1h`, `24h`, `7d`,
//! and sums of those such as `1h30m`.

use std::time::Duration;

/// Why a duration string was refused.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The empty string.
    #[error("duration is empty: write it like 30s, 5m, 1h or 24h")]
    Empty,
    /// A number without a unit, a unit without a number, or an unknown unit.
    #[error("invalid duration {0:?}: write it like 30s, 5m, 1h, 24h or 1h30m (units s, m, h, d)")]
    Invalid(String),
    /// Larger than any duration Sigil can use.
    #[error("duration {0:?} is too large")]
    TooLarge(String),
}

/// Parses `30s`, `5m`, `1h`, `24h`, `7d` or a sum of such terms (`1h30m`).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(input.to_owned());
    let mut total: u64 = 0;
    let mut rest = input;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let (number, tail) = rest.split_at(digits);
        let number: u64 = number
            .parse()
            .map_err(|_| DurationError::TooLarge(input.to_owned()))?;
        let unit_seconds = match tail.as_bytes().first() {
            Some(b's') => 1,
            Some(b'm') => 60,
            Some(b'h') => 3600,
            Some(b'd') => 86_400,
            _ => return Err(invalid()),
        };
        total = number
            .checked_mul(unit_seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| DurationError::TooLarge(input.to_owned()))?;
        rest = &tail[1..];
    }
    Ok(Duration::from_secs(total))
}

/// Writes a duration in the shortest form [`parse_duration`] reads back (`90m` → `1h30m`);
/// fractions of a second are dropped.
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&(seconds / size).to_string());
            out.push_str(unit);
            seconds %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        let cases = [
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("24h", 86_400),
            ("7d", 604_800),
            ("1h30m", 5400),
            ("0s", 0),
        ];
        for (text, seconds) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn bad_durations_are_refused_by_name() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        for bad in ["5", "m", "1x", "-1s", "1.5h", " 1h", "1h ", "1H", "h1"] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError::Invalid(bad.into())),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::TooLarge(_))
        ));
        assert!(matches!(
            parse_duration("999999999999999999d"),
            Err(DurationError::TooLarge(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn printing_then_parsing_gives_the_same_duration(seconds in 0u64..10_000_000_000) {
            let d = Duration::from_secs(seconds);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
