//! PyO3 binding: converts arguments, runs the engine with the GIL released, reports
//! progress, honours Ctrl-C, and maps errors to Python exceptions. No logic lives here.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::create_exception;
use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::engine::{self, CheckpointReport, Options, METRIC_NAMES};
use crate::error::MetricsError;
use crate::selection::{Selection, DEFAULT_EXCLUDE};
use crate::spectrum::{SvdMode, SvdOptions};

create_exception!(
    _rust_metrics,
    CheckpointError,
    PyValueError,
    "A checkpoint that is not a valid safetensors file, or holds a tensor of an unsupported dtype."
);

fn to_pyerr(err: MetricsError) -> PyErr {
    let message = err.to_string();
    match err {
        MetricsError::NotFound { .. } => PyFileNotFoundError::new_err(message),
        MetricsError::Io { .. } => PyOSError::new_err(message),
        MetricsError::Format { .. } | MetricsError::Dtype { .. } => CheckpointError::new_err(message),
        MetricsError::Pattern { .. } | MetricsError::Option { .. } => PyValueError::new_err(message),
        MetricsError::Cancelled => PyKeyboardInterrupt::new_err(message),
    }
}

/// Statistics of one checkpoint, as returned to Python.
#[pyclass(frozen, get_all, module = "trainmap._rust_metrics")]
pub struct CheckpointStats {
    /// The 14 statistics, in METRIC_NAMES order.
    values: Vec<f64>,
    /// "exact", "randomized", "mixed" or "none".
    svd: String,
    warnings: Vec<String>,
    n_matrices: usize,
    n_biases: usize,
}

impl From<CheckpointReport> for CheckpointStats {
    fn from(r: CheckpointReport) -> Self {
        CheckpointStats {
            svd: r.svd_label().to_owned(),
            values: r.values.to_vec(),
            warnings: r.warnings,
            n_matrices: r.n_matrices,
            n_biases: r.n_biases,
        }
    }
}

fn options(
    svd: &str,
    exact_max_dim: Option<usize>,
    rank: Option<usize>,
    include: Option<&str>,
    exclude: Option<&str>,
) -> PyResult<Options> {
    let mode = match svd {
        "exact" => SvdMode::Exact,
        "randomized" => SvdMode::Randomized,
        "auto" => SvdMode::Auto,
        other => {
            return Err(PyValueError::new_err(format!(
                "svd must be 'exact', 'randomized' or 'auto', not {other:?}"
            )))
        }
    };
    let defaults = SvdOptions::default();
    if rank == Some(0) {
        return Err(PyValueError::new_err("rank must be at least 1"));
    }
    Ok(Options {
        svd: SvdOptions {
            mode,
            exact_max_dim: exact_max_dim.unwrap_or(defaults.exact_max_dim),
            rank: rank.unwrap_or(defaults.rank),
            ..defaults
        },
        selection: Selection::new(include, exclude).map_err(to_pyerr)?,
    })
}

/// Run `work` on `threads` threads while this thread waits with the GIL released, calling
/// `progress(n_done)` as work completes and turning Ctrl-C into a cancellation.
fn run_detached<T: Send>(
    py: Python<'_>,
    threads: usize,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&AtomicBool, &AtomicUsize) -> crate::Result<T> + Send,
) -> PyResult<T> {
    let cancel = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    let mut interrupt: Option<PyErr> = None;

    let outcome = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let result = catch_unwind(AssertUnwindSafe(|| {
                engine::with_threads(threads, || work(&cancel, &done)).and_then(|r| r)
            }));
            finished.store(true, Ordering::Release);
            result
        });
        let mut reported = 0;
        loop {
            let is_finished = py.detach(|| {
                let start = Instant::now();
                while !finished.load(Ordering::Acquire) && start.elapsed() < Duration::from_millis(50) {
                    std::thread::sleep(Duration::from_millis(2));
                }
                finished.load(Ordering::Acquire)
            });
            let now = done.load(Ordering::Relaxed);
            if let (Some(callback), true) = (progress, now > reported) {
                reported = now;
                if let Err(e) = callback.call1((now,)) {
                    interrupt.get_or_insert(e);
                    cancel.store(true, Ordering::Relaxed);
                }
            }
            if is_finished {
                break;
            }
            if interrupt.is_none() {
                if let Err(e) = py.check_signals() {
                    interrupt = Some(e);
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        }
        worker.join()
    });

    if let Some(e) = interrupt {
        return Err(e);
    }
    match outcome {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(e))) => Err(to_pyerr(e)),
        Ok(Err(panic)) | Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(PyRuntimeError::new_err(format!("internal error in rust_metrics (please report): {what}")))
        }
    }
}

/// Statistics of one checkpoint. See `trainmap.metrics.checkpoint_metrics`.
#[pyfunction]
#[pyo3(signature = (path, *, svd="auto", exact_max_dim=None, rank=None, threads=0, include=None, exclude=None))]
#[allow(clippy::too_many_arguments)]
fn checkpoint_stats(
    py: Python<'_>,
    path: PathBuf,
    svd: &str,
    exact_max_dim: Option<usize>,
    rank: Option<usize>,
    threads: usize,
    include: Option<&str>,
    exclude: Option<&str>,
) -> PyResult<CheckpointStats> {
    let options = options(svd, exact_max_dim, rank, include, exclude)?;
    run_detached(py, threads, None, |cancel, _| engine::checkpoint_metrics(&path, &options, cancel))
        .map(CheckpointStats::from)
}

/// Statistics of many checkpoints in parallel, in order. See
/// `trainmap.metrics.trajectory_metrics`. `progress(n_done)` is called as they finish.
#[pyfunction]
#[pyo3(signature = (paths, *, svd="auto", exact_max_dim=None, rank=None, threads=0, include=None, exclude=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn trajectory_stats(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    svd: &str,
    exact_max_dim: Option<usize>,
    rank: Option<usize>,
    threads: usize,
    include: Option<&str>,
    exclude: Option<&str>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Vec<CheckpointStats>> {
    let options = options(svd, exact_max_dim, rank, include, exclude)?;
    let reports = run_detached(py, threads, progress.as_ref(), |cancel, done| {
        engine::trajectory_metrics(&paths, &options, cancel, &|| {
            done.fetch_add(1, Ordering::Relaxed);
        })
    })?;
    Ok(reports.into_iter().map(CheckpointStats::from).collect())
}

#[pymodule]
fn _rust_metrics(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let defaults = SvdOptions::default();
    m.add("METRIC_NAMES", METRIC_NAMES.to_vec())?;
    m.add("DEFAULT_EXCLUDE", DEFAULT_EXCLUDE)?;
    m.add("DEFAULT_EXACT_MAX_DIM", defaults.exact_max_dim)?;
    m.add("DEFAULT_RANK", defaults.rank)?;
    m.add("ENGINE_FINGERPRINT", env!("TRAINMAP_ENGINE_FINGERPRINT"))?;
    m.add("CheckpointError", m.py().get_type::<CheckpointError>())?;
    m.add_class::<CheckpointStats>()?;
    m.add_function(wrap_pyfunction!(checkpoint_stats, m)?)?;
    m.add_function(wrap_pyfunction!(trajectory_stats, m)?)?;
    Ok(())
}
