//! Units and their printing, shared by every layer: nanoseconds to
//! microseconds, short human durations, RFC 3339 times.

use std::time::SystemTime;

/// Nanoseconds to whole microseconds.
pub fn us(ns: u64) -> u64 {
    ns / 1000
}

/// Microseconds as a short human duration: `850µs`, `20.1ms`, `1.21s`.
pub fn duration(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        1_000..=9_999 => format!("{:.2}ms", us as f64 / 1e3),
        10_000..=999_999 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// `2026-11-28T12:03:28.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short_and_readable() {
        assert_eq!(duration(850), "850µs");
        assert_eq!(duration(1_500), "1.50ms");
        assert_eq!(duration(20_140), "20.1ms");
        assert_eq!(duration(1_210_000), "1.21s");
    }
}
