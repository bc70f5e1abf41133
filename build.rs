//! Embeds the commit the binary was built from (records carry it): `OFFPLAN_COMMIT` when set,
//! else `git rev-parse HEAD`, else "unknown". Re-run whenever either changes, so a record never
//! names an older commit than the code that wrote it.

fn main() {
    println!("cargo:rerun-if-env-changed=OFFPLAN_COMMIT");
    // HEAD and the index of this work tree (a linked worktree has its own), and the branch
    // ref HEAD names: a commit moves the ref, a checkout moves HEAD.
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    let mut watched: Vec<String> = ["HEAD", "index"].iter().filter_map(|f| git(&["rev-parse", "--git-path", f])).collect();
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(&["rev-parse", "--git-path", &branch]));
    }
    for f in watched.iter().filter(|f| std::path::Path::new(f).exists()) {
        println!("cargo:rerun-if-changed={f}");
    }
    let commit = std::env::var("OFFPLAN_COMMIT").ok().filter(|s| !s.is_empty()).or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    // A tree with uncommitted changes is marked, so a record never passes it off as the commit.
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let value = match commit {
        Some(c) if dirty && std::env::var("OFFPLAN_COMMIT").is_err() => format!("{c}+uncommitted"),
        Some(c) => c,
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=OFFPLAN_BUILD_COMMIT={value}");
}
