//! The step cut into stages: a prologue, the embedding, each layer's forward, the head (one
//! stage per output chunk), each layer's backward with its Adam update (unclipped) or its partial
//! norm (clipped), the embedding's backward; clipped, the clip scale's stage and one stage per
//! update (so streamed optimizer state comes in one owner at a time); and an epilogue of three stages that drain the copies and host updates still in flight; and
//! the memory checkpoints (slots) at which the solver counts live bytes: one per op, one for a
//! stage without ops.

use models::program::{Clipping, OpKind};
use models::Program;
use std::ops::Range;

/// Stages with no compute after the last op, to drain copies and host updates.
const EPILOGUE: usize = 3;

/// One stage of the step.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub name: String,
    /// Program op indices.
    pub ops: Range<usize>,
    /// Memory checkpoints: one per op, or one for a stage without ops.
    pub slots: Range<usize>,
}

/// The step cut into stages, and where each op's memory checkpoint (slot) is.
#[derive(Clone, Debug)]
pub struct Stages {
    pub stages: Vec<Stage>,
    pub slot_of_op: Vec<usize>,
    pub stage_of_op: Vec<usize>,
    pub n_slots: usize,
    /// Per slot: the op run there, if any.
    pub op_of_slot: Vec<Option<usize>>,
}

impl Stages {
    pub fn build(program: &Program) -> Stages {
        let clipped = program.clipping == Clipping::GlobalNorm;
        let starts_stage = |k: OpKind| {
            matches!(
                k,
                OpKind::Embed
                    | OpKind::Ln1(_)
                    | OpKind::LnF
                    | OpKind::OutBwd(_)
                    | OpKind::FcProjBwd(_)
                    | OpKind::EmbedBwd
                    | OpKind::ClipScale
            ) || matches!(k, OpKind::OutFwd(i) if i > 0)
                || (clipped && matches!(k, OpKind::Adam(_)))
        };
        let mut cuts: Vec<usize> = program.ops.iter().enumerate().filter(|(_, o)| starts_stage(o.kind)).map(|(i, _)| i).collect();
        if cuts.first() != Some(&0) {
            cuts.insert(0, 0);
        }
        let mut stages = vec![Stage { name: "prologue".into(), ops: 0..0, slots: 0..1 }];
        let mut slot = 1;
        for (j, &a) in cuts.iter().enumerate() {
            let b = cuts.get(j + 1).copied().unwrap_or(program.ops.len());
            let op = &program.ops[a];
            let name = match program.micro_batches {
                k if k > 1 && op.phase != models::program::Phase::Optimizer => format!("mb{}.{}", op.micro, stage_name(op.kind)),
                _ => stage_name(op.kind),
            };
            stages.push(Stage { name, ops: a..b, slots: slot..slot + (b - a) });
            slot += b - a;
        }
        for e in 0..EPILOGUE {
            stages.push(Stage { name: format!("epilogue{e}"), ops: 0..0, slots: slot..slot + 1 });
            slot += 1;
        }
        let mut slot_of_op = vec![0; program.ops.len()];
        let mut stage_of_op = vec![0; program.ops.len()];
        let mut op_of_slot = vec![None; slot];
        for (s, st) in stages.iter().enumerate() {
            for (k, i) in st.ops.clone().enumerate() {
                slot_of_op[i] = st.slots.start + k;
                stage_of_op[i] = s;
                op_of_slot[st.slots.start + k] = Some(i);
            }
        }
        Stages { stages, slot_of_op, stage_of_op, n_slots: slot, op_of_slot }
    }

    pub fn first_slot(&self, s: usize) -> usize {
        self.stages[s].slots.start
    }
    pub fn last_slot(&self, s: usize) -> usize {
        self.stages[s].slots.end - 1
    }
    pub fn len(&self) -> usize {
        self.stages.len()
    }
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }
}

fn stage_name(k: OpKind) -> String {
    match k {
        OpKind::Embed => "embed".into(),
        OpKind::Ln1(l) => format!("layer{l}.fwd"),
        OpKind::LnF => "head.fwd".into(),
        OpKind::OutFwd(i) => format!("chunk{i}.fwd"),
        OpKind::OutBwd(i) => format!("chunk{i}.bwd"),
        OpKind::FcProjBwd(l) => format!("layer{l}.bwd"),
        OpKind::EmbedBwd => "embed.bwd".into(),
        OpKind::ClipScale => "clip".into(),
        OpKind::Adam(o) => format!("{o}.update"),
        other => format!("{other:?}"),
    }
}
