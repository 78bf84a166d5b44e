//! Exact quantiles of a small set of samples, taken the way Jepsen's `frequency-distribution` does.

use serde::Serialize;

/// Quantiles of latencies in milliseconds, at 0, 0.5, 0.95, 0.99 and 1 (Jepsen's points).
///
/// Each point is a sample, not an interpolation: the point `p` of `n` sorted samples is the one
/// at position `min(n - 1, floor(n * p))`, as in Jepsen's `frequency-distribution`. Every value
/// is `None` when there are no samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Quantiles {
    /// The number of samples.
    pub count: usize,
    /// The smallest sample (quantile 0).
    pub min: Option<f64>,
    /// The median (quantile 0.5).
    pub p50: Option<f64>,
    /// Quantile 0.95.
    pub p95: Option<f64>,
    /// Quantile 0.99.
    pub p99: Option<f64>,
    /// The largest sample (quantile 1).
    pub max: Option<f64>,
}

impl Quantiles {
    /// The quantiles of `samples`; NaNs sort last, by `f64::total_cmp`.
    pub fn of(mut samples: Vec<f64>) -> Quantiles {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let at = |point: f64| -> Option<f64> {
            if n == 0 {
                return None;
            }
            // floor(n * p), computed in f64; n is far below 2^53, so this is exact.
            let position = ((n as f64) * point).floor() as usize;
            Some(samples[position.min(n - 1)])
        };
        Quantiles {
            count: n,
            min: at(0.0),
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Nanoseconds to milliseconds.
pub fn ms(nanoseconds: u64) -> f64 {
    nanoseconds as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_samples_as_jepsen_does() {
        // Jepsen's set-full test: lost latencies 3 and 4 give {0 3, 0.5 4, 0.95 4, 0.99 4, 1 4}.
        let quantiles = Quantiles::of(vec![4.0, 3.0]);
        assert_eq!(quantiles.count, 2);
        assert_eq!(quantiles.min, Some(3.0));
        assert_eq!(quantiles.p50, Some(4.0));
        assert_eq!(quantiles.p95, Some(4.0));
        assert_eq!(quantiles.max, Some(4.0));
        let hundred = Quantiles::of((1..=100).map(f64::from).collect());
        assert_eq!(hundred.p50, Some(51.0));
        assert_eq!(hundred.p95, Some(96.0));
        assert_eq!(hundred.p99, Some(100.0));
    }

    #[test]
    fn no_samples_give_no_quantiles() {
        let quantiles = Quantiles::of(Vec::new());
        assert_eq!(quantiles.count, 0);
        assert_eq!(quantiles.p50, None);
        assert_eq!(quantiles.max, None);
    }
}
