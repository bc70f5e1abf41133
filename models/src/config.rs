//! GPT configurations (`models/configs/*.ron`): what is trained.

use crate::error::{field_line, ModelError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How attention is computed, which decides what it saves for backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attention {
    /// Scores and softmax probabilities materialised (B x NH x T x T); the probabilities are saved.
    Materialized,
    /// Flash-style: only the per-row log-sum-exp (B x NH x T, fp32) is saved; scores are recomputed.
    Fused,
}

/// Element types that the step uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    Bf16,
    F32,
    I32,
}

impl DType {
    pub fn size(self) -> u64 {
        match self {
            DType::Bf16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// Mixed-precision policy. The default (and only one the executor runs) is bf16 weights and
/// gradients with fp32 master weights and fp32 AdamW moments: 16 bytes per parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Precision {
    pub weights: DType,
    pub grads: DType,
    pub master: DType,
    pub adam: DType,
}

impl Default for Precision {
    fn default() -> Self {
        Precision { weights: DType::Bf16, grads: DType::Bf16, master: DType::F32, adam: DType::F32 }
    }
}

impl Precision {
    /// Bytes per parameter over weights, grads, master copy and the two Adam moments.
    pub fn bytes_per_param(&self) -> u64 {
        self.weights.size() + self.grads.size() + self.master.size() + 2 * self.adam.size()
    }
    /// Bytes per parameter of the optimizer block (master + m + v).
    pub fn optimizer_bytes_per_param(&self) -> u64 {
        self.master.size() + 2 * self.adam.size()
    }
}

/// One GPT configuration plus the shape of the micro-batch a step trains on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    pub name: String,
    /// Transformer layers (L).
    pub layers: u32,
    /// Hidden size (C).
    pub hidden: u32,
    /// Attention heads (NH); `hidden` must be a multiple.
    pub heads: u32,
    /// Vocabulary of the tokenizer (V), used for the parameter count.
    pub vocab: u32,
    /// Vocabulary rows actually allocated (Vp >= V, padded for fast kernels).
    pub padded_vocab: u32,
    /// Context length the position table is sized for (n_ctx).
    pub max_seq: u32,
    /// Micro-batch (B).
    pub batch: u32,
    /// Sequence length trained on (T <= max_seq).
    pub seq: u32,
    /// Output layer shares the token embedding table.
    pub tied_embeddings: bool,
    pub attention: Attention,
    pub precision: Precision,
    /// Vocabulary chunks the output layer and cross-entropy are split into (divides padded_vocab).
    /// One chunk keeps the whole logits tensor; more chunks recompute each chunk's logits in
    /// backward but only ever hold one chunk of logits and can stream the weights chunk by chunk.
    pub output_chunks: u32,
}

/// The largest shapes offplan plans (see [`GptConfig::validate`]).
pub const MAX_LAYERS: u32 = 512;
pub const MAX_HIDDEN: u32 = 65536;
pub const MAX_HEADS: u32 = 512;
pub const MAX_VOCAB: u32 = 1 << 20;
pub const MAX_SEQ: u32 = 1 << 17;
/// The most bytes one training step may hold (weights, gradients, optimizer state and the
/// activations of every layer): 256 PiB, far past any machine, so that every byte count of the
/// step fits in 64 bits.
pub const MAX_STEP_BYTES: f64 = (1u64 << 58) as f64;
pub const MAX_BATCH: u32 = 4096;
pub const MAX_OUTPUT_CHUNKS: u32 = 256;

/// "1, 2, 3, 4, 6, 8, ..." : the divisors of `n` up to 64, for hints.
fn small_divisors(n: u32) -> String {
    let d: Vec<String> = (1..=64u32.min(n)).filter(|k| n.is_multiple_of(*k)).map(|k| k.to_string()).collect();
    format!("{} divide it", d.join(", "))
}

impl GptConfig {
    /// Loads and validates a config file; errors name the file, the line and what to fix.
    pub fn load(path: &Path) -> Result<GptConfig, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io { path: path.to_path_buf(), source: e })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<GptConfig, ModelError> {
        let cfg: GptConfig = ron::from_str(text).map_err(|e| ModelError::parse(path, e, "models/configs/"))?;
        cfg.validate().map_err(|(field, message)| ModelError::Invalid {
            path: path.to_path_buf(),
            line: field_line(text, field),
            message,
        })?;
        Ok(cfg)
    }

    /// Checks what the types cannot: returns the offending field and what to change.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("layers", self.layers),
            ("hidden", self.hidden),
            ("heads", self.heads),
            ("vocab", self.vocab),
            ("padded_vocab", self.padded_vocab),
            ("max_seq", self.max_seq),
            ("batch", self.batch),
            ("seq", self.seq),
            ("output_chunks", self.output_chunks),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err((field, format!("`{field}` is 0: it must be at least 1")));
            }
        }
        // What offplan plans in reasonable time (the step program has about 17 ops a layer, and
        // the planner's work grows with layers and choices): well past the largest shipped config
        // (gpt3-175b: 96 layers, hidden 12288, 96 heads, seq 2048).
        let limits = [
            ("layers", self.layers, MAX_LAYERS),
            ("hidden", self.hidden, MAX_HIDDEN),
            ("heads", self.heads, MAX_HEADS),
            ("padded_vocab", self.padded_vocab, MAX_VOCAB),
            ("max_seq", self.max_seq, MAX_SEQ),
            ("batch", self.batch, MAX_BATCH),
            ("output_chunks", self.output_chunks, MAX_OUTPUT_CHUNKS),
        ];
        for (field, v, max) in limits {
            if v > max {
                return Err((field, format!("`{field}` is {v}: offplan plans at most {max} (a step of that size would take the planner too long to plan interactively)")));
            }
        }
        let (b, t, c, nh, l) =
            (self.batch as f64, self.seq.max(self.max_seq) as f64, self.hidden as f64, self.heads as f64, self.layers as f64);
        let params = l * (12.0 * c * c + 13.0 * c) + 2.0 * self.padded_vocab as f64 * c + self.max_seq as f64 * c;
        let activations = l * (34.0 * b * t * c + 5.0 * nh * b * t * t) + b * t * self.padded_vocab as f64;
        let bytes = 18.0 * params + 4.0 * activations;
        if bytes > MAX_STEP_BYTES {
            return Err((
                "layers",
                format!(
                    "one step of this config would hold about {:.1e} bytes, past the {:.1e} offplan plans: make it smaller",
                    bytes, MAX_STEP_BYTES
                ),
            ));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err((
                "heads",
                format!(
                    "hidden {} is not divisible by heads {}: pick heads that divide hidden (head size = hidden / heads)",
                    self.hidden, self.heads
                ),
            ));
        }
        if self.padded_vocab < self.vocab {
            return Err((
                "padded_vocab",
                format!("padded_vocab {} is below vocab {}: padding may only add rows", self.padded_vocab, self.vocab),
            ));
        }
        if self.seq > self.max_seq {
            return Err(("seq", format!("seq {} exceeds max_seq {}: the position table has only max_seq rows", self.seq, self.max_seq)));
        }
        if !self.padded_vocab.is_multiple_of(self.output_chunks) {
            return Err((
                "output_chunks",
                format!(
                    "output_chunks {} does not divide padded_vocab {}: choose a divisor ({})",
                    self.output_chunks,
                    self.padded_vocab,
                    small_divisors(self.padded_vocab)
                ),
            ));
        }
        if self.precision != Precision::default() {
            return Err(("precision", "only the policy (weights: Bf16, grads: Bf16, master: F32, adam: F32) is supported".into()));
        }
        Ok(())
    }

    /// The same config trained on another micro-batch shape or chunking; validated again.
    pub fn with_shape(&self, batch: Option<u32>, seq: Option<u32>, output_chunks: Option<u32>) -> Result<GptConfig, String> {
        let mut c = self.clone();
        if let Some(b) = batch {
            c.batch = b;
        }
        if let Some(t) = seq {
            c.seq = t;
        }
        if let Some(k) = output_chunks {
            c.output_chunks = k;
        }
        c.validate().map_err(|(_, m)| m)?;
        Ok(c)
    }

    pub fn head_size(&self) -> u32 {
        self.hidden / self.heads
    }

    /// Parameters of one transformer layer: 12 C^2 + 13 C (two layer norms, QKV, projection, MLP).
    pub fn layer_params(&self) -> u64 {
        let c = self.hidden as u64;
        12 * c * c + 13 * c
    }

    /// Parameter count with the tokenizer's vocabulary (as papers count).
    pub fn param_count(&self) -> u64 {
        self.params_with_vocab(self.vocab as u64)
    }

    /// Parameter count as allocated, with the padded vocabulary.
    pub fn allocated_param_count(&self) -> u64 {
        self.params_with_vocab(self.padded_vocab as u64)
    }

    fn params_with_vocab(&self, v: u64) -> u64 {
        let c = self.hidden as u64;
        let tables = if self.tied_embeddings { v * c } else { 2 * v * c };
        tables + self.max_seq as u64 * c + self.layers as u64 * self.layer_params() + 2 * c
    }

    /// Tokens in one micro-batch (B*T).
    pub fn tokens(&self) -> u64 {
        self.batch as u64 * self.seq as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPT2: &str = r#"GptConfig(
    name: "gpt2-124m",
    layers: 12,
    hidden: 768,
    heads: 12,
    vocab: 50257,
    padded_vocab: 50304,
    max_seq: 1024,
    batch: 8,
    seq: 1024,
    tied_embeddings: true,
    attention: Fused,
    precision: Precision(weights: Bf16, grads: Bf16, master: F32, adam: F32),
    output_chunks: 1,
)"#;

    fn parse(text: &str) -> Result<GptConfig, ModelError> {
        GptConfig::parse(text, Path::new("test.ron"))
    }

    #[test]
    fn gpt2_parameter_counts_match_the_paper_and_llm_c() {
        let c = parse(GPT2).unwrap();
        assert_eq!(c.param_count(), 124_439_808);
        assert_eq!(c.allocated_param_count(), 124_475_904);
        assert_eq!(c.precision.bytes_per_param(), 16);
    }

    #[test]
    fn rejects_unknown_field_with_line() {
        let text = GPT2.replace("    batch: 8,", "    batch: 8,\n    dropout: 0.1,");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("test.ron:10"), "{err}");
        assert!(err.contains("dropout"), "{err}");
    }

    #[test]
    fn rejects_missing_field() {
        let text = GPT2.replace("    heads: 12,\n", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("heads"), "{err}");
    }

    #[test]
    fn rejects_indivisible_heads_at_the_heads_line() {
        let text = GPT2.replace("heads: 12", "heads: 7");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("test.ron:5"), "{err}");
        assert!(err.contains("not divisible"), "{err}");
    }

    #[test]
    fn rejects_zero_layers() {
        let text = GPT2.replace("layers: 12", "layers: 0");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("test.ron:3") && err.contains("layers"), "{err}");
    }

    #[test]
    fn rejects_seq_beyond_context() {
        let c = parse(GPT2).unwrap();
        assert!(c.with_shape(None, Some(2048), None).is_err());
        assert_eq!(c.with_shape(Some(4), Some(512), None).unwrap().tokens(), 2048);
    }
}

#[cfg(test)]
mod validation_tests {
    use super::*;
    use proptest::prelude::*;

    fn extreme() -> impl Strategy<Value = u32> {
        prop_oneof![Just(0u32), Just(1), Just(u32::MAX), 1u32..100_000, any::<u32>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Any field values: validation answers without panicking, and a config it accepts
        /// builds its step program without overflow.
        #[test]
        fn any_fields_validate_without_panic(
            layers in extreme(), hidden in extreme(), heads in extreme(), vocab in extreme(), padded in extreme(),
            max_seq in extreme(), batch in extreme(), seq in extreme(), chunks in extreme(), tied in any::<bool>(), fused in any::<bool>()
        ) {
            let c = GptConfig {
                name: "p".into(), layers, hidden, heads, vocab, padded_vocab: padded, max_seq, batch, seq,
                tied_embeddings: tied, attention: if fused { Attention::Fused } else { Attention::Materialized },
                precision: Precision::default(), output_chunks: chunks,
            };
            if c.validate().is_ok() && c.layers <= 8 {
                let p = crate::Program::build(&c);
                prop_assert!(!p.ops.is_empty());
            }
        }
    }
}
