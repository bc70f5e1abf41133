//! `offplan explain SCHEDULE BLOCK`: why a block sits where it does. Re-emits the schedule with
//! that one block's placement changed (everything else as planned), simulates each variant, and
//! says what the step would cost and which constraint binds: memory at the peak against the
//! budget, or exposed transfer / recomputation time.

use anyhow::Context;
use models::figures::PlanFigures;
use models::inventory::{Block, BlockKind};
use models::schedule::Placement;
use models::trace::Trace;
use models::{Bytes, HardwareProfile, Program, Schedule, Seconds};
use planner::{simulate, SimError};
use planner::{ActChoice, Decisions, OwnerChoice};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A schedule written by `offplan plan` (schedule.ron).
    #[arg(value_name = "SCHEDULE")]
    pub schedule: PathBuf,
    /// The block, by name (`layer3.activations`, `chunk0.weights`) or number.
    #[arg(value_name = "BLOCK")]
    pub block: String,
    /// Hardware profile (default: models/hardware/<the schedule's hardware>.ron).
    #[arg(long, value_name = "PATH")]
    pub hardware: Option<PathBuf>,
}

/// The other placements this block may take with the rest of its group as planned, each with a
/// label and the whole plan's decisions. Gradients follow their optimizer state (on the host
/// when the update runs there), so their alternatives are optimizer placements that move them.
pub fn alternatives(program: &Program, d: &Decisions, block: &Block) -> Vec<(String, Decisions)> {
    let mut out = Vec::new();
    match block.kind {
        BlockKind::Weights(o) | BlockKind::Optimizer(o) => {
            let cur = d.owner(o);
            let weights = matches!(block.kind, BlockKind::Weights(_));
            let all = OwnerChoice::all(program, o);
            for c in &all {
                let (this, other, cur_this, cur_other) = if weights {
                    (c.weights, c.optimizer, cur.weights, cur.optimizer)
                } else {
                    (c.optimizer, c.weights, cur.optimizer, cur.weights)
                };
                // The same other half, unless this placement allows only one pairing (the CPU
                // embedding puts both halves on the host).
                let pairings = all.iter().filter(|x| if weights { x.weights == this } else { x.optimizer == this }).count();
                if this != cur_this && (other == cur_other || pairings == 1) {
                    let mut nd = d.clone();
                    nd.set_owner(o, *c);
                    let label = if other == cur_other { this.label().to_string() } else { format!("{} (both halves)", this.label()) };
                    out.push((label, nd));
                }
            }
        }
        BlockKind::Grads(o) => {
            let cur = d.owner(o);
            for c in OwnerChoice::all(program, o) {
                if c.weights == cur.weights && c.grads() != cur.grads() {
                    let mut nd = d.clone();
                    nd.set_owner(o, c);
                    out.push((format!("{} (optimizer {})", c.grads().label(), c.optimizer.label()), nd));
                }
            }
        }
        BlockKind::LayerInput(l) | BlockKind::LayerActivations(l) => {
            let cur = d.layers[l as usize];
            let input = matches!(block.kind, BlockKind::LayerInput(_));
            for c in ActChoice::all() {
                let differs =
                    if input { c.input != cur.input && c.inner == cur.inner } else { c.inner != cur.inner && c.input == cur.input };
                if differs {
                    let mut nd = d.clone();
                    nd.layers[l as usize] = c;
                    out.push(((if input { c.input } else { c.inner }).label().to_string(), nd));
                }
            }
        }
        _ => {}
    }
    out
}

/// Where a placement puts a block, in words.
fn whereabouts(p: Placement) -> &'static str {
    match p {
        Placement::Gpu => "on the GPU",
        Placement::Streamed => "streamed (kept in host memory, brought to the GPU around each use)",
        Placement::Host => "on the host (used there)",
        Placement::Offloaded => "offloaded (sent to the host after forward, brought back for backward)",
        Placement::Recomputed => "recomputed (dropped after forward, rebuilt in backward)",
    }
}

/// What one variant costs, in the figures every output names (`models::figures`).
#[derive(Debug)]
pub struct Outcome {
    pub placement: String,
    pub step_time: Seconds,
    /// The device figure: fixed overhead + the arena as the pool rounds it + the mapping.
    pub device: Bytes,
    /// Waiting on H2D + waiting on D2H.
    pub exposed: Seconds,
    pub host_wait: Seconds,
    pub compute: Seconds,
    /// The simulation holds the budget and the device figure is within it.
    pub fits: bool,
    pub figures: Option<PlanFigures>,
}

impl Outcome {
    fn of(placement: String, figures: PlanFigures, simulated_fits: bool) -> Outcome {
        Outcome {
            placement,
            step_time: figures.step.step,
            device: figures.memory.device,
            exposed: figures.step.exposed_transfer(),
            host_wait: figures.step.waiting_on_host,
            compute: figures.step.compute_busy,
            fits: simulated_fits && figures.memory.fits(),
            figures: Some(figures),
        }
    }
}

/// Simulates a schedule, keeping the trace when it only fails on the budget.
fn simulate_any(program: &Program, hw: &HardwareProfile, s: &Schedule) -> anyhow::Result<(Trace, bool)> {
    match simulate(program, hw, s) {
        Ok(t) => Ok((t, true)),
        Err(SimError::OverBudget { trace, .. }) => Ok((*trace, false)),
        Err(e) => Err(e.into()),
    }
}

fn find_block<'p>(program: &'p Program, name: &str) -> anyhow::Result<&'p Block> {
    let inv = &program.inventory;
    let b = match name.parse::<usize>() {
        Ok(i) => inv.blocks.get(i),
        Err(_) => inv.blocks.iter().find(|b| b.name() == name),
    };
    b.with_context(|| {
        let names: Vec<String> = inv.blocks.iter().filter(|b| b.kind.placeable()).take(8).map(|b| b.name()).collect();
        format!("no block `{name}` in this model; placeable blocks are named like {} ...", names.join(", "))
    })
    .map_err(|e| super::usage(format!("{e:#}")))
}

fn signed_ms(d: f64) -> String {
    if d.abs() < 0.005 {
        "±0".into()
    } else {
        format!("{d:+.2} ms")
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let schedule = Schedule::load(&args.schedule)?;
    let program = Program::for_setup(&schedule.model, &schedule.setup);
    schedule.check_digest(&models::digest::program_digest(&program), &args.schedule)?;
    let hw = super::schedule_hardware(args.hardware.as_deref(), &schedule)?;
    let block = find_block(&program, &args.block)?;
    let name = block.name();
    let current = schedule.decisions.iter().find(|d| d.block == block.id).map(|d| d.placement);
    let Some(current) = current else {
        println!("{name} ({}) is not placeable: {} always stay on the GPU.", block.bytes, name);
        return Ok(());
    };

    let checked = planner::check_schedule(&program, &hw, &schedule).with_context(|| format!("refusing {}", args.schedule.display()))?;
    if !checked.differences.is_empty() {
        println!(
            "note: today's model predicts otherwise than this file stores ({}); what follows is today's",
            checked.differences.join("; ")
        );
    }
    let fits = checked.over_budget.is_none();
    let d = Decisions::from_block_decisions(&program, &schedule.decisions)
        .with_context(|| format!("reading the decisions of {}", args.schedule.display()))?;
    let mut base_label = current.label().to_string();
    if let BlockKind::Grads(o) = block.kind {
        base_label = format!("{base_label} (optimizer {})", d.owner(o).optimizer.label());
    }
    let base = Outcome::of(base_label, checked.figures(&hw, &schedule), fits);
    let alts = alternatives(&program, &d, block);
    let mut outcomes = Vec::new();
    for (placement, nd) in &alts {
        let s = planner::emit(&program, &hw, nd, schedule.budget).with_context(|| format!("emitting {name} as {placement}"))?;
        let (t, fits) = simulate_any(&program, &hw, &s).with_context(|| format!("simulating {name} as {placement}"))?;
        let prediction = planner::prediction_from_trace(&t, &s, &program, &hw);
        outcomes.push(Outcome::of(placement.clone(), planner::figures(&hw, &s, &prediction, &t), fits));
    }

    println!(
        "{name} ({}) is {} in this plan ({} on {}, budget {}).",
        block.bytes,
        whereabouts(current),
        schedule.model.name,
        schedule.hardware,
        schedule.budget
    );
    println!("As planned:");
    if let Some(f) = &base.figures {
        for l in f.memory.lines().iter().chain(&f.step.lines()) {
            println!("  {l}");
        }
    }
    println!();
    let w = outcomes.iter().map(|o| o.placement.len()).chain([base.placement.len() + 2, 9]).max().unwrap_or(12);
    println!(
        "{:<w$} {:>12} {:>12} {:>12} {:>22} {:>14} {:>17} {:>16}",
        "placement", "step time", "vs plan", "device", "headroom", "compute busy", "waiting on copies", "waiting on host"
    );
    let row = |o: &Outcome, tag: &str| {
        let over = o.device.0 as i128 - schedule.budget.0 as i128;
        let headroom = if over > 0 { format!("{} over", Bytes(over as u64)) } else { format!("{} under", Bytes((-over) as u64)) };
        println!(
            "{:<w$} {:>12} {:>12} {:>12} {:>22} {:>14} {:>17} {:>16}",
            format!("{}{tag}", o.placement),
            o.step_time.to_string(),
            if tag.is_empty() { signed_ms((o.step_time - base.step_time).ms()) } else { "-".into() },
            o.device.to_string(),
            headroom,
            o.compute.to_string(),
            o.exposed.to_string(),
            o.host_wait.to_string()
        );
    };
    row(&base, " *");
    for o in &outcomes {
        row(o, "");
    }
    println!();
    for line in verdict(&name, &base, &outcomes, schedule.budget, &schedule.prediction.peak_at) {
        println!("{line}");
    }
    if let Some(cost) =
        planner::clipping_cost(&program, &hw, &schedule, &planner::SolveOptions::new()).context("pricing the plan's clipping")?
    {
        println!("Clipping by the global norm costs this plan {}.", cost.line());
    }
    Ok(())
}

/// Which constraint binds, in words.
pub fn verdict(name: &str, base: &Outcome, outcomes: &[Outcome], budget: Bytes, peak_at: &str) -> Vec<String> {
    let eps = 1e-6;
    let mut v = Vec::new();
    if outcomes.is_empty() {
        v.push(format!("{name} has no other placement the planner may choose."));
        return v;
    }
    for o in outcomes {
        let dt = (o.step_time - base.step_time).ms();
        let d_exposed = (o.exposed - base.exposed).ms();
        let d_host = (o.host_wait - base.host_wait).ms();
        let d_compute = (o.compute - base.compute).ms();
        let why_time = format!(
            "waiting on copies {}, waiting on host {}, compute busy {}",
            signed_ms(d_exposed),
            signed_ms(d_host),
            signed_ms(d_compute)
        );
        let p = &o.placement;
        let line = if (o.step_time.0 - base.step_time.0).abs() <= eps && o.fits {
            format!(
                "- {p}: fits and takes the same time ({why_time}): neither memory nor time prefers one; the plan's choice is a tie-break."
            )
        } else if o.step_time.0 < base.step_time.0 - eps && !o.fits {
            format!(
                "- {p}: {} faster, but its device figure {} is over the budget {} by {}: memory binds (the plan's live peak is at {peak_at}).",
                signed_ms(-dt).trim_start_matches('+'),
                o.device,
                budget,
                o.device.saturating_sub(budget)
            )
        } else if o.step_time.0 < base.step_time.0 - eps {
            format!(
                "- {p}: fits and is {} faster ({why_time}): the plan is not optimal for this block (solver gap or time limit).",
                signed_ms(-dt).trim_start_matches('+')
            )
        } else if !o.fits {
            format!(
                "- {p}: slower by {} ({why_time}) and over the budget by {}: both time and memory rule it out.",
                signed_ms(dt),
                o.device.saturating_sub(budget)
            )
        } else {
            format!("- {p}: fits, but slower by {} ({why_time}): time binds, not memory.", signed_ms(dt))
        };
        v.push(line);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::inventory::Owner;
    use models::GptConfig;
    use std::path::Path;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    fn tiny() -> (Program, HardwareProfile) {
        let cfg = GptConfig::load(&root().join("models/configs/gpt2-tiny.ron")).unwrap();
        let hw = HardwareProfile::load(&root().join("models/hardware/h100-sxm.ron")).unwrap();
        (Program::build(&cfg), hw)
    }

    fn mixed(program: &Program) -> Decisions {
        let mut d = planner::offload_first(program, 1);
        d.layers[1] = ActChoice::RECOMPUTE;
        d.set_owner(Owner::Layer(0), OwnerChoice { weights: Placement::Streamed, optimizer: Placement::Host });
        d.set_owner(Owner::OutputChunk(1), OwnerChoice { weights: Placement::Gpu, optimizer: Placement::Streamed });
        d
    }

    #[test]
    fn alternatives_change_only_the_block_asked_about() {
        let (p, _) = tiny();
        let d = mixed(&p);
        let inv = &p.inventory;
        let acts1 = inv.find_block(BlockKind::LayerActivations(1)).unwrap();
        let alts = alternatives(&p, &d, acts1);
        assert_eq!(alts.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(), ["gpu", "offloaded"]);
        for (_, nd) in &alts {
            assert_eq!(nd.owners, d.owners);
            assert_eq!(nd.layers[0], d.layers[0]);
            assert_eq!(nd.layers[1].input, d.layers[1].input);
        }
        // Layer 0's gradients go to the host with its host AdamW; bringing them back means an
        // optimizer on the GPU or streamed, with the weights as planned.
        let g0 = inv.find_block(BlockKind::Grads(Owner::Layer(0))).unwrap();
        let alts = alternatives(&p, &d, g0);
        assert_eq!(alts.iter().map(|a| a.0.as_str()).collect::<Vec<_>>(), ["gpu (optimizer gpu)", "gpu (optimizer streamed)"]);
        assert!(alts.iter().all(|(_, nd)| nd.owner(Owner::Layer(0)).weights == Placement::Streamed));
        let w0 = inv.find_block(BlockKind::Weights(Owner::Layer(0))).unwrap();
        let alts = alternatives(&p, &d, w0);
        assert_eq!(alts.len(), 1);
        assert_eq!(alts[0].1.owner(Owner::Layer(0)), OwnerChoice { weights: Placement::Gpu, optimizer: Placement::Host });
        let head = inv.find_block(BlockKind::HeadActivations).unwrap();
        assert!(alternatives(&p, &d, head).is_empty());
    }

    fn outcome(label: &str, ms: f64, device_gib: f64, fits: bool) -> Outcome {
        Outcome {
            placement: label.into(),
            step_time: Seconds::from_ms(ms),
            device: Bytes::gib(device_gib),
            exposed: Seconds::ZERO,
            host_wait: Seconds::ZERO,
            compute: Seconds::from_ms(ms),
            fits,
            figures: None,
        }
    }

    #[test]
    fn verdict_names_the_binding_constraint() {
        let base = outcome("offloaded", 100.0, 11.9, true);
        let v = verdict(
            "layer5.activations",
            &base,
            &[
                outcome("gpu", 95.0, 12.2, false),
                outcome("recomputed", 104.0, 11.5, true),
                outcome("x", 100.0, 11.0, true),
                outcome("y", 90.0, 11.0, true),
            ],
            Bytes::gib(12.0),
            "layer5.fc",
        );
        assert!(v[0].contains("5.00 ms faster") && v[0].contains("memory binds") && v[0].contains("layer5.fc"), "{}", v[0]);
        assert!(v[1].contains("+4.00 ms") && v[1].contains("time binds"), "{}", v[1]);
        assert!(v[2].contains("tie-break"), "{}", v[2]);
        assert!(v[3].contains("not optimal"), "{}", v[3]);
        assert!(verdict("head.activations", &base, &[], Bytes::gib(12.0), "")[0].contains("no other placement"));
    }
}
