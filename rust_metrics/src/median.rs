//! Exact median of values spread over many tensors, without gathering them all.
//!
//! Values are mapped to order-preserving 64-bit keys and the middle ranks are found by
//! radix selection: a histogram of the top 16 key bits (built during the statistics pass),
//! then, per pass over the data, either the keys of the one bin that holds the rank are
//! collected and selected in memory (when few enough) or the next 16 bits are histogrammed.
//! Memory stays bounded by [`COLLECT_LIMIT`] keys however large the checkpoint. A group of
//! at most [`KEEP_KEYS`] values (a small model's) keeps its keys instead of a histogram and
//! selects the middle ranks from them: clearing and scanning 64K bins would cost more than
//! the model's other statistics (a seed sweep computes them at every checkpoint step).

use rayon::prelude::*;

use crate::error::Result;

/// Bits of the key resolved by each histogram pass (the top digit).
pub const DIGIT_BITS: u32 = 16;
/// Bins of a histogram over one digit.
pub const BINS: usize = 1 << DIGIT_BITS;
/// Most keys gathered in memory at once (32 MiB).
pub const COLLECT_LIMIT: u64 = 1 << 22;
/// Most values whose keys a [`TopHistogram`] keeps before it counts them into bins (64 KiB).
pub const KEEP_KEYS: usize = 1 << 13;

/// Order-preserving key: `a < b` ⇔ `key(a) < key(b)` for non-NaN floats.
#[inline]
pub fn key(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits >> 63 == 1 { !bits } else { bits | (1 << 63) }
}

/// The float whose [`key`] is `key` (the inverse of [`key`]).
#[inline]
pub fn value(key: u64) -> f64 {
    if key >> 63 == 1 { f64::from_bits(key & !(1 << 63)) } else { f64::from_bits(!key) }
}

/// Histogram of the top 16 key bits of some values; while there are at most `limit` of
/// them, their keys themselves.
#[derive(Clone)]
pub struct TopHistogram {
    limit: usize,
    keys: Vec<u64>,
    bins: Option<Vec<u64>>,
}

impl TopHistogram {
    /// An empty histogram that keeps up to [`KEEP_KEYS`] keys.
    pub fn new() -> Self {
        Self::keeping(KEEP_KEYS)
    }

    /// An empty histogram that keeps up to `limit` keys (0: a histogram from the start).
    pub fn keeping(limit: usize) -> Self {
        TopHistogram { limit, keys: Vec::new(), bins: None }
    }

    /// Count `values` (non-NaN).
    pub fn add(&mut self, values: &[f64]) {
        if self.bins.is_none() && self.keys.len() + values.len() <= self.limit {
            self.keys.extend(values.iter().map(|&x| key(x)));
            return;
        }
        let bins = self.binned();
        for &x in values {
            bins[(key(x) >> (64 - DIGIT_BITS)) as usize] += 1;
        }
    }

    /// The bins, made from the kept keys if there were none yet.
    fn binned(&mut self) -> &mut Vec<u64> {
        let keys = &mut self.keys;
        self.bins.get_or_insert_with(|| {
            let mut bins = vec![0; BINS];
            for k in keys.drain(..) {
                bins[(k >> (64 - DIGIT_BITS)) as usize] += 1;
            }
            bins
        })
    }

    /// The values of both.
    pub fn merge(mut self, other: &TopHistogram) -> Self {
        if self.bins.is_none() && other.bins.is_none() && self.keys.len() + other.keys.len() <= self.limit {
            self.keys.extend_from_slice(&other.keys);
            return self;
        }
        let bins = self.binned();
        match &other.bins {
            Some(theirs) => bins.iter_mut().zip(theirs).for_each(|(a, b)| *a += b),
            None => other.keys.iter().for_each(|k| bins[(k >> (64 - DIGIT_BITS)) as usize] += 1),
        }
        self
    }

    /// Number of values counted.
    pub fn total(&self) -> u64 {
        match &self.bins {
            Some(bins) => bins.iter().sum(),
            None => self.keys.len() as u64,
        }
    }
}

impl Default for TopHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Data that can be scanned again, in independent parts (tensors) scanned in parallel.
pub trait Rescan: Sync {
    /// Number of parts.
    fn parts(&self) -> usize;
    /// Call `f` on decoded chunks of part `i`; an error (unreadable data, cancellation)
    /// ends the search.
    fn scan(&self, i: usize, f: &mut dyn FnMut(&[f64])) -> Result<()>;
}

/// State of the search for one rank: the key prefix found so far and the rank within it.
#[derive(Clone, Copy, Debug)]
struct Search {
    prefix: u64,
    bits: u32,
    rank: u64,
    count: u64,
    found: Option<f64>,
}

impl Search {
    fn matches(&self, k: u64) -> bool {
        self.bits == 0 || k >> (64 - self.bits) == self.prefix
    }

    /// Narrow to the bin holding `rank` in a histogram of the next digit.
    fn descend(&mut self, hist: &[u64]) {
        let mut below = 0;
        for (digit, &c) in hist.iter().enumerate() {
            if self.rank < below + c {
                self.prefix = (self.prefix << DIGIT_BITS) | digit as u64;
                self.bits += DIGIT_BITS;
                self.rank -= below;
                self.count = c;
                return;
            }
            below += c;
        }
        unreachable!("rank beyond histogram total");
    }
}

enum Pass {
    Histogram(Vec<u64>),
    Collect(Vec<u64>),
}

/// Median (numpy convention: mean of the two middle values for an even count) of all
/// values in `data`, whose top-digit histogram is `top`. NaN when there are no values.
/// The values must be free of NaN.
pub fn median(data: &impl Rescan, top: &TopHistogram) -> Result<f64> {
    let n = top.total();
    if n == 0 {
        return Ok(f64::NAN);
    }
    let ranks = if n % 2 == 1 { vec![n / 2] } else { vec![n / 2 - 1, n / 2] };
    let Some(bins) = &top.bins else {
        // Every key is at hand: select the middle ranks from them, no pass over the data.
        let mut keys = top.keys.clone();
        let found: Vec<f64> = ranks.iter().map(|&r| value(*keys.select_nth_unstable(r as usize).1)).collect();
        return Ok(found.iter().sum::<f64>() / found.len() as f64);
    };
    let mut searches: Vec<Search> = ranks
        .iter()
        .map(|&rank| {
            let mut s = Search { prefix: 0, bits: 0, rank, count: n, found: None };
            s.descend(bins);
            s
        })
        .collect();

    loop {
        for s in searches.iter_mut().filter(|s| s.found.is_none() && s.bits == 64) {
            s.found = Some(value(s.prefix));
        }
        let pending: Vec<usize> = (0..searches.len()).filter(|&i| searches[i].found.is_none()).collect();
        if pending.is_empty() {
            break;
        }
        let plan: Vec<(Search, bool)> =
            pending.iter().map(|&i| (searches[i], searches[i].count <= COLLECT_LIMIT)).collect();
        let passes = scan_pass(data, &plan)?;
        for (&i, pass) in pending.iter().zip(passes) {
            let s = &mut searches[i];
            match pass {
                Pass::Collect(mut keys) => {
                    let r = s.rank as usize;
                    let (_, k, _) = keys.select_nth_unstable(r);
                    s.found = Some(value(*k));
                }
                Pass::Histogram(hist) => s.descend(&hist),
            }
        }
    }
    let found: Vec<f64> = searches.iter().map(|s| s.found.unwrap()).collect();
    Ok(found.iter().sum::<f64>() / found.len() as f64)
}

/// One parallel pass over the data serving every pending search.
fn scan_pass(data: &impl Rescan, plan: &[(Search, bool)]) -> Result<Vec<Pass>> {
    let empty = || -> Vec<Pass> {
        plan.iter()
            .map(|(_, collect)| if *collect { Pass::Collect(Vec::new()) } else { Pass::Histogram(vec![0; BINS]) })
            .collect()
    };
    (0..data.parts())
        .into_par_iter()
        .map(|part| {
            let mut acc = empty();
            data.scan(part, &mut |chunk| {
                for &x in chunk {
                    let k = key(x);
                    for ((search, _), pass) in plan.iter().zip(acc.iter_mut()) {
                        if !search.matches(k) {
                            continue;
                        }
                        match pass {
                            Pass::Collect(keys) => keys.push(k),
                            Pass::Histogram(h) => {
                                let shift = 64 - search.bits - DIGIT_BITS;
                                h[((k >> shift) & (BINS as u64 - 1)) as usize] += 1;
                            }
                        }
                    }
                }
            })?;
            Ok(acc)
        })
        .try_reduce(empty, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                match (x, y) {
                    (Pass::Collect(u), Pass::Collect(v)) => u.extend(v),
                    (Pass::Histogram(u), Pass::Histogram(v)) => {
                        for (p, q) in u.iter_mut().zip(v) {
                            *p += q;
                        }
                    }
                    _ => unreachable!("passes follow the same plan"),
                }
            }
            Ok(a)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Parts(Vec<Vec<f64>>);

    impl Rescan for Parts {
        fn parts(&self) -> usize {
            self.0.len()
        }
        fn scan(&self, i: usize, f: &mut dyn FnMut(&[f64])) -> Result<()> {
            for chunk in self.0[i].chunks(7) {
                f(chunk);
            }
            Ok(())
        }
    }

    fn reference(parts: &[Vec<f64>]) -> f64 {
        let mut all: Vec<f64> = parts.iter().flatten().copied().collect();
        all.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let n = all.len();
        if n % 2 == 1 { all[n / 2] } else { (all[n / 2 - 1] + all[n / 2]) / 2.0 }
    }

    /// The median with the keys kept (when few enough), with a histogram from the start,
    /// and with the keys kept until a part's values overflow them, all equal to sorting.
    fn check(parts: Vec<Vec<f64>>) {
        let expected = reference(&parts);
        let largest = parts.iter().map(Vec::len).max().unwrap_or(0);
        for limit in [KEEP_KEYS, 0, largest] {
            let mut top = TopHistogram::keeping(limit);
            for p in &parts {
                top.add(p);
            }
            assert_eq!(median(&Parts(parts.clone()), &top).unwrap(), expected, "limit {limit}");
            // Merging partial histograms (one per worker) gives the same.
            let merged = parts
                .iter()
                .map(|p| {
                    let mut h = TopHistogram::keeping(limit);
                    h.add(p);
                    h
                })
                .fold(TopHistogram::keeping(limit), |a, b| a.merge(&b));
            assert_eq!(merged.total(), top.total());
            assert_eq!(median(&Parts(parts.clone()), &merged).unwrap(), expected, "merged, limit {limit}");
        }
    }

    #[test]
    fn kept_keys_become_bins_when_there_are_too_many() {
        let mut top = TopHistogram::keeping(4);
        top.add(&[1.0, 2.0, 3.0]);
        assert!(top.bins.is_none() && top.total() == 3);
        top.add(&[4.0, 5.0]);
        assert!(top.bins.is_some() && top.keys.is_empty() && top.total() == 5);
        check(vec![vec![0.5; KEEP_KEYS - 1], vec![-2.0, 7.0, 0.25]]); // over KEEP_KEYS in all
    }

    #[test]
    fn keys_preserve_order() {
        let xs = [-f64::INFINITY, -1e300, -1.0, -1e-300, -0.0, 0.0, 1e-300, 1.0, 1e300, f64::INFINITY];
        for w in xs.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{:?}", w);
        }
        for x in xs {
            assert_eq!(value(key(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn odd_and_even_counts() {
        check(vec![vec![3.0, -1.0, 2.0], vec![10.0, -7.0]]);
        check(vec![vec![3.0, -1.0, 2.0], vec![10.0]]);
        check(vec![vec![0.5]]);
    }

    #[test]
    fn spread_values_across_parts() {
        let parts: Vec<Vec<f64>> = (0..5)
            .map(|p| (0..1000).map(|i| ((i * 7919 + p * 104729) as f64 * 0.001).sin() * 1e-3).collect())
            .collect();
        check(parts);
    }

    #[test]
    fn many_equal_values_descend_to_the_full_key() {
        // 5M identical values exceed COLLECT_LIMIT: the search must refine to 64 bits.
        let mut big = vec![0.25; 5_000_000];
        big.push(1.0);
        big.push(-1.0);
        check(vec![big]);
    }

    #[test]
    fn empty_is_nan() {
        assert!(median(&Parts(vec![]), &TopHistogram::new()).unwrap().is_nan());
    }
}
