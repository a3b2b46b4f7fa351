//! Safetensors checkpoints: header validation and guarded reading of tensor data.
//!
//! The header is parsed and validated by the `safetensors` crate (so the engine accepts
//! exactly the files the reference implementation accepts); its errors are translated
//! into messages that name the file and, where possible, the tensor. Tensor data is read
//! with positioned reads (`pread`), a few MiB at a time, never through a memory map: a file
//! that another process truncates while the engine reads it then gives an error ("changed
//! while reading") instead of a SIGBUS that would kill the Python process. Only regular
//! files are opened, and without blocking, so a FIFO or device named like a checkpoint is
//! refused rather than waited on.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata, SafeTensorError, SafeTensors};

use crate::error::{MetricsError, Result};
use crate::source::TensorSource;
use crate::tensor::TensorEntry;

/// An open, validated checkpoint.
pub struct Checkpoint {
    path: PathBuf,
    file: File,
    /// File length when the header was validated; reads check it still holds.
    len: u64,
    tensors: Vec<TensorEntry>,
}

const HEADER_LEN_BYTES: usize = 8;
/// The `safetensors` crate's limit on the header size.
const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Bytes read per positioned read (a multiple of every element size).
const READ_CHUNK: usize = 4 << 20;

/// "is a FIFO" etc. for a path that exists but is not a regular file or directory.
fn special_kind(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_file() || file_type.is_dir() {
        None
    } else {
        Some("not a regular file")
    }
}

/// Check the file type of `meta`: a directory or a special file is an error naming `path`.
fn require_regular(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    if meta.is_dir() {
        return Err(MetricsError::format(path, "is a directory, not a .safetensors file"));
    }
    if let Some(kind) = special_kind(meta.file_type()) {
        return Err(MetricsError::format(path, format!("is {kind}, not a regular .safetensors file")));
    }
    Ok(())
}

fn io_error(path: &Path, source: std::io::Error) -> MetricsError {
    match source.kind() {
        ErrorKind::NotFound => MetricsError::NotFound { path: path.to_owned() },
        _ => MetricsError::Io { path: path.to_owned(), source },
    }
}

impl Checkpoint {
    /// Open `path` and validate its header and data layout.
    pub fn open(path: &Path) -> Result<Self> {
        // Refuse special files before opening: opening a FIFO for reading would block.
        let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
        require_regular(path, &meta)?;
        // O_NONBLOCK: should the path be swapped for a FIFO after the check, open() still
        // returns at once, and the second check below refuses it.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        let meta = file.metadata().map_err(|e| io_error(path, e))?;
        require_regular(path, &meta)?;
        let file_len = meta.len();
        if file_len == 0 {
            return Err(MetricsError::format(path, "file is empty"));
        }
        if file_len < HEADER_LEN_BYTES as u64 {
            return Err(MetricsError::format(
                path,
                format!("file is truncated: {file_len} bytes, too short for the 8-byte header length"),
            ));
        }
        let mut len_bytes = [0u8; HEADER_LEN_BYTES];
        read_exact_at(&file, path, &mut len_bytes, 0)?;
        let header_len = u64::from_le_bytes(len_bytes);
        let fail = |error| Err(describe(path, None, file_len, header_len, error));
        if header_len > MAX_HEADER_BYTES {
            return fail(SafeTensorError::HeaderTooLarge);
        }
        if HEADER_LEN_BYTES as u64 + header_len > file_len {
            return fail(SafeTensorError::InvalidHeaderLength);
        }
        let mut head = vec![0u8; HEADER_LEN_BYTES + header_len as usize];
        read_exact_at(&file, path, &mut head, 0)?;

        // The header alone, validated by the reference crate: it checks everything but
        // the data length, which it reports as an incomplete buffer; that check is below.
        let metadata = match SafeTensors::read_metadata(&head) {
            Ok((_, metadata)) => metadata,
            Err(SafeTensorError::MetadataIncompleteBuffer) => {
                serde_json::from_slice::<Metadata>(&head[HEADER_LEN_BYTES..])
                    .map_err(|e| describe(path, Some(&head), file_len, header_len, SafeTensorError::JsonError(e)))?
            }
            Err(error) => return Err(describe(path, Some(&head), file_len, header_len, error)),
        };
        let data_start = HEADER_LEN_BYTES + header_len as usize;
        let tensors_info = metadata.tensors();
        let data_len = tensors_info.values().map(|info| info.data_offsets.1).max().unwrap_or(0);
        if (data_start + data_len) as u64 != file_len {
            return fail(SafeTensorError::MetadataIncompleteBuffer);
        }

        let mut tensors: Vec<TensorEntry> = tensors_info
            .into_iter()
            .map(|(name, info)| TensorEntry {
                name,
                dtype: info.dtype,
                shape: info.shape.clone(),
                data: data_start + info.data_offsets.0..data_start + info.data_offsets.1,
            })
            .collect();
        // File order: deterministic, and sequential through the file.
        tensors.sort_by_key(|t| t.data.start);
        Ok(Checkpoint { path: path.to_owned(), file, len: file_len, tensors })
    }

    /// The error for a file whose length or contents changed under the engine.
    fn changed(&self, detail: String) -> MetricsError {
        MetricsError::format(&self.path, format!("changed while reading ({detail}); was it being written?"))
    }
}

/// `pread` exactly `buf.len()` bytes at `offset`; a short file is a format error.
fn read_exact_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => MetricsError::format(path, "file is shorter than its header says: truncated"),
        _ => MetricsError::Io { path: path.to_owned(), source: e },
    })
}

impl TensorSource for Checkpoint {
    fn origin(&self) -> &Path {
        &self.path
    }
    fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }
    fn read_chunks(&self, index: usize, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        let range = self.tensors[index].data.clone();
        let mut buf = vec![0u8; READ_CHUNK.min(range.len())];
        let mut offset = range.start;
        while offset < range.end {
            let n = READ_CHUNK.min(range.end - offset);
            self.file.read_exact_at(&mut buf[..n], offset as u64).map_err(|e| match e.kind() {
                ErrorKind::UnexpectedEof => self.changed(format!(
                    "tensor '{}' ends past the end of the file",
                    self.tensors[index].name
                )),
                _ => MetricsError::Io { path: self.path.clone(), source: e },
            })?;
            f(&buf[..n]);
            offset += n;
        }
        let now = self.file.metadata().map_err(|e| io_error(&self.path, e))?.len();
        if now != self.len {
            return Err(self.changed(format!("{} bytes when opened, {now} now", self.len)));
        }
        Ok(())
    }
}

/// The shards of one checkpoint (a sharded save: `model-00001-of-00002.safetensors`, ...),
/// read together as one set of tensors through the same guarded reader as a single file.
/// A tensor name in two shards is an error naming both files.
pub struct Shards {
    /// What messages name: the shards' common directory (or the first shard).
    origin: PathBuf,
    parts: Vec<Checkpoint>,
    tensors: Vec<TensorEntry>,
    /// `(part, index in that part)` of each entry of `tensors`.
    owner: Vec<(usize, usize)>,
}

impl Shards {
    /// Open and validate every shard in `paths` (at least one).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let first = paths.first().ok_or_else(|| MetricsError::Option {
            message: "a sharded checkpoint needs at least one file".to_owned(),
        })?;
        let parts = paths.iter().map(|p| Checkpoint::open(p)).collect::<Result<Vec<_>>>()?;
        let mut tensors = Vec::new();
        let mut owner = Vec::new();
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (p, part) in parts.iter().enumerate() {
            for (i, tensor) in part.tensors.iter().enumerate() {
                if let Some(q) = seen.insert(tensor.name.as_str(), p) {
                    return Err(MetricsError::format(
                        &part.path,
                        format!("tensor '{}' is also in {}", tensor.name, parts[q].path.display()),
                    ));
                }
                tensors.push(tensor.clone());
                owner.push((p, i));
            }
        }
        let parent = first.parent().map(Path::to_path_buf).filter(|d| !d.as_os_str().is_empty());
        let origin = match parent {
            Some(dir) if paths.len() > 1 && paths.iter().all(|p| p.parent() == Some(dir.as_path())) => dir,
            _ => first.clone(),
        };
        Ok(Shards { origin, parts, tensors, owner })
    }
}

impl TensorSource for Shards {
    fn origin(&self) -> &Path {
        &self.origin
    }
    fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }
    fn read_chunks(&self, index: usize, f: &mut dyn FnMut(&[u8])) -> Result<()> {
        let (part, local) = self.owner[index];
        self.parts[part].read_chunks(local, f)
    }
}

/// Translate a `safetensors` validation error into a message for people. `head` is the
/// length field and header, when they were read.
fn describe(path: &Path, head: Option<&[u8]>, file_len: u64, header_len: u64, error: SafeTensorError) -> MetricsError {
    let message = match error {
        SafeTensorError::HeaderTooLarge => format!(
            "header length field says {header_len} bytes, over the 100 MB limit: not a safetensors file"
        ),
        SafeTensorError::InvalidHeaderLength | SafeTensorError::HeaderTooSmall => format!(
            "header length {header_len} bytes runs past the end of the file ({file_len} bytes): \
             truncated or not a safetensors file"
        ),
        SafeTensorError::InvalidHeader(e) => format!("header is not valid UTF-8: {e}"),
        SafeTensorError::InvalidHeaderDeserialization(e) | SafeTensorError::JsonError(e) => {
            match head.and_then(mismatched_tensor) {
                Some(detail) if e.to_string().contains("TensorInvalidInfo") => detail,
                _ => format!("header is not valid safetensors JSON: {e}"),
            }
        }
        SafeTensorError::InvalidOffset(name) => format!(
            "data offsets of tensor '{name}' overlap another tensor or leave a gap"
        ),
        SafeTensorError::TensorInvalidInfo => match head.and_then(mismatched_tensor) {
            Some(detail) => detail,
            None => "a tensor's shape and dtype do not match its data offsets".to_owned(),
        },
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "tensor data does not end where the file ends ({file_len} bytes): \
             the file is truncated, has trailing bytes, or declares offsets out of range"
        ),
        SafeTensorError::ValidationOverflow => "a tensor's shape overflows the address space".to_owned(),
        SafeTensorError::MisalignedSlice => "a tensor of sub-byte dtype does not fill whole bytes".to_owned(),
        other => format!("invalid safetensors file: {other}"),
    };
    MetricsError::format(path, message)
}

/// Name the tensor whose byte range disagrees with shape × dtype size (for the error message).
fn mismatched_tensor(head: &[u8]) -> Option<String> {
    let header = head.get(HEADER_LEN_BYTES..)?;
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    for (name, entry) in json.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let dtype: Dtype = serde_json::from_value(entry.get("dtype")?.clone()).ok()?;
        let shape: Vec<usize> = serde_json::from_value(entry.get("shape")?.clone()).ok()?;
        let offsets: (usize, usize) = serde_json::from_value(entry.get("data_offsets")?.clone()).ok()?;
        let expected = shape.iter().product::<usize>() * dtype.bitsize() / 8;
        let actual = offsets.1.saturating_sub(offsets.0);
        if expected != actual {
            return Some(format!(
                "tensor '{name}' has shape {shape:?} and dtype {dtype} ({expected} bytes) \
                 but its data offsets span {actual} bytes"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::ValueType;
    use std::io::Write;

    /// Write a safetensors file from (name, dtype, shape, raw bytes) with a given header.
    fn write_raw(dir: &tempfile::TempDir, name: &str, header: &str, data: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        let mut f = File::create(&path).unwrap();
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        f.write_all(data).unwrap();
        path
    }

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn reads_tensors_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let header = r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let path = write_raw(&dir, "x.safetensors", header, &f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
        let ck = Checkpoint::open(&path).unwrap();
        let names: Vec<_> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let mut seen = Vec::new();
        ck.scan(1, ValueType::F32, &mut |c| seen.extend_from_slice(c)).unwrap();
        assert_eq!(seen, vec![3.0, 4.0]);
    }

    fn open_err(path: &Path) -> String {
        match Checkpoint::open(path) {
            Ok(_) => panic!("expected an error for {}", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_files_give_messages_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.safetensors");
        File::create(&empty).unwrap();
        let msg = open_err(&empty);
        assert!(msg.contains("empty.safetensors") && msg.contains("empty"), "{msg}");

        let short = dir.path().join("short.safetensors");
        std::fs::write(&short, [1u8, 2, 3]).unwrap();
        assert!(open_err(&short).contains("truncated"));

        let long_header = dir.path().join("long.safetensors");
        let mut bytes = 1000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&long_header, bytes).unwrap();
        assert!(open_err(&long_header).contains("runs past the end"));

        let bad_json = write_raw(&dir, "json.safetensors", "{not json", &[]);
        assert!(open_err(&bad_json).contains("JSON"));

        let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let p = write_raw(&dir, "overlap.safetensors", overlap, &[0u8; 12]);
        assert!(open_err(&p).contains("overlap"));

        let mismatch = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let p = write_raw(&dir, "mismatch.safetensors", mismatch, &[0u8; 8]);
        let msg = open_err(&p);
        assert!(msg.contains("'w'") && msg.contains("12 bytes"), "{msg}");

        let beyond = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let p = write_raw(&dir, "beyond.safetensors", beyond, &[0u8; 8]);
        assert!(open_err(&p).contains("does not end where the file ends"));

        let missing = dir.path().join("missing.safetensors");
        assert!(matches!(Checkpoint::open(&missing), Err(MetricsError::NotFound { .. })));
    }
}
