//! Human durations as written in the configuration: `250ms`, `5s`, `2m`, `1h`.

use std::time::Duration;

/// Parses `250ms`, `5s`, `2m`, `1h` (also `1d`). A bare number is seconds.
pub fn parse_duration(src: &str) -> Result<Duration, String> {
    let s = src.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{src}` is not a duration (write e.g. 250ms, 5s, 2m, 1h)"))?;
    let millis = match unit.trim() {
        "ms" => value,
        "" | "s" => value * 1_000.0,
        "m" => value * 60_000.0,
        "h" => value * 3_600_000.0,
        "d" => value * 86_400_000.0,
        other => {
            return Err(format!(
                "`{src}` has an unknown unit `{other}` (use ms, s, m, h)"
            ))
        }
    };
    if !millis.is_finite() || millis < 0.0 {
        return Err(format!("`{src}` is not a valid duration"));
    }
    Ok(Duration::from_millis(millis.round() as u64))
}

/// Parses a comma-separated list of durations, such as the retry schedule.
pub fn parse_schedule(src: &str) -> Result<Vec<Duration>, String> {
    if src.trim().is_empty() || src.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    src.split(',').map(parse_duration).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "abc", "5x", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn parses_the_default_schedule() {
        let s = parse_schedule("5s,30s,2m,10m,30m,1h,3h,6h").unwrap();
        assert_eq!(s.len(), 8);
        assert_eq!(s[7], Duration::from_secs(6 * 3600));
    }
}
