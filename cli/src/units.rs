//! Human units on the command line, turned into the API's integers: CPU in millicores,
//! memory in MiB, GPUs, durations in seconds. Every bound is the server's own
//! ([`MAX_RESOURCE`]), so a value the CLI accepts is never refused for its size.

use berth::domain::resources::MAX_RESOURCE;

/// `1.5` or `1500m` → 1500 millicores; `2` → 2000.
pub fn cpu(s: &str) -> Result<i64, String> {
    let (number, per_unit, unit) = match s.strip_suffix('m') {
        Some(n) => (n, 1, "millicore"),
        None => (s, 1000, "core"),
    };
    let millis = scaled(number, per_unit, 1).ok_or_else(|| {
        format!("'{s}' is not a CPU amount: use cores (1.5) or millicores (1500m)")
    })?;
    let millis = millis.ok_or_else(|| format!("'{s}' is finer than a millicore ({unit}s)"))?;
    bounded(millis, s, "millicores")
}

/// `512Mi`, `4Gi`, `1.5Gi`, `1Ti` (also `GiB`) → MiB. A plain number is refused: Kubernetes
/// reads it as bytes and Berth's API as MiB, so the unit must be said.
pub fn memory(s: &str) -> Result<i64, String> {
    let t = s.strip_suffix('B').unwrap_or(s);
    let split = t
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("'{s}' needs a unit: Mi, Gi or Ti (for example 512Mi or 4Gi)"))?;
    let (number, unit) = t.split_at(split);
    // (numerator, denominator) of one unit in MiB.
    let (num, den) = match unit {
        "Ki" => (1, 1024),
        "Mi" => (1, 1),
        "Gi" => (1024, 1),
        "Ti" => (1024 * 1024, 1),
        "Pi" => (1024 * 1024 * 1024, 1),
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit '{unit}': use Ki, Mi, Gi, Ti or Pi (binary units)"
            ))
        }
    };
    let mib = scaled(number, num, den)
        .ok_or_else(|| format!("'{s}' is not a memory amount (for example 512Mi or 4Gi)"))?
        .ok_or_else(|| format!("'{s}' is not a whole number of MiB"))?;
    bounded(mib, s, "MiB")
}

/// A whole number of GPUs.
pub fn gpus(s: &str) -> Result<i64, String> {
    let n = scaled(s, 1, 1)
        .flatten()
        .filter(|_| !s.contains('.'))
        .ok_or_else(|| format!("'{s}' is not a whole number of GPUs"))?;
    bounded(n, s, "GPUs")
}

/// `90s`, `15m`, `2h`, `7d`, `1h30m` → whole seconds, at least one.
pub fn seconds(s: &str) -> Result<i64, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration such as 90s, 2h or 7d ({e})"))?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return Err(format!(
            "'{s}' must be a whole number of seconds, at least 1s"
        ));
    }
    i64::try_from(d.as_secs()).map_err(|_| format!("'{s}' is too long"))
}

fn bounded(v: i128, s: &str, unit: &str) -> Result<i64, String> {
    if v < MAX_RESOURCE as i128 {
        Ok(v as i64)
    } else {
        Err(format!(
            "'{s}' is too large: at most {} {unit}",
            MAX_RESOURCE - 1
        ))
    }
}

/// `number × num / den` for a non-negative decimal `number` (digits, at most one point):
/// `None` when it is not such a number, `Some(None)` when the result is not whole.
/// Exact: no floating point, and big inputs saturate instead of wrapping (then `bounded`
/// refuses them).
fn scaled(number: &str, num: i128, den: i128) -> Option<Option<i128>> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    // `1.000…0` is exactly 1, however many zeros.
    let frac = frac.trim_end_matches('0');
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if number == "." || number.is_empty() || !digits(int) || !digits(frac) {
        return None;
    }
    if number.ends_with('.') {
        return None;
    }
    let mut value: i128 = 0;
    let mut scale: i128 = 1;
    for b in int.bytes().chain(frac.bytes()) {
        value = value
            .saturating_mul(10)
            .saturating_add(i128::from(b - b'0'));
    }
    for _ in 0..frac.len().min(30) {
        scale = scale.saturating_mul(10);
    }
    if frac.len() > 30 {
        return Some(None);
    }
    let top = value.saturating_mul(num);
    let bottom = scale.saturating_mul(den);
    // A saturated value is far beyond any bound: let `bounded` call it too large.
    if top == i128::MAX {
        return Some(Some(i128::MAX));
    }
    if top % bottom == 0 {
        Some(Some(top / bottom))
    } else {
        Some(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_cores_or_millicores() {
        assert_eq!(cpu("1.5"), Ok(1500));
        assert_eq!(cpu("1500m"), Ok(1500));
        assert_eq!(cpu("2"), Ok(2000));
        assert_eq!(cpu("0.25"), Ok(250));
        assert_eq!(cpu(".5"), Ok(500));
        assert_eq!(cpu("0"), Ok(0));
        assert_eq!(cpu("64"), Ok(64_000));
        for bad in [
            "1.5.5", "-1", "1,5", "", "m", "1.", "1e3", " 1", "1.5mm", "abc", "+1",
        ] {
            assert!(cpu(bad).is_err(), "{bad:?} accepted");
        }
        assert!(cpu("0.0005")
            .unwrap_err()
            .contains("finer than a millicore"));
        assert!(cpu("1.5m").unwrap_err().contains("finer"));
    }

    #[test]
    fn memory_in_binary_units() {
        assert_eq!(memory("512Mi"), Ok(512));
        assert_eq!(memory("4Gi"), Ok(4096));
        assert_eq!(memory("4GiB"), Ok(4096));
        assert_eq!(memory("1.5Gi"), Ok(1536));
        assert_eq!(memory("1Ti"), Ok(1_048_576));
        assert_eq!(memory("2048Ki"), Ok(2));
        assert!(memory("10Qi").unwrap_err().contains("unknown unit 'Qi'"));
        assert!(memory("512").unwrap_err().contains("needs a unit"));
        assert!(memory("1Ki").unwrap_err().contains("whole number of MiB"));
        assert!(memory("0.3Mi").unwrap_err().contains("whole number"));
        for bad in ["1.5.5Gi", "-1Gi", "Gi", "4G", "4gi", "4 Gi", "1e3Mi"] {
            assert!(memory(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn gpus_are_whole() {
        assert_eq!(gpus("0"), Ok(0));
        assert_eq!(gpus("8"), Ok(8));
        for bad in ["1.5", "-1", "one", "", "2.0"] {
            assert!(gpus(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn overflow_is_refused_not_wrapped() {
        let limit = MAX_RESOURCE - 1;
        assert_eq!(cpu(&format!("{limit}m")), Ok(limit));
        assert!(cpu(&format!("{MAX_RESOURCE}m"))
            .unwrap_err()
            .contains("too large"));
        assert!(cpu("1099511628").unwrap_err().contains("too large"));
        assert!(memory("1048576Ti").unwrap_err().contains("too large"));
        assert!(gpus(&MAX_RESOURCE.to_string())
            .unwrap_err()
            .contains("too large"));
        let huge = "9".repeat(80);
        assert!(cpu(&huge).unwrap_err().contains("too large"));
        assert!(memory(&format!("{huge}Pi"))
            .unwrap_err()
            .contains("too large"));
        assert_eq!(cpu(&format!("1.{}", "0".repeat(60))), Ok(1000));
        assert!(memory(&format!("{huge}Ki"))
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(seconds("90s"), Ok(90));
        assert_eq!(seconds("2h"), Ok(7200));
        assert_eq!(seconds("7d"), Ok(604_800));
        assert_eq!(seconds("1h 30m"), Ok(5400));
        for bad in ["0s", "1.5s", "500ms", "soon", "", "-1h", "7"] {
            assert!(seconds(bad).is_err(), "{bad:?} accepted");
        }
        assert!(seconds(&format!("{}d", u64::MAX)).is_err());
    }
}
