//! PyO3 binding: converts arguments, runs the engine with the GIL released, reports
//! progress, honours Ctrl-C, and maps errors to Python exceptions. No logic lives here.

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::buffer::PyUntypedBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyRuntimeWarning, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::checkpoint::{TensorEntry, ValueType};
use crate::engine::{self, CheckpointReport, Options, METRIC_NAMES};
use crate::error::MetricsError;
use crate::selection::{Role, Selection, DEFAULT_EXCLUDE};
use crate::source::{MemoryTensors, MEMORY_ORIGIN};
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
    /// Hex xxh3-128 digest of the counted tensors (name, dtype, shape, bytes; name order).
    content_hash: String,
    warnings: Vec<String>,
}

impl From<CheckpointReport> for CheckpointStats {
    fn from(r: CheckpointReport) -> Self {
        CheckpointStats {
            svd: r.svd_label().to_owned(),
            values: r.values.to_vec(),
            content_hash: r.content_hash,
            warnings: r.warnings,
        }
    }
}

/// Worker threads: `requested`, or every CPU this process may use; more than that is
/// capped with a `RuntimeWarning` (oversubscription only slows the work down).
fn resolve_threads(py: Python<'_>, requested: Option<usize>) -> PyResult<usize> {
    let available = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    match requested {
        None => Ok(available),
        Some(0) => Err(PyValueError::new_err("threads must be at least 1, not 0")),
        Some(n) if n > available => {
            let message = format!("threads={n} is more than the {available} CPUs available; using {available}");
            let message = CString::new(message).expect("no NUL in the message");
            PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), &message, 1)?;
            Ok(available)
        }
        Some(n) => Ok(n),
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
#[pyo3(signature = (path, *, svd="auto", exact_max_dim=None, rank=None, threads=None, include=None, exclude=None))]
#[allow(clippy::too_many_arguments)]
fn checkpoint_stats(
    py: Python<'_>,
    path: PathBuf,
    svd: &str,
    exact_max_dim: Option<usize>,
    rank: Option<usize>,
    threads: Option<usize>,
    include: Option<&str>,
    exclude: Option<&str>,
) -> PyResult<CheckpointStats> {
    let options = options(svd, exact_max_dim, rank, include, exclude)?;
    let threads = resolve_threads(py, threads)?;
    run_detached(py, threads, None, |cancel, _| engine::checkpoint_metrics(&path, &options, cancel))
        .map(CheckpointStats::from)
}

/// Statistics of many checkpoints in parallel, in order. See
/// `trainmap.metrics.trajectory_metrics`. `progress(n_done)` is called as they finish.
#[pyfunction]
#[pyo3(signature = (paths, *, svd="auto", exact_max_dim=None, rank=None, threads=None, include=None, exclude=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn trajectory_stats(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    svd: &str,
    exact_max_dim: Option<usize>,
    rank: Option<usize>,
    threads: Option<usize>,
    include: Option<&str>,
    exclude: Option<&str>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Vec<CheckpointStats>> {
    let options = options(svd, exact_max_dim, rank, include, exclude)?;
    let threads = resolve_threads(py, threads)?;
    let reports = run_detached(py, threads, progress.as_ref(), |cancel, done| {
        engine::trajectory_metrics(&paths, &options, cancel, &|| {
            done.fetch_add(1, Ordering::Relaxed);
        })
    })?;
    Ok(reports.into_iter().map(CheckpointStats::from).collect())
}

/// One counted tensor passed from Python: its header entry and its buffer (held so the
/// memory stays valid and unmoved while the engine reads it).
struct HeldTensor {
    entry: TensorEntry,
    buffer: PyUntypedBuffer,
}

/// Check one `(name, dtype, shape, data)` item and take its buffer, without copying.
fn hold_tensor(name: String, dtype: &str, shape: Vec<usize>, data: &Bound<'_, PyAny>) -> PyResult<HeldTensor> {
    let value_type = ValueType::from_name(dtype).ok_or_else(|| {
        to_pyerr(MetricsError::Dtype { path: PathBuf::from(MEMORY_ORIGIN), tensor: name.clone(), dtype: dtype.to_owned() })
    })?;
    let buffer = PyUntypedBuffer::get(data).map_err(|e| {
        PyTypeError::new_err(format!(
            "tensor '{name}': data must support the buffer protocol (a numpy array or memoryview), not {}: {e}",
            data.get_type().name().map(|n| n.to_string()).unwrap_or_default()
        ))
    })?;
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err(format!("tensor '{name}': data is not C-contiguous")));
    }
    let nbytes = buffer.len_bytes();
    Ok(HeldTensor { entry: TensorEntry { name, dtype: value_type.dtype(), shape, data: 0..nbytes }, buffer })
}

/// The statistics dict of one checkpoint: the 14 METRIC_NAMES, "svd" and "content_hash".
fn report_dict<'py>(py: Python<'py>, report: &CheckpointReport) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in METRIC_NAMES.iter().zip(report.values) {
        dict.set_item(*name, value)?;
    }
    dict.set_item("svd", report.svd_label())?;
    dict.set_item("content_hash", &report.content_hash)?;
    Ok(dict)
}

/// Statistics of tensors in memory, read in place. See `trainmap.metrics.weights_metrics`.
/// `tensors`: a sequence of `(name, dtype, shape, data)` with `data` a C-contiguous buffer.
/// Tensors that do not count (by name or shape) are skipped unread; warnings are raised
/// as `RuntimeWarning`.
#[pyfunction]
#[pyo3(signature = (tensors, *, include=None, exclude=None, svd="auto", exact_max_dim=None, rank=None, threads=None))]
#[allow(clippy::too_many_arguments)]
fn tensor_metrics<'py>(
    py: Python<'py>,
    tensors: &Bound<'py, PyAny>,
    include: Option<&str>,
    exclude: Option<&str>,
    svd: &str,
    exact_max_dim: Option<usize>,
    rank: Option<usize>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let options = options(svd, exact_max_dim, rank, include, exclude)?;
    let threads = resolve_threads(py, threads)?;
    let mut held = Vec::new();
    for item in tensors.try_iter()? {
        let (name, dtype, shape, data): (String, String, Vec<usize>, Bound<'py, PyAny>) = item?.extract()?;
        if options.selection.role(&name, &shape) != Role::Ignored {
            held.push(hold_tensor(name, &dtype, shape, &data)?);
        }
    }
    let entries: Vec<TensorEntry> = held.iter().map(|h| h.entry.clone()).collect();
    // SAFETY: each buffer is C-contiguous, `len_bytes` long, and held (its exporter keeps
    // the memory alive and in place) until `held` is dropped after the engine returns.
    let data: Vec<&[u8]> = held
        .iter()
        .map(|h| unsafe { std::slice::from_raw_parts(h.buffer.buf_ptr() as *const u8, h.buffer.len_bytes()) })
        .collect();
    let source = MemoryTensors::new(entries, data).map_err(to_pyerr)?;
    let report = run_detached(py, threads, None, |cancel, _| engine::source_metrics(&source, &options, cancel))?;
    drop(source);
    drop(held);
    for warning in &report.warnings {
        let message = CString::new(warning.replace('\0', "")).expect("NULs removed");
        PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), &message, 1)?;
    }
    report_dict(py, &report)
}

/// The counted tensors among `entries` (`(name, shape)` pairs), in the given order, as
/// `(name, "matrix" | "bias")`: the one definition of tensor selection.
#[pyfunction]
#[pyo3(signature = (entries, include=None, exclude=None))]
fn select_tensors(
    entries: &Bound<'_, PyAny>,
    include: Option<&str>,
    exclude: Option<&str>,
) -> PyResult<Vec<(String, &'static str)>> {
    let selection = Selection::new(include, exclude).map_err(to_pyerr)?;
    let mut counted = Vec::new();
    for item in entries.try_iter()? {
        let (name, shape): (String, Vec<usize>) = item?.extract()?;
        match selection.role(&name, &shape) {
            Role::Matrix { .. } => counted.push((name, "matrix")),
            Role::Bias => counted.push((name, "bias")),
            Role::Ignored => {}
        }
    }
    Ok(counted)
}

#[pymodule]
fn _rust_metrics(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let defaults = SvdOptions::default();
    m.add("METRIC_NAMES", METRIC_NAMES.to_vec())?;
    m.add("DEFAULT_EXCLUDE", DEFAULT_EXCLUDE)?;
    m.add("DEFAULT_EXACT_MAX_DIM", defaults.exact_max_dim)?;
    m.add("ENGINE_FINGERPRINT", env!("TRAINMAP_ENGINE_FINGERPRINT"))?;
    m.add("CheckpointError", m.py().get_type::<CheckpointError>())?;
    m.add_class::<CheckpointStats>()?;
    m.add_function(wrap_pyfunction!(checkpoint_stats, m)?)?;
    m.add_function(wrap_pyfunction!(trajectory_stats, m)?)?;
    m.add_function(wrap_pyfunction!(tensor_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(select_tensors, m)?)?;
    Ok(())
}
