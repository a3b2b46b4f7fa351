//! The 14 statistics of one checkpoint, and of a trajectory of checkpoints.
//!
//! One checkpoint is processed in one parallel pass over its selected tensors (each
//! matrix decoded to f64 once: norms, trace, moments, top-digit histogram for the median,
//! singular values, and the content hash of its bytes), then, for each median, a short
//! radix-selection rescan of the source. Per-tensor results are combined in name order, so
//! the numbers depend neither on the number of threads nor on the order of the tensors in
//! a file or in memory. Peak memory is a few copies of the largest matrix per thread.

use std::path::{Path, PathBuf};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

use xxhash_rust::xxh3::Xxh3;

use crate::checkpoint::{Checkpoint, Shards};
use crate::error::{MetricsError, Result};
use crate::source::TensorSource;
use crate::median::{self, Rescan, TopHistogram};
use crate::selection::{Role, Selection};
use crate::spectrum::{spectrum_of_values, Method, Spectrum, SvdOptions};
use crate::stats::{mean_of, sum_map, Moments};
use crate::tensor::{decode_into, for_each_chunk, TensorEntry, ValueType};

/// Declares [`Statistics`] from one list of fields, so the struct's fields, their order and
/// their names ([`Statistics::NAMES`], exported to Python as `METRIC_NAMES`) cannot drift
/// apart: each name is its field's identifier.
macro_rules! statistics {
    (
        weights: { $( $(#[$wmeta:meta])* $weight:ident, )* }
        biases: { $( $(#[$bmeta:meta])* $bias:ident, )* }
    ) => {
        /// The 14 statistics of one checkpoint (Hu et al., Appendix B; definitions in
        /// docs/design.md), one field each. A statistic with nothing to average is NaN.
        /// Field names are the metrics.csv column names, kept from the authors' code.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct Statistics {
            $( $(#[$wmeta])* pub $weight: f64, )*
            $( $(#[$bmeta])* pub $bias: f64, )*
        }

        impl Statistics {
            /// The statistic names, in column order: the weight-matrix statistics, then the
            /// bias statistics. The one definition of the 14 names.
            pub const NAMES: [&'static str; 14] = [$( stringify!($weight), )* $( stringify!($bias), )*];
            /// The names of the statistics computed from the weight matrices (NaN together
            /// when a matrix has non-finite values).
            pub const WEIGHT_NAMES: &'static [&'static str] = &[$( stringify!($weight), )*];
            /// The names of the statistics computed from the biases.
            pub const BIAS_NAMES: &'static [&'static str] = &[$( stringify!($bias), )*];
            /// Every statistic NaN (nothing computed).
            pub const NAN: Statistics = Statistics { $( $weight: f64::NAN, )* $( $bias: f64::NAN, )* };

            /// The values, in [`Statistics::NAMES`] order.
            pub fn values(&self) -> [f64; 14] {
                [$( self.$weight, )* $( self.$bias, )*]
            }

            /// The weight-matrix statistics, in [`Statistics::WEIGHT_NAMES`] order.
            pub fn weight_values(&self) -> Vec<f64> {
                vec![$( self.$weight, )*]
            }

            /// The bias statistics, in [`Statistics::BIAS_NAMES`] order.
            pub fn bias_values(&self) -> Vec<f64> {
                vec![$( self.$bias, )*]
            }

            /// `(name, value)` pairs, in [`Statistics::NAMES`] order.
            pub fn named(&self) -> impl Iterator<Item = (&'static str, f64)> {
                Self::NAMES.into_iter().zip(self.values())
            }

            /// The statistic called `name`, or None for an unknown name.
            pub fn get(&self, name: &str) -> Option<f64> {
                self.named().find(|(n, _)| *n == name).map(|(_, v)| v)
            }
        }
    };
}

statistics! {
    weights: {
        /// mean_k Σ|W_k|: mean L1 norm of the weight matrices.
        l1,
        /// mean_k ‖W_k‖_F: mean Frobenius norm.
        l2,
        /// mean_k ‖W_k‖_1 / ‖W_k‖_F (matrices with ‖W_k‖_F = 0 skipped).
        code_sparsity,
        /// mean_k Σ_{i<r_k} W_k[i,i]: mean trace.
        trace,
        /// mean_k σ_{k,1}: mean largest singular value.
        spectral,
        /// mean_k tr(W_k) / σ_{k,1} (σ_{k,1} = 0 skipped).
        computational_sparsity,
        /// mean_k of the mean of the singular values of W_k.
        mean_lambda,
        /// mean_k of the population variance of the singular values of W_k.
        variance_lambda,
        /// Mean of all entries of all weight matrices together.
        mean_w,
        /// Median (numpy convention) of all entries of all weight matrices together.
        median_w,
        /// Population variance of all entries of all weight matrices together.
        var_w,
    }
    biases: {
        /// Mean of all entries of all biases together.
        mean_b,
        /// Median (numpy convention) of all entries of all biases together.
        median_b,
        /// Population variance of all entries of all biases together.
        var_b,
    }
}

/// How the engine computes: the singular-value method and which tensors count.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// How singular values are computed (exact, randomized, or by size).
    pub svd: SvdOptions,
    /// Which tensors count, and as what (weight matrix or bias).
    pub selection: Selection,
}

/// Statistics of one checkpoint, with how they were obtained.
#[derive(Clone, Debug)]
pub struct CheckpointReport {
    /// The 14 statistics.
    pub statistics: Statistics,
    /// Weight matrices counted (those with non-finite values included).
    pub n_matrices: usize,
    /// Biases counted (those with non-finite values included).
    pub n_biases: usize,
    /// Matrices whose singular values were computed exactly.
    pub exact_matrices: usize,
    /// Matrices whose singular values were computed by randomized SVD.
    pub randomized_matrices: usize,
    /// Hex xxh3-128 digest of the counted tensors (see `content_hash`).
    pub content_hash: String,
    /// Messages for people: non-finite tensors, singular values that did not converge.
    pub warnings: Vec<String>,
}

impl CheckpointReport {
    /// "exact", "randomized", "mixed" or "none" (no matrices).
    pub fn svd_label(&self) -> &'static str {
        match (self.exact_matrices, self.randomized_matrices) {
            (0, 0) => "none",
            (_, 0) => "exact",
            (0, _) => "randomized",
            _ => "mixed",
        }
    }
}

struct MatrixSummary {
    index: usize,
    l1: f64,
    frobenius: f64,
    trace: f64,
    spectrum: Spectrum,
    moments: Moments,
}

struct BiasSummary {
    index: usize,
    moments: Moments,
}

/// What a parallel fold over tensors accumulates.
#[derive(Default)]
struct Partial {
    matrices: Vec<MatrixSummary>,
    biases: Vec<BiasSummary>,
    weight_hist: Option<TopHistogram>,
    bias_hist: Option<TopHistogram>,
    /// (unit index, is bias) of tensors with non-finite values.
    non_finite: Vec<(usize, bool)>,
    /// (unit index, xxh3-128 of the raw bytes) of every counted tensor.
    digests: Vec<(usize, u128)>,
}

impl Partial {
    fn merge(mut self, other: Partial) -> Partial {
        self.matrices.extend(other.matrices);
        self.biases.extend(other.biases);
        self.non_finite.extend(other.non_finite);
        self.digests.extend(other.digests);
        self.weight_hist = merge_hist(self.weight_hist, other.weight_hist);
        self.bias_hist = merge_hist(self.bias_hist, other.bias_hist);
        self
    }
}

fn merge_hist(a: Option<TopHistogram>, b: Option<TopHistogram>) -> Option<TopHistogram> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.merge(&b)),
        (a, b) => a.or(b),
    }
}

/// A selected tensor: its position in the source, decoded type and role.
struct Unit<'a> {
    /// Position in the source (for reading).
    source_index: usize,
    tensor: &'a TensorEntry,
    value_type: ValueType,
    role: Role,
}

/// Seed of the randomized SVD for a tensor: FNV-1a of its name, so the same tensor uses
/// the same draws in every checkpoint of a trajectory.
fn seed_for(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The counted tensors of `source`, in name order: per-tensor results are combined in this
/// order, so a file and the same tensors in memory (in any order) give identical numbers.
fn select<'a>(source: &'a dyn TensorSource, selection: &Selection) -> Result<Vec<Unit<'a>>> {
    let mut units = Vec::new();
    for (source_index, tensor) in source.tensors().iter().enumerate() {
        let role = selection.role(&tensor.name, &tensor.shape);
        if role == Role::Ignored {
            continue;
        }
        let value_type = ValueType::from_dtype(tensor.dtype).ok_or_else(|| MetricsError::Dtype {
            path: source.origin().to_owned(),
            tensor: tensor.name.clone(),
            dtype: format!("{:?}", tensor.dtype),
        })?;
        units.push(Unit { source_index, tensor, value_type, role });
    }
    units.sort_by(|a, b| a.tensor.name.cmp(&b.tensor.name));
    Ok(units)
}

/// Statistics of one counted tensor, folded into `acc`. `index` is the unit's position in
/// name order.
fn process(source: &dyn TensorSource, index: usize, unit: &Unit<'_>, svd: &SvdOptions, mut acc: Partial) -> Result<Partial> {
    let mut hasher = Xxh3::new();
    match unit.role {
        Role::Matrix { rows, cols } => {
            let mut values = Vec::with_capacity(rows * cols);
            source.read_chunks(unit.source_index, &mut |raw| {
                hasher.update(raw);
                let start = values.len();
                values.resize(start + raw.len() / unit.value_type.size(), 0.0);
                decode_into(raw, unit.value_type, &mut values[start..]);
            })?;
            acc.digests.push((index, hasher.digest128()));
            if !values.iter().all(|x| x.is_finite()) {
                acc.non_finite.push((index, false));
                return Ok(acc);
            }
            let l1 = sum_map(&values, f64::abs);
            let frobenius_sq = sum_map(&values, |x| x * x);
            let trace = (0..rows.min(cols)).map(|i| values[i * cols + i]).sum();
            acc.weight_hist.get_or_insert_with(TopHistogram::new).add(&values);
            let moments = Moments::of(&values);
            // Last: it consumes (and for a tall matrix, frees) the decoded values.
            let spectrum = spectrum_of_values(values, rows, cols, frobenius_sq, svd, seed_for(&unit.tensor.name));
            acc.matrices.push(MatrixSummary { index, l1, frobenius: frobenius_sq.sqrt(), trace, spectrum, moments });
        }
        Role::Bias => {
            let mut moments = Moments::default();
            let mut finite = true;
            let hist = acc.bias_hist.get_or_insert_with(TopHistogram::new);
            source.read_chunks(unit.source_index, &mut |raw| {
                hasher.update(raw);
                for_each_chunk(raw, unit.value_type, |chunk| {
                    if finite && chunk.iter().all(|x| x.is_finite()) {
                        moments = moments.merge(Moments::of(chunk));
                        hist.add(chunk);
                    } else {
                        finite = false;
                    }
                });
            })?;
            acc.digests.push((index, hasher.digest128()));
            if finite {
                acc.biases.push(BiasSummary { index, moments });
            } else {
                acc.non_finite.push((index, true));
            }
        }
        Role::Ignored => {}
    }
    Ok(acc)
}

/// Rescans of one group (weights or biases) for the median.
struct GroupScan<'a> {
    source: &'a dyn TensorSource,
    /// (source index, value type) of the group's tensors.
    tensors: Vec<(usize, ValueType)>,
    cancel: &'a AtomicBool,
}

impl Rescan for GroupScan<'_> {
    fn parts(&self) -> usize {
        self.tensors.len()
    }
    fn scan(&self, i: usize, f: &mut dyn FnMut(&[f64])) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(MetricsError::Cancelled);
        }
        let (index, vt) = self.tensors[i];
        self.source.scan(index, vt, f)
    }
}

/// Content hash of the counted tensors: xxh3-128 over, in name order, each tensor's name,
/// dtype, shape, byte length and the xxh3-128 of its raw bytes. Equal for byte-identical
/// files and for files (or memory) holding the same tensors in another order.
fn content_hash(units: &[Unit<'_>], digests: &[(usize, u128)]) -> String {
    let mut hasher = Xxh3::new();
    let mut put = |bytes: &[u8]| {
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    for (unit, (index, digest)) in units.iter().zip(digests) {
        debug_assert_eq!(units[*index].tensor.name, unit.tensor.name);
        let tensor = unit.tensor;
        put(tensor.name.as_bytes());
        put(format!("{:?}", tensor.dtype).as_bytes());
        let shape: Vec<u8> = tensor.shape.iter().flat_map(|d| (*d as u64).to_le_bytes()).collect();
        put(&shape);
        put(&((tensor.numel() * tensor.dtype.bitsize() / 8) as u64).to_le_bytes());
        put(&digest.to_le_bytes());
    }
    format!("{:032x}", hasher.digest128())
}

/// Compute the 14 statistics of the checkpoint at `path`.
pub fn checkpoint_metrics(path: &Path, options: &Options, cancel: &AtomicBool) -> Result<CheckpointReport> {
    let checkpoint = Checkpoint::open(path)?;
    source_metrics(&checkpoint, options, cancel)
}

/// Compute the 14 statistics of one checkpoint saved as several shard files, as one
/// checkpoint (means and medians are over the matrices of every shard).
pub fn shards_metrics(paths: &[PathBuf], options: &Options, cancel: &AtomicBool) -> Result<CheckpointReport> {
    let shards = Shards::open(paths)?;
    source_metrics(&shards, options, cancel)
}

/// Compute the 14 statistics of the tensors of `source` (a file or memory).
pub fn source_metrics(source: &dyn TensorSource, options: &Options, cancel: &AtomicBool) -> Result<CheckpointReport> {
    let units = select(source, &options.selection)?;
    let origin = source.origin().display();

    let partial = units
        .par_iter()
        .enumerate()
        .try_fold(Partial::default, |acc, (index, unit)| {
            if cancel.load(Ordering::Relaxed) {
                return Err(MetricsError::Cancelled);
            }
            process(source, index, unit, &options.svd, acc)
        })
        .try_reduce(Partial::default, |a, b| Ok(a.merge(b)))?;

    let Partial { mut matrices, mut biases, weight_hist, bias_hist, mut non_finite, mut digests } = partial;
    matrices.sort_by_key(|m| m.index);
    biases.sort_by_key(|b| b.index);
    non_finite.sort_by_key(|(index, _)| *index);
    digests.sort_by_key(|(index, _)| *index);

    let mut warnings = Vec::new();
    for (index, is_bias) in &non_finite {
        let affected = if *is_bias { "bias statistics" } else { "weight statistics" };
        let name = &units[*index].tensor.name;
        warnings.push(format!("{origin}: tensor '{name}' has non-finite values; its {affected} are NaN"));
    }
    for m in matrices.iter().filter(|m| !m.spectrum.is_finite()) {
        let name = &units[m.index].tensor.name;
        warnings.push(format!("{origin}: singular values of tensor '{name}' did not converge"));
    }

    let weights_ok = !non_finite.iter().any(|(_, is_bias)| !is_bias);
    let biases_ok = !non_finite.iter().any(|(_, is_bias)| *is_bias);
    let group = |role_is_bias: bool| GroupScan {
        source,
        tensors: units
            .iter()
            .filter(|u| matches!(u.role, Role::Bias) == role_is_bias)
            .map(|u| (u.source_index, u.value_type))
            .collect(),
        cancel,
    };

    let mut statistics = Statistics::NAN;
    if weights_ok && !matrices.is_empty() {
        let weights = matrices.iter().fold(Moments::default(), |m, x| m.merge(x.moments));
        statistics.l1 = mean_of(matrices.iter().map(|m| m.l1));
        statistics.l2 = mean_of(matrices.iter().map(|m| m.frobenius));
        statistics.code_sparsity =
            mean_of(matrices.iter().filter(|m| m.frobenius > 0.0).map(|m| m.l1 / m.frobenius));
        statistics.trace = mean_of(matrices.iter().map(|m| m.trace));
        statistics.spectral = mean_of(matrices.iter().map(|m| m.spectrum.sigma_max));
        statistics.computational_sparsity = mean_of(
            matrices.iter().filter(|m| m.spectrum.sigma_max > 0.0).map(|m| m.trace / m.spectrum.sigma_max),
        );
        statistics.mean_lambda = mean_of(matrices.iter().map(|m| m.spectrum.mean));
        statistics.variance_lambda = mean_of(matrices.iter().map(|m| m.spectrum.variance));
        statistics.mean_w = weights.mean();
        statistics.median_w = median::median(&group(false), weight_hist.as_ref().expect("matrices were seen"))?;
        statistics.var_w = weights.variance();
    }
    if biases_ok && !biases.is_empty() {
        let moments = biases.iter().fold(Moments::default(), |m, x| m.merge(x.moments));
        statistics.mean_b = moments.mean();
        statistics.median_b = median::median(&group(true), bias_hist.as_ref().expect("biases were seen"))?;
        statistics.var_b = moments.variance();
    }

    let count = |method| matrices.iter().filter(|m| m.spectrum.method == method).count();
    Ok(CheckpointReport {
        statistics,
        n_matrices: matrices.len() + non_finite.iter().filter(|(_, b)| !b).count(),
        n_biases: biases.len() + non_finite.iter().filter(|(_, b)| *b).count(),
        exact_matrices: count(Method::Exact),
        randomized_matrices: count(Method::Randomized),
        content_hash: content_hash(&units, &digests),
        warnings,
    })
}

/// Statistics of many checkpoints, in the given order, processed in parallel.
/// `on_done` is called once per finished checkpoint (from worker threads). The first
/// failure stops the remaining work and is returned.
pub fn trajectory_metrics(
    paths: &[PathBuf],
    options: &Options,
    cancel: &AtomicBool,
    on_done: &(dyn Fn() + Sync),
) -> Result<Vec<CheckpointReport>> {
    let results: Vec<Result<CheckpointReport>> = paths
        .par_iter()
        .map(|path| {
            let report = checkpoint_metrics(path, options, cancel);
            if report.is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            on_done();
            report
        })
        .collect();
    // A failure cancels the checkpoints in flight; report the failure, not those.
    let is_cause = |r: &Result<CheckpointReport>| matches!(r, Err(e) if !matches!(e, MetricsError::Cancelled));
    if let Some(index) = results.iter().position(is_cause) {
        return Err(results.into_iter().nth(index).unwrap().unwrap_err());
    }
    results.into_iter().collect()
}

/// Run `work` on a pool of `threads` threads (0: one per CPU).
///
/// Idle pools are kept for reuse: starting a pool's threads costs more than the statistics
/// of a small model, which a Recorder or a seed sweep asks for at every step. A call takes
/// an idle pool of its thread count for itself (concurrent calls get pools of their own,
/// as before) and puts it back when done. A pool is only reused by the process that
/// started it: a forked child has none of its threads and would wait on them forever.
pub fn with_threads<T: Send>(threads: usize, work: impl FnOnce() -> T + Send) -> Result<T> {
    /// Idle pools by (process id, thread count).
    type IdlePools = HashMap<(u32, usize), Vec<rayon::ThreadPool>>;
    static IDLE: OnceLock<Mutex<IdlePools>> = OnceLock::new();
    // Idle pools kept per thread count: enough for the usual one caller at a time and a
    // second beside it, few enough that idle threads stay few on a many-core node.
    const IDLE_KEPT: usize = 2;
    let key = (std::process::id(), threads);
    let idle = IDLE.get_or_init(Mutex::default);
    let kept = idle.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&key).and_then(Vec::pop);
    let pool = match kept {
        Some(pool) => pool,
        None => rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| MetricsError::Option { message: format!("cannot start {threads} threads: {e}") })?,
    };
    let result = pool.install(work);
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    let pools = idle.entry(key).or_default();
    if pools.len() < IDLE_KEPT {
        pools.push(pool);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::{Dtype, TensorView};

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Write (name, dtype, shape, bytes) tensors with the reference serializer.
    fn write(dir: &tempfile::TempDir, file: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| (name.to_string(), TensorView::new(*dtype, shape.clone(), bytes).unwrap()))
            .collect();
        let path = dir.path().join(file);
        safetensors::serialize_to_file(views, None, &path).unwrap();
        path
    }

    fn sample(dir: &tempfile::TempDir, file: &str, poison: Option<f32>) -> PathBuf {
        let mut w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.5).collect(); // 3×4
        if let Some(x) = poison {
            w[7] = x;
        }
        let conv: Vec<f32> = (0..16).map(|i| ((i * 7 % 5) as f32) - 2.0).collect(); // 2×2×2×2 → 2×8
        write(
            dir,
            file,
            &[
                ("fc.weight", Dtype::F32, vec![3, 4], f32_bytes(&w)),
                ("fc.bias", Dtype::F32, vec![3], f32_bytes(&[1.0, -2.0, 4.0])),
                ("conv.weight", Dtype::F32, vec![2, 2, 2, 2], f32_bytes(&conv)),
                ("embed.weight", Dtype::F32, vec![2, 2], f32_bytes(&[100.0; 4])),
                ("ln.weight", Dtype::F32, vec![2], f32_bytes(&[9.0, 9.0])),
                ("position_ids", Dtype::I64, vec![2], vec![0u8; 16]),
            ],
        )
    }

    fn run(path: &Path) -> CheckpointReport {
        checkpoint_metrics(path, &Options::default(), &AtomicBool::new(false)).unwrap()
    }

    #[test]
    fn statistics_match_direct_formulas() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(&sample(&dir, "a.safetensors", None));
        let w: Vec<f64> = (0..12).map(|i| (i as f64 - 5.5) * 0.5).collect();
        let conv: Vec<f64> = (0..16).map(|i| ((i * 7 % 5) as f64) - 2.0).collect();
        let l1 = (w.iter().map(|x| x.abs()).sum::<f64>() + conv.iter().map(|x| x.abs()).sum::<f64>()) / 2.0;
        let trace_w = w[0] + w[5] + w[10];
        let trace_conv = conv[0] + conv[9];
        let all: Vec<f64> = w.iter().chain(&conv).copied().collect();
        let mean_w = all.iter().sum::<f64>() / 28.0;
        let s = &report.statistics;
        assert_eq!(report.n_matrices, 2);
        assert_eq!(report.n_biases, 1);
        assert!((s.l1 - l1).abs() < 1e-12);
        assert!((s.trace - (trace_w + trace_conv) / 2.0).abs() < 1e-12);
        assert!((s.mean_w - mean_w).abs() < 1e-12);
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert_eq!(s.median_w, (sorted[13] + sorted[14]) / 2.0);
        assert_eq!((s.mean_b, s.median_b), (1.0, 1.0));
        assert!((s.var_b - 6.0).abs() < 1e-12); // var of [1, -2, 4]
        assert_eq!(report.svd_label(), "exact");
    }

    #[test]
    fn names_follow_the_fields_in_column_order() {
        assert_eq!(Statistics::NAMES[0], "l1");
        assert_eq!(Statistics::NAMES[13], "var_b");
        assert_eq!([Statistics::WEIGHT_NAMES, Statistics::BIAS_NAMES].concat(), Statistics::NAMES);
        let s = Statistics { trace: 3.0, median_b: -1.0, ..Statistics::NAN };
        assert_eq!(s.get("trace"), Some(3.0));
        assert_eq!(s.get("median_b"), Some(-1.0));
        assert!(s.get("l1").unwrap().is_nan());
        assert_eq!(s.get("no_such_statistic"), None);
        let names: Vec<&str> = s.named().map(|(n, _)| n).collect();
        assert_eq!(names, Statistics::NAMES);
    }

    #[test]
    fn thread_count_does_not_change_the_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = sample(&dir, "a.safetensors", None);
        let one = with_threads(1, || run(&path)).unwrap();
        let three = with_threads(3, || run(&path)).unwrap();
        for (a, b) in one.statistics.values().iter().zip(&three.statistics.values()) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn non_finite_weights_give_nan_and_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(&sample(&dir, "nan.safetensors", Some(f32::NAN)));
        assert!(report.statistics.weight_values().iter().all(|x| x.is_nan()));
        assert!(report.statistics.bias_values().iter().all(|x| x.is_finite()));
        assert_eq!(report.warnings.len(), 1);
        assert!(report.warnings[0].contains("fc.weight") && report.warnings[0].contains("nan.safetensors"));
        let inf = run(&sample(&dir, "inf.safetensors", Some(f32::INFINITY)));
        assert!(inf.statistics.l1.is_nan());
    }

    #[test]
    fn unsupported_dtype_of_a_counted_tensor_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "int.safetensors", &[("fc.weight", Dtype::I32, vec![2, 2], vec![0u8; 16])]);
        let err = checkpoint_metrics(&path, &Options::default(), &AtomicBool::new(false)).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, MetricsError::Dtype { .. }));
        assert!(message.contains("int.safetensors") && message.contains("fc.weight") && message.contains("I32"), "{message}");
    }

    #[test]
    fn a_model_without_matrices_or_biases_gives_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "b.safetensors", &[("fc.bias", Dtype::F32, vec![2], f32_bytes(&[1.0, 3.0]))]);
        let report = run(&path);
        assert!(report.statistics.weight_values().iter().all(|x| x.is_nan()));
        assert_eq!(report.statistics.mean_b, 2.0);
        assert_eq!(report.svd_label(), "none");
    }

    #[test]
    fn shards_equal_the_same_tensors_in_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let whole = run(&sample(&dir, "whole.safetensors", None));
        let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) * 0.5).collect();
        let conv: Vec<f32> = (0..16).map(|i| ((i * 7 % 5) as f32) - 2.0).collect();
        let first = write(
            &dir,
            "model-00001-of-00002.safetensors",
            &[
                ("fc.weight", Dtype::F32, vec![3, 4], f32_bytes(&w)),
                ("embed.weight", Dtype::F32, vec![2, 2], f32_bytes(&[100.0; 4])),
                ("position_ids", Dtype::I64, vec![2], vec![0u8; 16]),
            ],
        );
        let second = write(
            &dir,
            "model-00002-of-00002.safetensors",
            &[
                ("fc.bias", Dtype::F32, vec![3], f32_bytes(&[1.0, -2.0, 4.0])),
                ("conv.weight", Dtype::F32, vec![2, 2, 2, 2], f32_bytes(&conv)),
                ("ln.weight", Dtype::F32, vec![2], f32_bytes(&[9.0, 9.0])),
            ],
        );
        let sharded = shards_metrics(&[second.clone(), first.clone()], &Options::default(), &AtomicBool::new(false)).unwrap();
        for (a, b) in whole.statistics.values().iter().zip(&sharded.statistics.values()) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        assert_eq!(whole.content_hash, sharded.content_hash);

        let err = shards_metrics(&[first.clone(), first], &Options::default(), &AtomicBool::new(false)).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("is also in") && message.contains("model-00001-of-00002"), "{message}");
        assert!(shards_metrics(&[], &Options::default(), &AtomicBool::new(false)).is_err());
    }

    #[test]
    fn concurrent_calls_get_pools_of_their_own_and_pools_are_reused() {
        // Two calls of one thread each, at the same time: if they shared a one-thread pool
        // the second would wait for the first, which waits for the second (timeout).
        let (to_a, from_b) = std::sync::mpsc::channel();
        let (to_b, from_a) = std::sync::mpsc::channel();
        let wait = std::time::Duration::from_secs(20);
        let handles = [(to_b, from_b), (to_a, from_a)].map(|(send, receive)| {
            std::thread::spawn(move || {
                with_threads(1, move || {
                    send.send(()).unwrap();
                    receive.recv_timeout(wait).is_ok()
                })
                .unwrap()
            })
        });
        for handle in handles {
            assert!(handle.join().unwrap(), "a call waited for another's pool");
        }
        // One after the other, calls reuse an idle pool: 20 calls on pools of 5 threads run
        // on at most 5 threads (new pools each time would give about 20).
        let seen: std::collections::HashSet<_> =
            (0..20).map(|_| with_threads(5, || std::thread::current().id()).unwrap()).collect();
        assert!(seen.len() <= 5, "{} threads", seen.len());
    }

    #[test]
    fn trajectory_reports_the_failing_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let good = sample(&dir, "step1.safetensors", None);
        let bad = dir.path().join("step2.safetensors");
        std::fs::write(&bad, b"not a checkpoint").unwrap();
        let paths = vec![good.clone(), bad, good.clone(), good];
        let done = std::sync::atomic::AtomicUsize::new(0);
        let err = with_threads(2, || {
            trajectory_metrics(&paths, &Options::default(), &AtomicBool::new(false), &|| {
                done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .unwrap()
        .unwrap_err();
        assert!(err.to_string().contains("step2.safetensors"), "{err}");

        let ok = with_threads(2, || {
            trajectory_metrics(&paths[..1], &Options::default(), &AtomicBool::new(false), &|| {})
        })
        .unwrap()
        .unwrap();
        assert_eq!(ok.len(), 1);
    }
}
