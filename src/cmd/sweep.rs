//! `offplan sweep`: plans at budgets from the feasible floor to the all-on-GPU peak with the
//! planner and each heuristic, in parallel, and charts step time against budget.

use super::TargetArgs;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use models::figures::MemoryFigures;
use models::{Bytes, HardwareProfile, Program, Schedule};
use planner::{heuristic_schedule, Heuristic, SolveOptions};
use rayon::prelude::*;
use reports::SweepPoint;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Folder for sweep.svg and sweep.csv (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Smallest budget (default: the feasible floor).
    #[arg(long, value_name = "SIZE", value_parser = super::size_flag)]
    pub from: Option<Bytes>,
    /// Largest budget (default: the all-on-GPU peak plus the fixed overhead).
    #[arg(long, value_name = "SIZE", value_parser = super::size_flag)]
    pub to: Option<Bytes>,
    /// Number of budgets, evenly spaced from --from to --to.
    #[arg(long, value_name = "N", default_value_t = 12)]
    pub points: usize,
    /// Solver time limit per budget, in seconds (its best plan so far is kept, with its gap).
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    pub time_limit: f64,
    #[command(flatten)]
    pub solve: super::SolveArgs,
    #[command(flatten)]
    pub training: super::SetupArgs,
}

/// `n` budgets evenly spaced from `from` to `to` (both included), rounded to whole MiB.
pub fn budgets(from: Bytes, to: Bytes, n: usize) -> Vec<Bytes> {
    let mib = models::units::MIB;
    if n <= 1 || to <= from {
        return vec![to.max(from)];
    }
    (0..n)
        .map(|i| {
            let x = from.0 as f64 + (to.0 - from.0) as f64 * i as f64 / (n - 1) as f64;
            // Both ends exact; inner budgets rounded to whole MiB for readable files.
            if i == 0 {
                from
            } else if i == n - 1 {
                to
            } else {
                Bytes(((x / mib as f64).round() as u64 * mib).clamp(from.0, to.0))
            }
        })
        .collect()
}

/// Most budgets of one sweep (each is planned by every method).
const MAX_POINTS: usize = 200;

/// One unit of work: a method at a budget.
#[derive(Clone, Copy, Debug)]
enum Method {
    Planner,
    Heuristic(Heuristic),
    /// Megatron-LM's offload knobs at their fastest (`planner::megatron::fastest_within`).
    MegatronKnobs,
}

impl Method {
    fn name(self) -> String {
        match self {
            Method::Planner => "planner".into(),
            // The heuristic picks its best N itself; say so on the chart.
            Method::Heuristic(Heuristic::OffloadFirstN) => "offload the first N layers (best N)".into(),
            Method::Heuristic(h) => h.label().to_string(),
            Method::MegatronKnobs => "Megatron-LM's knobs (fastest)".into(),
        }
    }
}

/// Plans `method` at `budget`: the simulated step time and memory figures, or why it does not fit.
fn point(program: &Program, hw: &HardwareProfile, budget: Bytes, method: Method, opts: &SolveOptions) -> SweepPoint {
    let mut knobs = String::new();
    let result: Result<Schedule, planner::PlanError> = match method {
        Method::Planner => planner::plan(program, hw, budget, opts).map(|p| p.schedule),
        Method::Heuristic(h) => heuristic_schedule(h, program, hw, budget),
        Method::MegatronKnobs => match planner::megatron::fastest_within(program, hw, budget) {
            Ok(Some((k, plan, _))) => {
                knobs = k.summary(program);
                Ok(plan.schedule)
            }
            Ok(None) => {
                return SweepPoint {
                    method: method.name(),
                    budget,
                    step_time: None,
                    memory: None,
                    note: "no setting of the knobs fits".into(),
                }
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(s) => {
            let p = &s.prediction;
            let note = match (&p.solver, method) {
                (Some(r), _) => format!("{}, gap {}, {:.1} s", r.status.label(), r.gap_label(), r.solve_seconds),
                (None, Method::Heuristic(Heuristic::OffloadFirstN)) => {
                    let n = s
                        .decisions
                        .iter()
                        .filter(|d| d.placement == models::Placement::Offloaded && d.name.ends_with(".activations"))
                        .count();
                    format!("N = {n}")
                }
                (None, Method::MegatronKnobs) => knobs,
                _ => String::new(),
            };
            let memory = Some(MemoryFigures::of(p, budget, hw));
            SweepPoint { method: method.name(), budget, step_time: Some(p.step_time), memory, note }
        }
        Err(planner::PlanError::Infeasible { reason, .. }) | Err(planner::PlanError::HostMemory { reason, .. }) => {
            SweepPoint { method: method.name(), budget, step_time: None, memory: None, note: reason }
        }
        Err(e) => SweepPoint { method: method.name(), budget, step_time: None, memory: None, note: e.to_string() },
    }
}

/// The budget the all-on-GPU schedule needs as simulated (allocator rounding and the pool's
/// fragmentation room included), so the top budget is one that "keep everything" fits in.
fn all_gpu_peak(program: &Program, hw: &HardwareProfile) -> Bytes {
    let lifetime = hw.budget_for(planner::LifetimeGraph::build(program).peak().0);
    match heuristic_schedule(Heuristic::KeepAll, program, hw, Bytes::UNLIMITED) {
        Ok(s) => s.prediction.peak_device().max(lifetime),
        Err(_) => lifetime,
    }
}

/// The planner, then every heuristic.
fn methods() -> Vec<Method> {
    let mut m = vec![Method::Planner];
    m.extend(Heuristic::ALL.iter().map(|h| Method::Heuristic(*h)));
    m.push(Method::MegatronKnobs);
    m
}

/// Every method at every budget, in parallel; ordered by method, then budget.
fn sweep_points(program: &Program, hw: &HardwareProfile, budgets: &[Bytes], opts: &SolveOptions, bar: &ProgressBar) -> Vec<SweepPoint> {
    // Planner solves are queued first: they are the long ones, and the short heuristic
    // evaluations then fill the gaps at the end.
    let work: Vec<(usize, Bytes, Method)> =
        methods().into_iter().enumerate().flat_map(|(m, method)| budgets.iter().map(move |b| (m, *b, method))).collect();
    let mut points: Vec<(usize, SweepPoint)> = work
        .par_iter()
        .map(|(m, budget, method)| {
            let p = point(program, hw, *budget, *method, opts);
            bar.inc(1);
            (*m, p)
        })
        .collect();
    points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.budget.cmp(&b.1.budget)));
    points.into_iter().map(|(_, p)| p).collect()
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let (cfg, hw) = args.target.load()?;
    // The setup's clipping changes the step program (every update waits for every gradient);
    // the rest is checked and said, so a sweep and the plans it stands for agree.
    let setup = args.training.resolve(&cfg)?;
    let program = Program::for_setup(&cfg, &setup);
    if !(1..=MAX_POINTS).contains(&args.points) {
        return Err(super::usage(format!("--points must be from 1 to {MAX_POINTS}, got {}", args.points)));
    }
    for (flag, b) in [("--from", args.from), ("--to", args.to)] {
        if let Some(b) = b.filter(|b| *b > hw.memory) {
            return Err(super::usage(format!("{flag} {b} is more than {}'s {} of device memory", hw.name, hw.memory)));
        }
    }
    let floor = planner::feasible_floor(&program, &hw);
    let all_gpu = all_gpu_peak(&program, &hw).min(hw.memory);
    let from = args.from.unwrap_or(floor.min(hw.memory));
    let to = args.to.unwrap_or(all_gpu.max(from));
    if to < from {
        return Err(super::usage(format!("--to {to} is below --from {from}")));
    }
    let out = models::io::StagedDir::new(&args.out).with_context(|| format!("--out {}: cannot write there", args.out.display()))?;
    let budgets = budgets(from, to, args.points);

    let methods = methods();
    // One solver thread per plan: the budgets themselves run in parallel across cores.
    let opts = super::solve_options(args.time_limit, &args.solve, 1)?;
    eprintln!(
        "sweeping {} budgets from {from} to {to} (floor {floor}, all-on-GPU {}) with {} methods on {} threads",
        budgets.len(),
        all_gpu,
        methods.len(),
        rayon::current_num_threads()
    );
    let bar = ProgressBar::new((budgets.len() * methods.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} plans").expect("valid template").progress_chars("=> "),
    );
    let points = sweep_points(&program, &hw, &budgets, &opts, &bar);
    bar.finish_and_clear();

    let title = format!("{} on {}: predicted step time against budget ({} x {})", cfg.name, hw.name, cfg.batch, cfg.seq);
    if points.iter().all(|p| p.step_time.is_none()) {
        return Err(anyhow::Error::new(super::CodedError {
            code: super::EXIT_INFEASIBLE,
            message: format!("no method fits any budget from {from} to {to} (the floor is {floor}): nothing to chart"),
        }));
    }
    reports::write_sweep(out.path(), &title, &points).context("writing the sweep")?;
    let files = out.commit().with_context(|| format!("moving the sweep into {}", args.out.display()))?;
    print_table(&budgets, &methods, &points);
    println!("training setup (the same step time at any learning rate):");
    for l in setup.lines() {
        println!("  {l}");
    }
    for f in files {
        println!("wrote {}", f.display());
    }
    println!("{} plans in {:.1} s", points.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Step time per budget (rows) and method (columns); "-" where infeasible.
fn print_table(budgets: &[Bytes], methods: &[Method], points: &[SweepPoint]) {
    let names: Vec<String> = methods.iter().map(|m| m.name()).collect();
    print!("{:>12}", "budget");
    for n in &names {
        print!(" {:>w$}", n, w = n.len().max(10));
    }
    println!();
    for b in budgets {
        print!("{:>12}", b.to_string());
        for n in &names {
            let cell = points
                .iter()
                .find(|p| p.method == *n && p.budget == *b)
                .and_then(|p| p.step_time)
                .map_or("-".to_string(), |t| format!("{:.2} ms", t.ms()));
            print!(" {:>w$}", cell, w = n.len().max(10));
        }
        println!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_planner_is_never_slower_than_a_heuristic_that_fits() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = models::GptConfig::load(&root.join("models/configs/gpt2-tiny.ron")).unwrap();
        let hw = HardwareProfile::load(&root.join("models/hardware/h100-sxm.ron")).unwrap();
        let program = Program::build(&cfg);
        let floor = planner::feasible_floor(&program, &hw);
        let top = all_gpu_peak(&program, &hw);
        let b = budgets(floor, top, 4);
        let opts = SolveOptions::new().with_time_limit(models::Seconds(20.0)).unwrap().with_threads(1).unwrap();
        let points = sweep_points(&program, &hw, &b, &opts, &ProgressBar::hidden());
        assert_eq!(points.len(), 4 * methods().len());
        let names: Vec<String> = methods().iter().map(|m| m.name()).collect();
        for (i, chunk) in points.chunks(4).enumerate() {
            assert!(chunk.iter().all(|p| p.method == names[i]));
            assert_eq!(chunk.iter().map(|p| p.budget).collect::<Vec<_>>(), b);
        }
        for p in &points {
            if let Some(m) = &p.memory {
                assert!(m.device <= p.budget, "{} at {}: device {}", p.method, p.budget, m.device);
            } else {
                assert!(!p.note.is_empty(), "an infeasible point says why");
            }
        }
        for budget in &b {
            let at: Vec<&SweepPoint> = points.iter().filter(|p| p.budget == *budget).collect();
            let planner = at[0].step_time.expect("the planner fits at every budget from the floor up");
            for h in &at[1..] {
                if let Some(t) = h.step_time {
                    assert!(planner.0 <= t.0 * 1.01, "{}: planner {planner} vs {} {t}", budget, h.method);
                }
            }
        }
        let keep_all = points.iter().find(|p| p.method == Method::Heuristic(Heuristic::KeepAll).name() && p.budget == top).unwrap();
        assert!(keep_all.step_time.is_some(), "keep everything fits at the top budget: {}", keep_all.note);
        let csv = reports::sweep_csv(&points);
        assert_eq!(csv.lines().count(), points.len() + 1);
    }

    #[test]
    fn budgets_span_the_range_and_never_fall_below_the_floor() {
        let from = Bytes(10 * models::units::GIB + 12345);
        let to = Bytes(40 * models::units::GIB);
        let b = budgets(from, to, 12);
        assert_eq!(b.len(), 12);
        assert_eq!(b[0], from);
        assert!(b[1..11].iter().all(|x| x.0 % models::units::MIB == 0));
        assert_eq!(*b.last().unwrap(), to);
        assert!(b.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(budgets(from, to, 1), vec![to]);
    }
}
