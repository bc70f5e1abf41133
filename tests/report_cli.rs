//! End-to-end tests of `offplan report`: it drives the built executable on the shipped records
//! and on bad input.

use std::path::{Path, PathBuf};

mod common;
use common::{offplan, text};

fn records_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "ron")).count()
}

/// Table rows of report.md: lines of the first table after its header and separator.
fn table_rows(md: &str) -> Vec<&str> {
    md.lines().skip_while(|l| !l.starts_with("| # |")).skip(2).take_while(|l| l.starts_with('|')).collect()
}

/// Parses the markup far enough to check it is well formed: tags nest and close in order under
/// one root; returns the root element's name.
fn svg_root(text: &str) -> Result<String, String> {
    let mut open: Vec<&str> = Vec::new();
    let mut root: Option<&str> = None;
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let tail = &rest[start + 1..];
        let end = tail.find('>').ok_or_else(|| "a tag is never closed".to_string())?;
        let tag = &tail[..end];
        rest = &tail[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(closing) = tag.strip_prefix('/') {
            match open.pop() {
                Some(o) if o == closing.trim() => continue,
                o => return Err(format!("</{closing}> closes {o:?}")),
            }
        }
        let name = tag.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or("");
        if open.is_empty() {
            if root.is_some() {
                return Err(format!("a second root element <{name}>"));
            }
            root = Some(name);
        }
        if !tag.ends_with('/') {
            open.push(name);
        }
    }
    if !open.is_empty() {
        return Err(format!("never closed: {open:?}"));
    }
    root.map(str::to_string).ok_or_else(|| "no element".to_string())
}

#[test]
fn svg_root_refuses_broken_markup() {
    assert_eq!(svg_root("<?xml?><svg a='1'><g><rect/></g></svg>"), Ok("svg".into()));
    assert!(svg_root("<svg><g></svg>").is_err());
    assert!(svg_root("<svg></svg><svg></svg>").is_err());
    assert!(svg_root("<svg><g>").is_err());
}

#[test]
fn report_writes_the_table_and_charts_for_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let out: PathBuf = tmp.path().join("report");
    let o = offplan(&["report", "reports/records", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    for f in ["report.md", "peak.svg", "peak.png", "step.svg", "step.png"] {
        let p = out.join(f);
        assert!(p.is_file() && std::fs::metadata(&p).unwrap().len() > 100, "{f} missing or empty");
    }
    let n = records_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/records"));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let rows = table_rows(&md);
    assert_eq!(rows.len(), n, "{md}");
    // Every record file appears once; rows are numbered 1..n.
    for (i, r) in rows.iter().enumerate() {
        assert!(r.starts_with(&format!("| {} | run-", i + 1)), "{r}");
    }
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/records")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".ron") {
            assert_eq!(rows.iter().filter(|r| r.contains(&format!(" {name} "))).count(), 1, "{name}");
        }
    }
    // Worst first: where no record is held to step time (all v1 today), the order is by the
    // magnitude of the pool error (8th column), non-increasing.
    if rows.iter().all(|r| r.contains("(median, unchecked)")) {
        let errs: Vec<f64> =
            rows.iter().map(|r| r.split('|').nth(8).unwrap().trim().trim_end_matches('%').parse::<f64>().unwrap().abs()).collect();
        assert!(errs.windows(2).all(|w| w[0] >= w[1] - 1e-9), "{errs:?}");
    }
    for chart in ["peak.svg", "step.svg"] {
        let svg = std::fs::read_to_string(out.join(chart)).unwrap();
        assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{chart}");
        assert_eq!(svg_root(&svg), Ok("svg".to_string()), "{chart}");
        assert!(svg.contains("predicted (") && svg.contains("measured (") && svg.contains("y = x"), "{chart}");
    }
    assert!(std::fs::read(out.join("peak.png")).unwrap().starts_with(b"\x89PNG"));
}

#[test]
fn report_explains_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let missing = tmp.path().join("no-such-dir");
    let o = offplan(&["report", missing.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not exist") && text(&o).contains("reports/records"), "{}", text(&o));

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = offplan(&["report", empty.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no run records") && text(&o).contains("offplan run"), "{}", text(&o));

    std::fs::write(empty.join("run-broken.ron"), "(version: 2, command: ").unwrap();
    let o = offplan(&["report", empty.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("run-broken.ron") && text(&o).contains("not a run record"), "{}", text(&o));
    assert!(!out.join("report.md").exists());
}
