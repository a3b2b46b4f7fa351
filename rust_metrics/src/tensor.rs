//! Tensors as the engine sees them, wherever their bytes come from: the element types it
//! decodes ([`ValueType`]), a tensor's header entry ([`TensorEntry`]), and the decoding of
//! raw little-endian bytes into f64. Both tensor sources (`checkpoint` files and `source`'s
//! in-memory buffers) build on this module, which depends on no other module of the crate.

use std::ops::Range;

use safetensors::tensor::Dtype;

/// Element types the engine decodes. All arithmetic happens in f64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// IEEE 754 double precision.
    F64,
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl ValueType {
    /// The dtype named `name` ("F64", "F32", "F16", "BF16"), or None for any other.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "F64" => Some(ValueType::F64),
            "F32" => Some(ValueType::F32),
            "F16" => Some(ValueType::F16),
            "BF16" => Some(ValueType::BF16),
            _ => None,
        }
    }

    /// The safetensors dtype of this type.
    pub fn dtype(self) -> Dtype {
        match self {
            ValueType::F64 => Dtype::F64,
            ValueType::F32 => Dtype::F32,
            ValueType::F16 => Dtype::F16,
            ValueType::BF16 => Dtype::BF16,
        }
    }

    /// The type of safetensors dtype `dtype`, or None for one the engine does not decode.
    pub fn from_dtype(dtype: Dtype) -> Option<Self> {
        match dtype {
            Dtype::F64 => Some(ValueType::F64),
            Dtype::F32 => Some(ValueType::F32),
            Dtype::F16 => Some(ValueType::F16),
            Dtype::BF16 => Some(ValueType::BF16),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ValueType::F64 => 8,
            ValueType::F32 => 4,
            ValueType::F16 | ValueType::BF16 => 2,
        }
    }
}

/// One tensor's header entry.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    /// The tensor's name.
    pub name: String,
    /// Its element type, as safetensors names it.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The absolute byte range of its data in the file (for tensors in memory,
    /// `0..length` of their buffer).
    pub data: Range<usize>,
}

impl TensorEntry {
    /// Number of elements (the product of the shape).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Decode little-endian `bytes` of type `vt` into `out` (which must have the right length).
pub fn decode_into(bytes: &[u8], vt: ValueType, out: &mut [f64]) {
    debug_assert_eq!(bytes.len(), out.len() * vt.size());
    match vt {
        ValueType::F64 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = f64::from_le_bytes(c.try_into().unwrap());
            }
        }
        ValueType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().unwrap()) as f64;
            }
        }
        ValueType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64();
            }
        }
        ValueType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64();
            }
        }
    }
}

/// Decode a whole tensor into a new f64 vector.
pub fn decode(bytes: &[u8], vt: ValueType) -> Vec<f64> {
    let mut out = vec![0.0; bytes.len() / vt.size()];
    decode_into(bytes, vt, &mut out);
    out
}

/// Call `f` on consecutive decoded chunks of a tensor, without materialising it.
pub fn for_each_chunk(bytes: &[u8], vt: ValueType, mut f: impl FnMut(&[f64])) {
    const CHUNK: usize = 4096;
    let mut buf = [0.0f64; CHUNK];
    for raw in bytes.chunks(CHUNK * vt.size()) {
        let n = raw.len() / vt.size();
        decode_into(raw, vt, &mut buf[..n]);
        f(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_half_precision() {
        let h: Vec<u8> = [half::f16::from_f32(1.5), half::f16::from_f32(-2.0)]
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect();
        assert_eq!(decode(&h, ValueType::F16), vec![1.5, -2.0]);
        let b: Vec<u8> = [half::bf16::from_f32(0.25), half::bf16::from_f32(3.0)]
            .iter()
            .flat_map(|v| v.to_bits().to_le_bytes())
            .collect();
        assert_eq!(decode(&b, ValueType::BF16), vec![0.25, 3.0]);
    }

    #[test]
    fn chunks_cover_the_tensor() {
        let values: Vec<f64> = (0..10_000).map(|i| i as f64).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut seen = Vec::new();
        for_each_chunk(&bytes, ValueType::F64, |c| seen.extend_from_slice(c));
        assert_eq!(seen, values);
    }
}
