//! Names of actions and lanes, for messages and pictures.

use models::schedule::Action;
use models::{Program, Schedule};

/// What an action does, for messages: `Run layer0.qkv`, `Alloc layer0.fch on compute`.
pub fn action_label(program: &Program, action: &Action) -> String {
    let op = |o: models::OpId| program.ops.get(o.index()).map(|o| o.name.clone()).unwrap_or_else(|| format!("op #{}", o.0));
    let t = |t: models::TensorId| {
        program.inventory.tensors.get(t.index()).map(|t| t.name.clone()).unwrap_or_else(|| format!("tensor #{}", t.0))
    };
    match *action {
        Action::Run(o) => format!("Run {}", op(o)),
        Action::Recompute(o) => format!("Recompute {}", op(o)),
        Action::HostRun(o) => format!("HostRun {}", op(o)),
        Action::Alloc(x, l) => format!("Alloc {} on {}", t(x), l.label()),
        Action::Free(x, l) => format!("Free {} on {}", t(x), l.label()),
        Action::Prefetch(x) => format!("Prefetch {}", t(x)),
        Action::Evict(x) => format!("Evict {}", t(x)),
        Action::Record(e, l) => format!("Record event {} on {}", e.0, l.label()),
        Action::Wait(e, l) => format!("Wait event {} on {}", e.0, l.label()),
    }
}

/// Where the peak is, for people: the op its lane runs next after the allocation that reached
/// it (`layer3.fc (Alloc layer3.fch on compute)`), or the action itself.
pub fn peak_label(program: &Program, schedule: &Schedule, action: usize) -> String {
    let Some(a) = schedule.actions.get(action) else { return "start of step".into() };
    let lane = a.lane();
    let next_op = schedule.actions[action..].iter().find_map(|b| match *b {
        Action::Run(o) | Action::Recompute(o) | Action::HostRun(o) if b.lane() == lane => program.ops.get(o.index()),
        _ => None,
    });
    match next_op {
        Some(op) if !matches!(a, Action::Run(_) | Action::Recompute(_) | Action::HostRun(_)) => {
            format!("{} ({})", op.name, action_label(program, a))
        }
        _ => action_label(program, a),
    }
}
