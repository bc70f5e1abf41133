//! Where each owner's weights and optimizer state are current between two steps
//! (`executor::StateHomes::of_schedule`, what a checkpoint is gathered from and a resume loads
//! into), on the schedules of every preset: every owner has a home, a tensor the schedule keeps
//! only on the host is read from the host, and keep-all is all on the device.

use executor::{Home, StateHomes};
use models::schedule::Schedule;
use models::Program;

mod common;
use common::{config, offplan, scratch_dir, text, H100};

#[test]
fn every_preset_keeps_each_owner_somewhere_between_steps() {
    let dir = scratch_dir("state-homes");
    let tiny = config("gpt2-tiny");
    for strategy in ["keep-all", "recompute-all", "offload-all", "module-queue", "stream-weights", "streamed-optimizer", "host-optimizer"] {
        let out = dir.join(strategy);
        let o = offplan(&[
            "plan",
            "--model",
            &tiny,
            "--hardware",
            H100,
            "--budget",
            "2GiB",
            "--strategy",
            strategy,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{strategy}: {}", text(&o));
        let schedule = Schedule::load(&out.join("schedule.ron")).unwrap();
        let program = Program::for_setup(&schedule.model, &schedule.setup);
        let homes = StateHomes::of_schedule(&program, &schedule).unwrap_or_else(|e| panic!("{strategy}: {e}"));
        let inv = &program.inventory;
        assert_eq!(homes.owners.len(), inv.owners().len());
        for &(owner, w, m) in &homes.owners {
            let p = inv.params(owner);
            for (t, home) in [(p.weights, w), (p.optimizer, m)] {
                if schedule.host_resident.contains(&t) {
                    assert_eq!(home, Home::Host, "{strategy}: {} lives on the host", inv.tensor(t).name);
                }
            }
        }
        if strategy == "keep-all" {
            assert_eq!(homes, StateHomes::all_on_gpu(&program));
        }
        if strategy == "host-optimizer" || strategy == "streamed-optimizer" {
            assert!(homes.owners.iter().any(|o| o.2 == Home::Host), "{strategy}: some optimizer state on the host");
        }
    }
    // The planner's own plans, from tight budgets to roomy ones.
    for budget in ["675MiB", "680MiB", "690MiB", "700MiB", "1GiB"] {
        let out = dir.join(budget);
        let o = common::plan_tiny(budget, &out);
        if o.status.code() == Some(3) {
            continue; // below the floor
        }
        assert!(o.status.success(), "{budget}: {}", text(&o));
        let schedule = Schedule::load(&out.join("schedule.ron")).unwrap();
        let program = Program::for_setup(&schedule.model, &schedule.setup);
        StateHomes::of_schedule(&program, &schedule).unwrap_or_else(|e| panic!("the plan at {budget}: {e}"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
