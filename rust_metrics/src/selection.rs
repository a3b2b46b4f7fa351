//! Which tensors count for the statistics (docs/design.md, "Checkpoint statistics").
//!
//! Embeddings and normalisation layers are excluded by name; remaining tensors with at
//! least two dimensions are weight matrices (read as `shape[0] × prod(rest)`), remaining
//! 1-D tensors whose name ends in `bias` are biases, and everything else is ignored.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;

use crate::error::{MetricsError, Result};

/// Compiled patterns kept for reuse, at most this many.
const COMPILED_KEPT: usize = 64;

/// `pattern` compiled, from a process-wide cache. Compiling [`DEFAULT_EXCLUDE`] takes a
/// few hundred microseconds, more than the statistics of a small model: a caller that
/// asks for the statistics of weights in memory at every step (a Recorder, a seed sweep's
/// statistics in the loop) would otherwise spend most of its time compiling it again. A
/// `Regex` is cheap to clone and shares its compiled program.
fn compiled(pattern: &str) -> std::result::Result<Regex, regex::Error> {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(regex) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return Ok(regex.clone());
    }
    let regex = Regex::new(pattern)?;
    let mut kept = cache.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() >= COMPILED_KEPT {
        kept.clear();
    }
    kept.insert(pattern.to_owned(), regex.clone());
    Ok(regex)
}

/// Default exclusion: embeddings (`embed`, `wte`, `wpe`, `pos_emb`, `unembed`, `lm_head`
/// anywhere in the name) and normalisation layers (`norm`, `ln`, `layernorm`, `batchnorm`,
/// `bn` as a dot-separated name component, optionally with a `prefix_` and a numeric or
/// `_suffix`, e.g. `ln_f`, `bn1`, `input_layernorm`, `final_layer_norm`), case-insensitive.
pub const DEFAULT_EXCLUDE: &str = r"(?i)(embed|wte|wpe|pos_emb|lm_head)|(^|\.)([a-z0-9]+_)*(layer_?norm|batch_?norm|group_?norm|norm|ln|bn)(\d+|_[a-z0-9]+)*(\.|$)";

/// The role a tensor plays in the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A weight matrix, read as `rows × cols` (a tensor of more than 2 dims as
    /// `shape[0] × prod(rest)`).
    Matrix {
        /// `shape[0]`.
        rows: usize,
        /// The product of the other dimensions.
        cols: usize,
    },
    /// A bias (a 1-D tensor whose name ends in `bias`).
    Bias,
    /// Not counted.
    Ignored,
}

/// Which tensors count, by name (include/exclude patterns) and shape: the one definition
/// of tensor selection (Python asks it through `select_tensors`).
#[derive(Clone, Debug)]
pub struct Selection {
    include: Option<Regex>,
    exclude: Option<Regex>,
}

impl Selection {
    /// `include`: when given, only names matching it count. `exclude`: `None` means
    /// [`DEFAULT_EXCLUDE`]; an empty string excludes nothing. Both are searched anywhere in
    /// the name (use `^`/`$` to anchor).
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<Self> {
        let compile = |which: &'static str, pattern: &str| {
            compiled(pattern).map_err(|e| MetricsError::Pattern { which, message: e.to_string() })
        };
        let include = include.map(|p| compile("include", p)).transpose()?;
        let exclude = match exclude {
            None => Some(compile("exclude", DEFAULT_EXCLUDE)?),
            Some("") => None,
            Some(p) => Some(compile("exclude", p)?),
        };
        Ok(Selection { include, exclude })
    }

    /// The role of the tensor `name` of shape `shape`.
    pub fn role(&self, name: &str, shape: &[usize]) -> Role {
        if let Some(include) = &self.include {
            if !include.is_match(name) {
                return Role::Ignored;
            }
        }
        if self.exclude.as_ref().is_some_and(|e| e.is_match(name)) {
            return Role::Ignored;
        }
        match shape {
            [] => Role::Ignored,
            [n] if *n > 0 && name.ends_with("bias") => Role::Bias,
            [_] => Role::Ignored,
            [rows, rest @ ..] => {
                let cols: usize = rest.iter().product();
                if *rows == 0 || cols == 0 {
                    Role::Ignored
                } else {
                    Role::Matrix { rows: *rows, cols }
                }
            }
        }
    }
}

impl Default for Selection {
    fn default() -> Self {
        Selection::new(None, None).expect("the default pattern compiles")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, shape: &[usize]) -> Role {
        Selection::default().role(name, shape)
    }

    #[test]
    fn embeddings_and_norms_are_excluded() {
        for name in [
            "embed.W_E",
            "transformer.wte.weight",
            "transformer.wpe.weight",
            "pos_emb.W_pos",
            "unembed.W_U",
            "lm_head.weight",
            "encoder.layer.0.attention.output.LayerNorm.weight",
            "blocks.0.ln1.weight",
            "ln_f.weight",
            "transformer.h.0.ln_2.bias",
            "model.layers.3.input_layernorm.weight",
            "decoder.final_layer_norm.bias",
            "layer1.0.bn1.weight",
            "layer1.0.bn1.bias",
            "norm.bias",
            "BatchNorm.weight",
        ] {
            assert_eq!(role(name, &[4, 4]), Role::Ignored, "{name}");
        }
    }

    #[test]
    fn weights_and_biases_are_kept() {
        assert_eq!(role("fc1.weight", &[3, 5]), Role::Matrix { rows: 3, cols: 5 });
        assert_eq!(role("conv1.weight", &[8, 3, 3, 3]), Role::Matrix { rows: 8, cols: 27 });
        assert_eq!(role("blocks.0.attn.W_Q", &[4, 128, 32]), Role::Matrix { rows: 4, cols: 4096 });
        assert_eq!(role("fc1.bias", &[3]), Role::Bias);
        assert_eq!(role("normal_head.weight", &[2, 2]), Role::Matrix { rows: 2, cols: 2 });
        assert_eq!(role("kln.weight", &[2, 2]), Role::Matrix { rows: 2, cols: 2 });
    }

    #[test]
    fn other_tensors_are_ignored() {
        assert_eq!(role("scale", &[3]), Role::Ignored);
        assert_eq!(role("temperature", &[]), Role::Ignored);
        assert_eq!(role("empty.weight", &[0, 3]), Role::Ignored);
        assert_eq!(role("empty.bias", &[0]), Role::Ignored);
    }

    #[test]
    fn overrides_replace_the_default() {
        let only_fc = Selection::new(Some(r"^fc"), Some("")).unwrap();
        assert_eq!(only_fc.role("conv.weight", &[2, 2]), Role::Ignored);
        assert_eq!(only_fc.role("fc.norm.weight", &[2, 2]), Role::Matrix { rows: 2, cols: 2 });
        let no_head = Selection::new(None, Some("head")).unwrap();
        assert_eq!(no_head.role("embed.weight", &[2, 2]), Role::Matrix { rows: 2, cols: 2 });
        assert_eq!(no_head.role("head.weight", &[2, 2]), Role::Ignored);
        assert!(matches!(Selection::new(Some("("), None), Err(MetricsError::Pattern { .. })));
    }

    #[test]
    fn compiled_patterns_are_reused_and_bad_ones_are_never_kept() {
        // The same pattern asked again (from another selection, include or exclude) gives
        // the same matches; more patterns than are kept only empties the cache.
        for round in 0..3 {
            for i in 0..(COMPILED_KEPT + 5) {
                let selection = Selection::new(Some(&format!("^fc{i}\\.")), None).unwrap();
                assert_eq!(selection.role(&format!("fc{i}.weight"), &[2, 2]), Role::Matrix { rows: 2, cols: 2 });
                assert_eq!(selection.role(&format!("fc{}.weight", i + 1), &[2, 2]), Role::Ignored, "round {round}");
            }
        }
        for which in ["include", "exclude"] {
            let bad = if which == "include" { Selection::new(Some("("), None) } else { Selection::new(None, Some("(")) };
            assert!(matches!(bad, Err(MetricsError::Pattern { which: w, .. }) if w == which));
        }
    }
}
