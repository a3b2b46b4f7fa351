//! The engine against the shared table of reference values, `tests/data/reference_statistics.json`
//! at the repository root (computed with numpy by `scripts/make_reference_statistics.py`;
//! the torch path is tested against the same file by
//! `tests/metrics/test_reference_statistics.py`). Each case is computed from memory and
//! from a safetensors file written with the reference serializer.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rust_metrics::engine::{checkpoint_metrics, source_metrics, Options, Statistics};
use rust_metrics::selection::{Role, Selection};
use rust_metrics::source::MemoryTensors;
use rust_metrics::tensor::{TensorEntry, ValueType};
use safetensors::tensor::TensorView;
use serde_json::Value;

fn reference_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/reference_statistics.json")
}

fn load() -> Value {
    let path = reference_file();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// One tensor of a case: its header entry, little-endian bytes and declared role.
struct Case {
    name: String,
    entries: Vec<TensorEntry>,
    bytes: Vec<Vec<u8>>,
    roles: Vec<String>,
    expected: Value,
}

fn encode(values: &[f64], vt: ValueType) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * vt.size());
    for &v in values {
        match vt {
            ValueType::F64 => out.extend_from_slice(&v.to_le_bytes()),
            ValueType::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            ValueType::F16 => out.extend_from_slice(&half::f16::from_f64(v).to_bits().to_le_bytes()),
            ValueType::BF16 => out.extend_from_slice(&half::bf16::from_f64(v).to_bits().to_le_bytes()),
        }
    }
    out
}

fn cases(table: &Value) -> Vec<Case> {
    table["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|case| {
            let mut entries = Vec::new();
            let mut bytes = Vec::new();
            let mut roles = Vec::new();
            for t in case["tensors"].as_array().expect("tensors") {
                let vt = ValueType::from_name(t["dtype"].as_str().unwrap()).expect("a float dtype");
                let shape: Vec<usize> = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
                let values: Vec<f64> = t["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                let raw = encode(&values, vt);
                // The stored values are exact in their dtype: encoding loses nothing.
                assert_eq!(rust_metrics::tensor::decode(&raw, vt), values, "{}", t["name"]);
                entries.push(TensorEntry { name: t["name"].as_str().unwrap().to_owned(), dtype: vt.dtype(), shape, data: 0..raw.len() });
                bytes.push(raw);
                roles.push(t["role"].as_str().unwrap().to_owned());
            }
            Case { name: case["name"].as_str().unwrap().to_owned(), entries, bytes, roles, expected: case["expected"].clone() }
        })
        .collect()
}

/// |got − expected| ≤ atol + rtol·|expected|, and NaN exactly where the reference has null.
fn assert_matches(case: &str, how: &str, got: &Statistics, expected: &Value, rtol: f64, atol: f64) {
    let keys: Vec<&str> = expected.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted_names = Statistics::NAMES.to_vec();
    sorted_names.sort_unstable();
    let mut sorted_keys = keys.clone();
    sorted_keys.sort_unstable();
    assert_eq!(sorted_keys, sorted_names, "{case}: the reference's statistics are not the engine's");
    for (name, value) in got.named() {
        match expected[name].as_f64() {
            None => assert!(value.is_nan(), "{case} ({how}): {name} = {value}, reference NaN"),
            Some(e) => assert!(
                (value - e).abs() <= atol + rtol * e.abs(),
                "{case} ({how}): {name} = {value:e}, reference {e:e} (differs by {:e})",
                (value - e).abs()
            ),
        }
    }
}

#[test]
fn the_reference_names_are_the_engine_names_in_order() {
    let table = load();
    let names: Vec<&str> = table["statistic_names"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(names, Statistics::NAMES);
}

#[test]
fn the_default_selection_gives_the_declared_roles() {
    let selection = Selection::default();
    for case in cases(&load()) {
        for (entry, role) in case.entries.iter().zip(&case.roles) {
            let got = match selection.role(&entry.name, &entry.shape) {
                Role::Matrix { .. } => "matrix",
                Role::Bias => "bias",
                Role::Ignored => "ignored",
            };
            assert_eq!(got, role, "{}: tensor {}", case.name, entry.name);
        }
    }
}

#[test]
fn the_engine_matches_the_reference_values() {
    let table = load();
    let rtol = table["tolerance"]["rtol"].as_f64().unwrap();
    let atol = table["tolerance"]["atol"].as_f64().unwrap();
    let all = cases(&table);
    assert!(all.len() >= 4, "the reference file holds {} cases", all.len());
    let dir = tempfile::tempdir().unwrap();
    for case in all {
        for options in [Options::default(), Options { svd: rust_metrics::SvdOptions { mode: rust_metrics::SvdMode::Exact, ..Default::default() }, ..Default::default() }] {
            let data: Vec<&[u8]> = case.bytes.iter().map(Vec::as_slice).collect();
            let memory = MemoryTensors::new(case.entries.clone(), data).unwrap();
            let report = source_metrics(&memory, &options, &AtomicBool::new(false)).unwrap();
            assert_matches(&case.name, "memory", &report.statistics, &case.expected, rtol, atol);
            assert!(report.warnings.is_empty(), "{}: {:?}", case.name, report.warnings);

            let views: Vec<(String, TensorView<'_>)> = case
                .entries
                .iter()
                .zip(&case.bytes)
                .map(|(e, b)| (e.name.clone(), TensorView::new(e.dtype, e.shape.clone(), b).unwrap()))
                .collect();
            let path = dir.path().join(format!("{}.safetensors", case.name));
            safetensors::serialize_to_file(views, None, &path).unwrap();
            let from_file = checkpoint_metrics(&path, &options, &AtomicBool::new(false)).unwrap();
            assert_matches(&case.name, "file", &from_file.statistics, &case.expected, rtol, atol);
            // A file and the same tensors in memory give identical numbers and hash.
            for (a, b) in report.statistics.values().iter().zip(from_file.statistics.values()) {
                assert_eq!(a.to_bits(), b.to_bits(), "{}", case.name);
            }
            assert_eq!(report.content_hash, from_file.content_hash);
        }
    }
}
