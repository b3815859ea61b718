//! Durations as whole units for logs, STATS and wire fields. `Duration`
//! counts in `u128`; every duration here is far below `u64::MAX` of its
//! unit (584 million years of microseconds), so saturating is only a
//! guard, never a visible change.

use std::time::Duration;

/// Whole milliseconds in `d`, saturating at `u64::MAX`.
#[must_use]
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whole microseconds in `d`, saturating at `u64::MAX`.
#[must_use]
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_units_saturate() {
        assert_eq!(millis(Duration::from_micros(2_999)), 2);
        assert_eq!(micros(Duration::from_nanos(1_999)), 1);
        assert_eq!(micros(Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
