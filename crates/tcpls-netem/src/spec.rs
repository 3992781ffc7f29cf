//! Parsing of the command line's delay and loss, in the forms `tc netem`
//! takes (`30ms`, `0.2%`), so that `testbed/path.sh` passes the same text to
//! either.

use std::time::Duration;

use crate::Error;

/// A delay such as `30ms`, `1.5ms`, `200us`, `1s`; `0` means none. Plain
/// numbers without a unit are refused: `30` could be seconds or
/// milliseconds, and guessing wrong is a silent thousandfold error.
pub fn parse_delay(s: &str) -> Result<Duration, Error> {
    let bad = || Error::Spec(format!("delay {s:?}: expected e.g. 30ms, 1.5ms, 200us, 1s"));
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        _ => return Err(bad()),
    };
    let secs = value * scale;
    // Beyond an hour is a typo, not a path.
    if !secs.is_finite() || !(0.0..=3600.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A loss probability written as a percentage, `0.2%` or `0.2` (netem's
/// convention: a bare number is a percentage too). Returns a fraction in
/// `[0, 1]`.
pub fn parse_loss(s: &str) -> Result<f64, Error> {
    let bad = || Error::Spec(format!("loss {s:?}: expected a percentage, e.g. 0.2%"));
    let s = s.trim();
    let num = s.strip_suffix('%').unwrap_or(s);
    let pct: f64 = num.parse().map_err(|_| bad())?;
    if !(0.0..=100.0).contains(&pct) {
        return Err(bad());
    }
    Ok(pct / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        assert_eq!(parse_delay("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_delay("30ms").unwrap(), Duration::from_millis(30));
        assert_eq!(parse_delay("1.5ms").unwrap(), Duration::from_micros(1500));
        assert_eq!(parse_delay("200us").unwrap(), Duration::from_micros(200));
        assert_eq!(parse_delay("2s").unwrap(), Duration::from_secs(2));
        for bad in ["30", "ms", "-1ms", "30 ms", "1h", "1e9s", ""] {
            assert!(parse_delay(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn losses() {
        assert_eq!(parse_loss("0").unwrap(), 0.0);
        assert!((parse_loss("0.2%").unwrap() - 0.002).abs() < 1e-12);
        assert!((parse_loss("1").unwrap() - 0.01).abs() < 1e-12);
        assert_eq!(parse_loss("100%").unwrap(), 1.0);
        for bad in ["101%", "-1%", "x", "%"] {
            assert!(parse_loss(bad).is_err(), "{bad}");
        }
    }
}
