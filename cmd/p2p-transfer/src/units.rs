//! The one way sizes and speeds are shown, in the bar, the result lines and the shells: IEC
//! binary units (1 KiB = 1024 bytes, then MiB, GiB, TiB), as indicatif writes them and the web
//! page does too. A speed is of the bytes fetched in this run: bytes resumed from a `.part`
//! file or found already in place were not transferred, so they don't count.

use std::time::Duration;

use indicatif::HumanBytes;

/// `1.50 MiB`, `512 B`.
pub fn size(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}

/// `12.34 MiB/s`.
pub fn speed(bytes_per_second: f64) -> String {
    format!("{}/s", size(bytes_per_second.max(0.0) as u64))
}

/// The speed of `bytes` moved in `elapsed` (a run too short to time counts as a millisecond).
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    speed(bytes as f64 / elapsed.as_secs_f64().max(1e-3))
}

/// What a finished file's result line says in brackets: the speed of this run's bytes, and
/// how much an earlier run had left in place, if anything: `(12.34 MiB/s)`, or
/// `(1.00 MiB fetched at 12.34 MiB/s, 3.00 MiB resumed)`.
pub fn transfer_summary(fetched: u64, resumed: u64, elapsed: Duration) -> String {
    if resumed == 0 {
        format!("({})", rate(fetched, elapsed))
    } else {
        format!(
            "({} fetched at {}, {} resumed)",
            size(fetched),
            rate(fetched, elapsed),
            size(resumed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_binary() {
        assert_eq!(size(3 * 1024 * 1024), "3.00 MiB");
        assert_eq!(speed(1024.0 * 1024.0 * 1.5), "1.50 MiB/s");
        assert_eq!(rate(10 << 20, Duration::from_secs(2)), "5.00 MiB/s");
        assert_eq!(speed(-1.0), "0 B/s");
    }

    #[test]
    fn a_resume_counts_only_what_this_run_fetched() {
        assert_eq!(
            transfer_summary(4 << 20, 0, Duration::from_secs(1)),
            "(4.00 MiB/s)"
        );
        assert_eq!(
            transfer_summary(1 << 20, 3 << 20, Duration::from_secs(1)),
            "(1.00 MiB fetched at 1.00 MiB/s, 3.00 MiB resumed)"
        );
    }
}
