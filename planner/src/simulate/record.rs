//! Writes down what the engine does: memory by category after every change and its peak, the
//! spans of each lane, and block residency spans.

use models::inventory::MemoryCategory;
use models::schedule::Lane;
use models::trace::{BlockSpan, BlockState, MemorySample, Span, SpanKind, Trace};
use models::{BlockId, Bytes, Program, Seconds, TensorId};

pub(crate) struct Recorder {
    /// Per tensor: device bytes after granularity rounding, and its category index.
    rounded: Vec<u64>,
    category: Vec<usize>,
    by_category: [u64; MemoryCategory::ALL.len()],
    total: u64,
    peak: u64,
    peak_time: f64,
    peak_action: usize,
    memory: Vec<MemorySample>,
    spans: Vec<Span>,
    /// Per block: its state now and since when (placeable blocks only are tracked).
    block_now: Vec<Option<(BlockState, f64)>>,
    blocks: Vec<BlockSpan>,
}

impl Recorder {
    pub fn new(program: &Program, granularity: Bytes) -> Recorder {
        let inv = &program.inventory;
        Recorder {
            rounded: inv.tensors.iter().map(|t| t.bytes.round_up(granularity).0).collect(),
            category: inv
                .tensors
                .iter()
                .map(|t| MemoryCategory::ALL.iter().position(|c| *c == t.category).expect("every category is listed"))
                .collect(),
            by_category: [0; MemoryCategory::ALL.len()],
            total: 0,
            peak: 0,
            peak_time: 0.0,
            peak_action: 0,
            memory: Vec::new(),
            spans: Vec::new(),
            block_now: vec![None; inv.blocks.len()],
            blocks: Vec::new(),
        }
    }

    /// A tensor resident when the step starts (no action, no sample of its own).
    pub fn resident_at_start(&mut self, t: TensorId) {
        self.by_category[self.category[t.index()]] += self.rounded[t.index()];
        self.total += self.rounded[t.index()];
        self.peak = self.total;
    }

    /// The first sample, once the resident tensors are counted.
    pub fn start(&mut self) {
        self.sample(0.0);
    }

    pub fn alloc(&mut self, t: TensorId, now: f64, action: usize) {
        self.by_category[self.category[t.index()]] += self.rounded[t.index()];
        self.total += self.rounded[t.index()];
        if self.total > self.peak {
            self.peak = self.total;
            self.peak_time = now;
            self.peak_action = action;
        }
        self.sample(now);
    }

    pub fn free(&mut self, t: TensorId, now: f64) {
        self.by_category[self.category[t.index()]] -= self.rounded[t.index()];
        self.total -= self.rounded[t.index()];
        self.sample(now);
    }

    fn sample(&mut self, now: f64) {
        let by_category = MemoryCategory::ALL.iter().zip(self.by_category).map(|(c, b)| (*c, Bytes(b))).collect();
        self.memory.push(MemorySample { time: Seconds(now), by_category });
    }

    pub fn span(&mut self, lane: Lane, kind: SpanKind, start: f64, end: f64, label: String, action: usize) {
        self.spans.push(Span { lane, kind, start: Seconds(start), end: Seconds(end), label, action });
    }

    /// A block's state from `now` on (None: nowhere, e.g. activations before forward).
    pub fn block(&mut self, b: BlockId, state: Option<BlockState>, now: f64) {
        let cur = self.block_now[b.index()];
        if cur.map(|c| c.0) == state {
            return;
        }
        if let Some((s, since)) = cur {
            if now > since {
                self.blocks.push(BlockSpan { block: b, state: s, start: Seconds(since), end: Seconds(now) });
            }
        }
        self.block_now[b.index()] = state.map(|s| (s, now));
    }

    pub fn finish(mut self, step_time: f64) -> Trace {
        for b in 0..self.block_now.len() {
            self.block(BlockId(b as u32), None, step_time);
        }
        self.blocks.sort_by(|a, b| a.block.cmp(&b.block).then(a.start.0.total_cmp(&b.start.0)));
        Trace {
            step_time: Seconds(step_time),
            peak_allocated: Bytes(self.peak),
            peak_time: Seconds(self.peak_time),
            peak_action: self.peak_action,
            memory: self.memory,
            spans: self.spans,
            blocks: self.blocks,
        }
    }
}
