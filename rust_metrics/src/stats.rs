//! Streaming sums and moments, accurate in f64 for tensors of hundreds of millions of entries.

/// Count, mean and sum of squared deviations; merged with Chan et al.'s pairwise update so
/// that moments of many tensors combine without catastrophic cancellation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    /// Number of values.
    pub count: u64,
    /// Their mean (0 when empty; see [`Moments::mean`]).
    pub mean: f64,
    /// Their sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    /// Two-pass moments of a slice.
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Moments::default();
        }
        let n = values.len() as f64;
        let mean = sum(values) / n;
        let m2 = sum_map(values, |x| (x - mean) * (x - mean));
        Moments { count: values.len() as u64, mean, m2 }
    }

    /// The moments of the values of `self` and `other` together.
    pub fn merge(self, other: Moments) -> Moments {
        if self.count == 0 {
            return other;
        }
        if other.count == 0 {
            return self;
        }
        let count = self.count + other.count;
        let (na, nb, n) = (self.count as f64, other.count as f64, count as f64);
        let delta = other.mean - self.mean;
        Moments {
            count,
            mean: self.mean + delta * nb / n,
            m2: self.m2 + other.m2 + delta * delta * na * nb / n,
        }
    }

    /// Mean, or NaN when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.mean }
    }

    /// Population variance (no Bessel correction), or NaN when empty.
    pub fn variance(&self) -> f64 {
        if self.count == 0 { f64::NAN } else { self.m2 / self.count as f64 }
    }
}

const LANES: usize = 8;

/// Sum with several independent accumulators over blocks (faster and more accurate than a
/// single running sum; error grows like log of the length rather than the length).
pub fn sum(values: &[f64]) -> f64 {
    sum_map(values, |x| x)
}

/// Σ f(x) with the same blocked accumulation as [`sum`].
pub fn sum_map(values: &[f64], f: impl Fn(f64) -> f64) -> f64 {
    const BLOCK: usize = 1024;
    let mut total = 0.0;
    for block in values.chunks(BLOCK) {
        let mut acc = [0.0f64; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                acc[i] += f(c[i]);
            }
        }
        let mut s: f64 = chunks.remainder().iter().map(|&x| f(x)).sum();
        s += acc.iter().sum::<f64>();
        total += s;
    }
    total
}

/// Mean of the finite-or-not values `xs`; NaN when there are none.
pub fn mean_of(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (mut s, mut n) = (0.0, 0usize);
    for x in xs {
        s += x;
        n += 1;
    }
    if n == 0 { f64::NAN } else { s / n as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_match_direct_formulas() {
        let xs: Vec<f64> = (0..1001).map(|i| (i as f64 * 0.37).sin() + 1e6).collect();
        let m = Moments::of(&xs);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!((m.mean() - mean).abs() < 1e-9);
        assert!((m.variance() - var).abs() / var < 1e-9);
    }

    #[test]
    fn merging_equals_moments_of_the_concatenation() {
        let a: Vec<f64> = (0..313).map(|i| (i as f64).cos()).collect();
        let b: Vec<f64> = (0..57).map(|i| 3.0 + (i as f64).sin()).collect();
        let merged = Moments::of(&a).merge(Moments::of(&b)).merge(Moments::default());
        let all: Vec<f64> = a.iter().chain(&b).copied().collect();
        let direct = Moments::of(&all);
        assert_eq!(merged.count, direct.count);
        assert!((merged.mean - direct.mean).abs() < 1e-12);
        assert!((merged.variance() - direct.variance()).abs() < 1e-12);
    }

    #[test]
    fn empty_moments_are_nan() {
        assert!(Moments::default().mean().is_nan());
        assert!(Moments::default().variance().is_nan());
        assert!(mean_of(std::iter::empty()).is_nan());
    }

    #[test]
    fn blocked_sum_is_exact_on_integers() {
        let xs: Vec<f64> = (1..=10_000).map(|i| i as f64).collect();
        assert_eq!(sum(&xs), 50_005_000.0);
        assert_eq!(sum_map(&xs[..3], |x| x * x), 14.0);
    }
}
