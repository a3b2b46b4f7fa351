//! Where tensor bytes come from: a checkpoint file ([`crate::checkpoint::Checkpoint`]) or
//! buffers already in memory ([`MemoryTensors`]). The engine sees only this trait, so both
//! give the same numbers and the same content hash for the same tensors.

use std::path::{Path, PathBuf};

use crate::tensor::{for_each_chunk, TensorEntry, ValueType};
use crate::error::{MetricsError, Result};

/// Label that error messages and warnings use for tensors passed from memory.
pub const MEMORY_ORIGIN: &str = "in-memory tensors";

/// A set of named tensors whose raw little-endian bytes can be read (again).
pub trait TensorSource: Sync {
    /// What messages name: the checkpoint file, or [`MEMORY_ORIGIN`].
    fn origin(&self) -> &Path;
    /// Header entries, in a fixed order.
    fn tensors(&self) -> &[TensorEntry];
    /// Call `f` on consecutive pieces of the raw little-endian bytes of tensor `index`,
    /// each a whole number of elements. An error means the bytes could not be read whole.
    fn read_chunks(&self, index: usize, f: &mut dyn FnMut(&[u8])) -> Result<()>;
    /// Call `f` on consecutive decoded chunks of tensor `index`.
    fn scan(&self, index: usize, vt: ValueType, f: &mut dyn FnMut(&[f64])) -> Result<()> {
        self.read_chunks(index, &mut |raw| for_each_chunk(raw, vt, &mut *f))
    }
}

/// Tensors in caller-owned buffers (numpy arrays, torch tensors' storage), read in place.
pub struct MemoryTensors<'a> {
    origin: PathBuf,
    tensors: Vec<TensorEntry>,
    data: Vec<&'a [u8]>,
}

impl<'a> MemoryTensors<'a> {
    /// `tensors[i]` describes `data[i]`; names must be unique and byte lengths must match
    /// shape × dtype size (the caller has checked dtypes it cannot decode).
    pub fn new(tensors: Vec<TensorEntry>, data: Vec<&'a [u8]>) -> Result<Self> {
        let origin = PathBuf::from(MEMORY_ORIGIN);
        let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(MetricsError::format(&origin, format!("tensor name '{}' appears twice", pair[0])));
        }
        for (t, bytes) in tensors.iter().zip(&data) {
            let expected = t.numel() * t.dtype.bitsize() / 8;
            if bytes.len() != expected {
                return Err(MetricsError::format(
                    &origin,
                    format!(
                        "tensor '{}' has shape {:?} and dtype {:?} ({expected} bytes) but its buffer holds {} bytes",
                        t.name,
                        t.shape,
                        t.dtype,
                        bytes.len()
                    ),
                ));
            }
        }
        Ok(MemoryTensors { origin, tensors, data })
    }
}

impl TensorSource for MemoryTensors<'_> {
    fn origin(&self) -> &Path {
        &self.origin
    }
    fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }
    fn read_chunks(&self, index: usize, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        f(self.data[index]);
        Ok(())
    }
}
