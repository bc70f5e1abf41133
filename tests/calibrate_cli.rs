//! `offplan calibrate` from the outside: without a GPU (this machine, CI) it exits with the
//! "no GPU" code 4 and writes nothing; bad arguments fail before any device work.

use std::path::PathBuf;

mod common;
use common::{offplan, scratch_dir, text};

fn entries(d: &PathBuf) -> Vec<String> {
    std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn calibrate_without_a_gpu_exits_4_and_writes_nothing() {
    let dir = scratch_dir("nogpu");
    let out = dir.join("calibrated.ron");
    // --quick first: where a GPU is present, that is the short way to find out and skip
    for extra in [&["--quick"][..], &[][..]] {
        let mut args = vec!["calibrate", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = offplan(&args);
        let t = text(&o);
        if !t.contains("no CUDA device") {
            eprintln!("skipped: a CUDA device is present, this test checks the no-GPU path");
            std::fs::remove_dir_all(dir).unwrap();
            return;
        }
        assert_eq!(o.status.code(), Some(4), "{t}");
        assert!(!out.exists(), "nothing written: {t}");
        assert!(entries(&dir).is_empty(), "no temporary files either: {:?}", entries(&dir));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn calibrate_checks_its_arguments_before_the_device() {
    let dir = scratch_dir("args");
    // --out is required
    let o = offplan(&["calibrate"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // a missing folder, a folder as the file, a missing config: errors (1), not "no GPU" (4)
    let missing = dir.join("no/such/folder/x.ron");
    let cases: Vec<Vec<String>> = vec![
        vec!["calibrate".into(), "--out".into(), missing.to_string_lossy().into()],
        vec!["calibrate".into(), "--out".into(), dir.to_string_lossy().into()],
        vec![
            "calibrate".into(),
            "--out".into(),
            dir.join("x.ron").to_string_lossy().into(),
            "--model".into(),
            "models/configs/nope.ron".into(),
        ],
    ];
    for args in cases {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = offplan(&a);
        assert_eq!(o.status.code(), Some(1), "{a:?}: {}", text(&o));
    }
    assert!(entries(&dir).is_empty(), "nothing written: {:?}", entries(&dir));
    std::fs::remove_dir_all(dir).unwrap();
}
