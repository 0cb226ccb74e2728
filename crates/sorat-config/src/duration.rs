//! Durations as people write them: `90s`, `5m`, `1h30m`, `1.5h`, `250ms`.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{text}`: {reason}")]
pub struct DurationError {
    /// The text as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses a duration: one or more `<number><unit>` parts with units `ms`, `s`, `m`, `h`, `d`,
/// `w` (Prometheus's and Go's spellings). A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        text: text.to_string(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(error("it is empty; write e.g. `90s`, `5m` or `1h30m`"));
    }
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_ms: f64 = 0.0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(error("expected a number before each unit, as in `1h30m`"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| error("the number is malformed"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "d" => 86_400_000.0,
            "w" => 604_800_000.0,
            "" => return Err(error("a unit is missing (ms, s, m, h, d or w)")),
            _ => return Err(error("unknown unit; use ms, s, m, h, d or w")),
        };
        rest = &rest[unit_len..];
        total_ms += number * unit_ms;
    }
    if !total_ms.is_finite() || total_ms > MAX_MS {
        return Err(error("it is too long"));
    }
    Ok(Duration::from_micros((total_ms * 1000.0).round() as u64))
}

/// The longest duration Sorat accepts, in milliseconds (about 31 700 years): long enough
/// to mean "no limit", short enough that any instant plus it stays representable.
const MAX_MS: f64 = 1e15;

/// A count of minutes (`timeout-minutes: 7.5`) as a duration; `None` unless it is a
/// positive number no longer than the longest duration Sorat accepts.
pub fn from_minutes(minutes: f64) -> Option<Duration> {
    let ms = minutes * 60_000.0;
    if ms.is_finite() && ms > 0.0 && ms <= MAX_MS {
        Some(Duration::from_micros((ms * 1000.0).round() as u64))
    } else {
        None
    }
}

/// Formats a duration compactly for people: `1h30m`, `42s`, `1.25s`, `350ms`.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let total_secs = duration.as_secs();
    if total_secs < 60 {
        let tenths = (duration.as_millis() % 1000) / 100;
        return if tenths == 0 {
            format!("{total_secs}s")
        } else {
            format!("{total_secs}.{tenths}s")
        };
    }
    let (hours, minutes, seconds) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_spellings() {
        let cases = [
            ("90s", 90_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("250ms", 250),
            ("1d", 86_400_000),
            ("0", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text).map(|d| d.as_millis()),
                Ok(ms),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for text in ["", "5", "m", "5x", "1h 30", "1..2s", "-5s"] {
            assert!(parse_duration(text).is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_duration(Duration::from_millis(350)), "350ms");
        assert_eq!(format_duration(Duration::from_millis(1250)), "1.2s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,20}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn formatted_whole_seconds_parse_back(secs in 1u64..1_000_000) {
            let formatted = format_duration(Duration::from_secs(secs));
            proptest::prop_assert_eq!(parse_duration(&formatted).map(|d| d.as_secs()), Ok(secs));
        }
    }
}
