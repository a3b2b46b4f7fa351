//! PyO3 binding: converts arguments, runs the engine with the GIL released, reports
//! progress, honours Ctrl-C, and maps errors to Python exceptions. No logic lives here.

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{
    PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyRuntimeWarning, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use rayon::prelude::*;

use crate::engine::{self, CheckpointReport, Options, Statistics};
use crate::error::MetricsError;
use crate::selection::{Role, Selection, DEFAULT_EXCLUDE};
use crate::source::{MemoryTensors, MEMORY_ORIGIN};
use crate::spectrum::{SvdMode, SvdOptions};
use crate::tensor::{TensorEntry, ValueType};

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
    /// The 14 statistics, in METRIC_NAMES (`Statistics::NAMES`) order.
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
            values: r.statistics.values().to_vec(),
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

/// The engine's options as Python passes them: a `trainmap.options.MetricsOptions` (read
/// by attribute, so any object with these five attributes), validated here again because
/// the binding can be called directly.
#[derive(FromPyObject)]
struct MetricsOptions {
    svd: String,
    exact_max_dim: usize,
    rank: usize,
    include: Option<String>,
    exclude: Option<String>,
}

/// The engine's [`Options`] of the binding's `options` argument (None: the defaults).
fn engine_options(given: Option<MetricsOptions>) -> PyResult<Options> {
    let Some(given) = given else {
        return Ok(Options::default());
    };
    let mode = match given.svd.as_str() {
        "exact" => SvdMode::Exact,
        "randomized" => SvdMode::Randomized,
        "auto" => SvdMode::Auto,
        other => {
            return Err(PyValueError::new_err(format!(
                "svd must be 'exact', 'randomized' or 'auto', not {other:?}"
            )))
        }
    };
    if given.rank == 0 {
        return Err(PyValueError::new_err("rank must be at least 1"));
    }
    if given.exact_max_dim == 0 {
        return Err(PyValueError::new_err("exact_max_dim must be at least 1"));
    }
    Ok(Options {
        svd: SvdOptions { mode, exact_max_dim: given.exact_max_dim, rank: given.rank, ..SvdOptions::default() },
        selection: Selection::new(given.include.as_deref(), given.exclude.as_deref()).map_err(to_pyerr)?,
    })
}

/// Flags shared between the waiting Python thread and the engine's worker.
#[derive(Default)]
struct Shared {
    cancel: AtomicBool,
    done: AtomicUsize,
}

/// How long an interrupted call waits for the tensors in flight before returning anyway.
const INTERRUPT_GRACE: Duration = Duration::from_millis(500);

/// Text of a caught panic, for the error message.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Run `work` on a pool of `threads` threads while this thread waits with the GIL released,
/// calling `progress(n_done)` as work completes. Ctrl-C (or an exception raised by
/// `progress`) cancels the work and returns at once: the worker owns everything it reads
/// (`work` is `'static`), so tensors already in flight may finish in the background, their
/// results discarded, while Python goes on. A panic becomes a RuntimeError, never crossing
/// into Python.
fn run_detached<T: Send + 'static>(
    py: Python<'_>,
    threads: usize,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&AtomicBool, &AtomicUsize) -> crate::Result<T> + Send + 'static,
) -> PyResult<T> {
    let shared = Arc::new(Shared::default());
    let (sender, receiver) = mpsc::channel();
    // A Mutex makes the receiver shareable with the GIL-free closures below.
    let receiver = Mutex::new(receiver);
    let wait = |timeout| receiver.lock().expect("only this thread locks it").recv_timeout(timeout);
    let worker_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("rust_metrics".to_owned())
        .spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                engine::with_threads(threads, || work(&worker_shared.cancel, &worker_shared.done)).and_then(|r| r)
            }));
            let _ = sender.send(outcome.map_err(|panic| panic_text(&*panic)));
        })
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the metrics worker thread: {e}")))?;

    let mut reported = 0;
    let outcome = loop {
        match py.detach(|| wait(Duration::from_millis(50))) {
            Ok(outcome) => break outcome,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break Err("the worker thread ended without a result".to_owned()),
        }
        let now = shared.done.load(Ordering::Relaxed);
        let mut interrupt = None;
        if let (Some(callback), true) = (progress, now > reported) {
            reported = now;
            interrupt = callback.call1((now,)).err();
        }
        if interrupt.is_none() {
            interrupt = py.check_signals().err();
        }
        if let Some(e) = interrupt {
            shared.cancel.store(true, Ordering::Relaxed);
            let _ = py.detach(|| wait(INTERRUPT_GRACE));
            return Err(e);
        }
    };
    if let (Some(callback), true) = (progress, shared.done.load(Ordering::Relaxed) > reported) {
        callback.call1((shared.done.load(Ordering::Relaxed),))?;
    }
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(to_pyerr(e)),
        Err(what) => Err(PyRuntimeError::new_err(format!("internal error in rust_metrics (please report): {what}"))),
    }
}

/// One checkpoint: a file, or the shard files of one sharded save.
#[derive(FromPyObject)]
enum CheckpointFiles {
    One(PathBuf),
    Shards(Vec<PathBuf>),
}

/// Statistics of one checkpoint. See `trainmap.metrics.checkpoint_metrics`.
#[pyfunction]
#[pyo3(signature = (path, options=None, *, threads=None))]
fn checkpoint_stats(
    py: Python<'_>,
    path: CheckpointFiles,
    options: Option<MetricsOptions>,
    threads: Option<usize>,
) -> PyResult<CheckpointStats> {
    let options = engine_options(options)?;
    let threads = resolve_threads(py, threads)?;
    run_detached(py, threads, None, move |cancel, _| match &path {
        CheckpointFiles::One(file) => engine::checkpoint_metrics(file, &options, cancel),
        CheckpointFiles::Shards(files) => engine::shards_metrics(files, &options, cancel),
    })
    .map(CheckpointStats::from)
}

/// Statistics of many checkpoints in parallel, in order. See
/// `trainmap.metrics.trajectory_metrics`. `progress(n_done)` is called as they finish.
#[pyfunction]
#[pyo3(signature = (paths, options=None, *, threads=None, progress=None))]
fn trajectory_stats(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    options: Option<MetricsOptions>,
    threads: Option<usize>,
    progress: Option<Bound<'_, PyAny>>,
) -> PyResult<Vec<CheckpointStats>> {
    let options = engine_options(options)?;
    let threads = resolve_threads(py, threads)?;
    let reports = run_detached(py, threads, progress.as_ref(), move |cancel, done| {
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
    for (name, value) in report.statistics.named() {
        dict.set_item(name, value)?;
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
#[pyo3(signature = (tensors, options=None, *, threads=None))]
fn tensor_metrics<'py>(
    py: Python<'py>,
    tensors: &Bound<'py, PyAny>,
    options: Option<MetricsOptions>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyDict>> {
    let options = engine_options(options)?;
    let threads = resolve_threads(py, threads)?;
    let held = hold_model(tensors, &options)?;
    // The worker owns the buffers, so their memory stays valid and in place for as long
    // as it reads them, even if an interrupted call returns first; it releases them (taking
    // the GIL) when it ends.
    let report = run_detached(py, threads, None, move |cancel, _| model_report(&held, &options, cancel))?;
    warn_all(py, &report)?;
    report_dict(py, &report)
}

/// The statistics of several models in memory in one call, in order: each as
/// `tensor_metrics` computes it alone (the same numbers), without a call's fixed costs per
/// model (a seed sweep's statistics in the loop: every seed at every checkpoint step).
#[pyfunction]
#[pyo3(signature = (models, options=None, *, threads=None))]
fn models_metrics<'py>(
    py: Python<'py>,
    models: &Bound<'py, PyAny>,
    options: Option<MetricsOptions>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyList>> {
    let options = engine_options(options)?;
    let threads = resolve_threads(py, threads)?;
    let mut held = Vec::new();
    for model in models.try_iter()? {
        held.push(hold_model(&model?, &options)?);
    }
    // Models in parallel on the call's threads (each one's numbers do not depend on them).
    let reports = run_detached(py, threads, None, move |cancel, done| {
        held.par_iter()
            .map(|model| {
                let report = model_report(model, &options, cancel);
                done.fetch_add(1, Ordering::Relaxed);
                report
            })
            .collect::<crate::Result<Vec<_>>>()
    })?;
    let list = PyList::empty(py);
    for report in &reports {
        warn_all(py, report)?;
        list.append(report_dict(py, report)?)?;
    }
    Ok(list)
}

/// The counted tensors of one model's `(name, dtype, shape, data)` items, their buffers held.
fn hold_model(tensors: &Bound<'_, PyAny>, options: &Options) -> PyResult<Vec<HeldTensor>> {
    let mut held = Vec::new();
    for item in tensors.try_iter()? {
        let (name, dtype, shape, data): (String, String, Vec<usize>, Bound<'_, PyAny>) = item?.extract()?;
        if options.selection.role(&name, &shape) != Role::Ignored {
            held.push(hold_tensor(name, &dtype, shape, &data)?);
        }
    }
    Ok(held)
}

/// The statistics of one model's held tensors (in the worker thread).
fn model_report(held: &[HeldTensor], options: &Options, cancel: &AtomicBool) -> crate::Result<CheckpointReport> {
    let entries: Vec<TensorEntry> = held.iter().map(|h| h.entry.clone()).collect();
    // SAFETY: each buffer is C-contiguous and `len_bytes` long, and `held` outlives `source`.
    let data: Vec<&[u8]> = held
        .iter()
        .map(|h| unsafe { std::slice::from_raw_parts(h.buffer.buf_ptr() as *const u8, h.buffer.len_bytes()) })
        .collect();
    let source = MemoryTensors::new(entries, data)?;
    engine::source_metrics(&source, options, cancel)
}

/// A report's warnings as Python `RuntimeWarning`s.
fn warn_all(py: Python<'_>, report: &CheckpointReport) -> PyResult<()> {
    for warning in &report.warnings {
        let message = CString::new(warning.replace('\0', "")).expect("NULs removed");
        PyErr::warn(py, &py.get_type::<PyRuntimeWarning>(), &message, 1)?;
    }
    Ok(())
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
    m.add("METRIC_NAMES", Statistics::NAMES.to_vec())?;
    m.add("DEFAULT_EXCLUDE", DEFAULT_EXCLUDE)?;
    m.add("DEFAULT_EXACT_MAX_DIM", defaults.exact_max_dim)?;
    m.add("DEFAULT_RANK", defaults.rank)?;
    m.add("ENGINE_FINGERPRINT", env!("TRAINMAP_ENGINE_FINGERPRINT"))?;
    m.add("CheckpointError", m.py().get_type::<CheckpointError>())?;
    m.add_class::<CheckpointStats>()?;
    m.add_function(wrap_pyfunction!(checkpoint_stats, m)?)?;
    m.add_function(wrap_pyfunction!(trajectory_stats, m)?)?;
    m.add_function(wrap_pyfunction!(tensor_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(models_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(select_tensors, m)?)?;
    Ok(())
}
