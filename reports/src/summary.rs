//! `summary.md`: the plan summary as Markdown tables: decisions grouped by kind and placement,
//! then the plan's memory and step figures (`models::figures`, as every output words them), the
//! transfers, then the solver's report.

use models::figures::PlanFigures;
use models::inventory::{BlockKind, Owner};
use models::program::Program;
use models::schedule::{Placement, Schedule};
use models::trace::Trace;
use models::units::Bytes;
use std::fmt::Write;

/// One row of the decisions table: a kind of block with one placement, and which indices.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionGroup {
    pub group: String,
    pub placement: Placement,
    /// Layer or chunk indices; empty for single blocks (embedding, final norm, head).
    pub indices: Vec<u32>,
    pub count: usize,
    pub bytes: Bytes,
}

/// What kind of block, and its index among its kind (layer or chunk), for grouping.
fn group_of(kind: BlockKind) -> (String, Option<u32>) {
    let what = |k: BlockKind| match k {
        BlockKind::Weights(_) => "weights",
        BlockKind::Grads(_) => "gradients",
        BlockKind::Optimizer(_) => "optimizer state",
        _ => "",
    };
    match kind {
        BlockKind::Weights(o) | BlockKind::Grads(o) | BlockKind::Optimizer(o) => match o {
            Owner::Layer(l) => (format!("layer {}", what(kind)), Some(l)),
            Owner::OutputChunk(c) => (format!("output chunk {}", what(kind)), Some(c)),
            Owner::Embedding => (format!("embedding {}", what(kind)), None),
            Owner::FinalNorm => (format!("final norm {}", what(kind)), None),
        },
        BlockKind::LayerInput(l) => ("layer inputs".into(), Some(l)),
        BlockKind::LayerActivations(l) => ("layer activations".into(), Some(l)),
        other => (other.to_string(), None),
    }
}

/// Decisions grouped by (kind of block, placement), in the order they first appear.
pub fn decision_groups(program: &Program, schedule: &Schedule) -> Vec<DecisionGroup> {
    let mut groups: Vec<DecisionGroup> = Vec::new();
    for d in &schedule.decisions {
        let block = program.inventory.blocks.get(d.block.index());
        let (group, index) = block.map_or((d.name.clone(), None), |b| group_of(b.kind));
        let bytes = block.map_or(Bytes::ZERO, |b| b.bytes);
        match groups.iter_mut().find(|g| g.group == group && g.placement == d.placement) {
            Some(g) => {
                g.indices.extend(index);
                g.count += 1;
                g.bytes += bytes;
            }
            None => groups.push(DecisionGroup { group, placement: d.placement, indices: index.into_iter().collect(), count: 1, bytes }),
        }
    }
    groups
}

/// `[0,1,2,3,7,9,10]` -> "0–3, 7, 9–10".
pub fn ranges(indices: &[u32]) -> String {
    models::runs::ranges(indices, "–", ", ")
}

/// The whole summary as Markdown; `figures` are the plan's (`planner::Plan::figures`).
pub fn summary_markdown(program: &Program, schedule: &Schedule, trace: &Trace, figures: &PlanFigures) -> String {
    let p = &schedule.prediction;
    let mut s = String::new();
    let _ = writeln!(s, "# Plan: {} on {}, budget {}\n", schedule.model.name, schedule.hardware, schedule.budget);
    let _ = writeln!(
        s,
        "Micro-batch {} x {}; {} actions; {} placeable blocks.\n",
        schedule.model.batch,
        schedule.model.seq,
        schedule.actions.len(),
        schedule.decisions.len()
    );

    let _ = writeln!(s, "## Decisions\n");
    let _ = writeln!(s, "| blocks | placement | which | count | bytes |");
    let _ = writeln!(s, "| --- | --- | --- | ---: | ---: |");
    for g in decision_groups(program, schedule) {
        let which = if g.indices.is_empty() { "—".to_string() } else { ranges(&g.indices) };
        let _ = writeln!(s, "| {} | {} | {} | {} | {} |", g.group, g.placement.label(), which, g.count, g.bytes);
    }

    let _ = writeln!(s, "\n## Memory\n");
    let _ = writeln!(s, "| figure | value | what |");
    let _ = writeln!(s, "| --- | ---: | --- |");
    for f in figures.memory.figures() {
        let _ = writeln!(s, "{}", f.markdown_row());
    }
    let _ = writeln!(s, "\nThe live peak is reached {} into the step (action {}).", trace.peak_time, p.peak_action);
    let _ = writeln!(s, "\n## Step time\n");
    let _ = writeln!(s, "| part | time | what |");
    let _ = writeln!(s, "| --- | ---: | --- |");
    for f in figures.step.figures() {
        let _ = writeln!(s, "{}", f.markdown_row());
    }
    let _ = writeln!(s, "\n## Transfers\n");
    let _ = writeln!(s, "| quantity | value |");
    let _ = writeln!(s, "| --- | ---: |");
    let _ = writeln!(s, "| host to device | {} |", p.h2d_bytes);
    let _ = writeln!(s, "| device to host | {} |", p.d2h_bytes);
    let _ = writeln!(s, "| transfer hidden under compute | {} |", p.hidden_transfer);
    let _ = writeln!(s, "| transfer exposed (waiting on H2D + waiting on D2H) | {} |", p.exposed_transfer);
    let _ = writeln!(s, "\n## Training setup\n");
    let _ = writeln!(
        s,
        "AdamW, its learning-rate schedule and gradient clipping, as `offplan run` follows them step by step. Clipping is part of the planned step (every update waits for every gradient); the rest changes no placement.\n"
    );
    let _ = writeln!(s, "| setting | value | from |");
    let _ = writeln!(s, "| --- | ---: | --- |");
    for (what, v, from) in schedule.setup.rows() {
        let _ = writeln!(s, "| {what} | {v} | {from} |");
    }
    if let Some(r) = &p.solver {
        let _ = writeln!(s, "\n## Solver\n");
        let _ = writeln!(s, "| solver | status | objective | bound | gap | time |");
        let _ = writeln!(s, "| --- | --- | ---: | ---: | ---: | ---: |");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} s |",
            r.solver,
            r.status.label(),
            r.objective,
            r.bound.map_or_else(|| "none".to_string(), |b| b.to_string()),
            r.gap_label(),
            r.solve_seconds
        );
    }
    s
}
