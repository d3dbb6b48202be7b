//! Latency histograms: hdrhistogram at 1% resolution, zeros counted apart.

use hdrhistogram::Histogram;

/// Latency histogram in microseconds, 2 significant digits (1% resolution).
/// Zeros (most stages of most requests: no accept wait on a reused
/// connection, a request read in one go) are only counted.
pub struct Hist {
    zeros: u64,
    nonzero: Histogram<u32>,
}

impl Hist {
    pub fn new() -> Self {
        // Auto-resizing from a small range: memory follows the largest value seen.
        let nonzero =
            Histogram::new(2).unwrap_or_else(|_| unreachable!("2 significant figures is valid"));
        Hist { zeros: 0, nonzero }
    }

    pub fn record(&mut self, us: u64) {
        self.record_n(us, 1);
    }

    /// Records `us` as `n` values: a request that stands for `n`, traced
    /// while the overhead budget traced one connection in `n`.
    pub fn record_n(&mut self, us: u64, n: u64) {
        if us == 0 {
            self.zeros += n;
        } else {
            // Saturates at the counter's limit rather than failing.
            let _ = self
                .nonzero
                .record_n(us, u32::try_from(n).unwrap_or(u32::MAX));
        }
    }

    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.zeros + self.nonzero.len();
        let rank = (q * n as f64).ceil() as u64;
        if rank <= self.zeros || self.nonzero.is_empty() {
            return 0;
        }
        let q_nonzero = (rank - self.zeros) as f64 / self.nonzero.len() as f64;
        self.nonzero.value_at_quantile(q_nonzero.min(1.0))
    }

    pub fn max(&self) -> u64 {
        self.nonzero.max()
    }
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}
