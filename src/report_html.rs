//! `--html`: the [`PipelineReport`] as one self-contained page — inline CSS and SVG, no script, no
//! network — so it opens anywhere and can be attached to a ticket. Sections: before/after summary,
//! verification, budget decisions, and bar charts of channels kept per pruning group, SQNR per
//! quantized tensor and sensitivity per layer.

use crate::pipeline::PipelineReport;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Horizontal bars: `(label, value, max, caption)`.
fn bars(title: &str, rows: &[(String, f64, f64, String)]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let (label_w, bar_w, row_h) = (260.0, 420.0, 18.0);
    let h = rows.len() as f64 * row_h + 10.0;
    let mut s = format!(
        "<h2>{}</h2>\n<svg role=\"img\" aria-label=\"{}\" width=\"{}\" height=\"{h}\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n",
        esc(title),
        esc(title),
        label_w + bar_w + 420.0
    );
    for (i, (label, v, max, caption)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let frac = if *max > 0.0 {
            (v / max).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let mut short = label.clone();
        // About what fits left of the bars at this font size.
        if short.chars().count() > 34 {
            short = short.chars().take(33).collect::<String>() + "…";
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"l\">{}</text>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{bar_w}\" height=\"{}\" class=\"bg\"/>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" class=\"fg\"><title>{}</title></rect>\
             <text x=\"{}\" y=\"{}\" class=\"v\">{}</text>",
            label_w - 6.0,
            y + 12.0,
            esc(&short),
            row_h - 4.0,
            frac * bar_w,
            row_h - 4.0,
            esc(label),
            label_w + bar_w + 6.0,
            y + 12.0,
            esc(caption)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn opt_u64(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "unknown".into())
}

pub fn render(r: &PipelineReport) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>onnxopt report: {}</title>\n<style>\
         body{{font-family:system-ui,sans-serif;margin:2em;max-width:1000px;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
         th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}\
         .l{{font-size:12px}}.v{{font-size:12px;fill:#333}}.bg{{fill:#eee}}.fg{{fill:#3a7bd5}}\
         .ok{{color:#1a7f37}}.bad{{color:#b3261e}}</style></head><body>\n",
        esc(&r.model)
    );
    let _ = writeln!(
        s,
        "<h1>onnxopt report</h1><p>Model: <code>{}</code></p>",
        esc(&r.model)
    );
    // Summary.
    let pct = |b: f64, a: f64| {
        if b > 0.0 {
            format!("{:+.1}%", 100.0 * (a - b) / b)
        } else {
            "".into()
        }
    };
    s.push_str("<h2>Before and after</h2><table><tr><th></th><th>before</th><th>after</th><th>change</th></tr>\n");
    let rows = [
        ("nodes", r.input.nodes as f64, r.output.nodes as f64),
        ("parameters", r.input.params as f64, r.output.params as f64),
        (
            "parameter bytes",
            r.input.bytes as f64,
            r.output.bytes as f64,
        ),
    ];
    for (k, b, a) in rows {
        let _ = writeln!(
            s,
            "<tr><td>{k}</td><td>{b}</td><td>{a}</td><td>{}</td></tr>",
            pct(b, a)
        );
    }
    let _ = writeln!(
        s,
        "<tr><td>MACs</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        opt_u64(r.input.macs),
        opt_u64(r.output.macs),
        match (r.input.macs, r.output.macs) {
            (Some(b), Some(a)) => pct(b as f64, a as f64),
            _ => String::new(),
        }
    );
    if let Some(l) = &r.latency {
        let _ = writeln!(
            s,
            "<tr><td>tract latency (ms, median)</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
            l.tract_before_ms,
            l.tract_after_ms,
            pct(l.tract_before_ms, l.tract_after_ms)
        );
    }
    s.push_str("</table>\n");
    if let Some(note) = r.latency.as_ref().and_then(|l| l.note.as_ref()) {
        let _ = writeln!(s, "<p><em>{}</em></p>", esc(note));
    }
    // Steps.
    s.push_str(
        "<h2>Steps</h2><table><tr><th>step</th><th>nodes</th><th>parameters</th><th>ms</th></tr>\n",
    );
    for st in &r.steps {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{} → {}</td><td>{} → {}</td><td>{:.0}</td></tr>",
            esc(&st.name),
            st.nodes_before,
            st.nodes_after,
            st.params_before,
            st.params_after,
            st.ms
        );
    }
    s.push_str("</table>\n");
    // Verification.
    if let Some(v) = &r.verification {
        let _ = writeln!(
            s,
            "<h2>Verification</h2><p>{} eval sample(s): {}</p><table><tr><th>output</th>\
             <th>max abs</th><th>cosine (worst)</th><th>cosine (mean)</th><th>SQNR dB</th><th>top-1</th></tr>",
            v.samples,
            esc(&v.eval_source)
        );
        for o in &v.outputs {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{:.3e}</td><td>{:.6}</td><td>{:.6}</td><td>{}</td><td>{}</td></tr>",
                esc(&o.name),
                o.max_abs,
                o.cosine,
                o.cosine_mean,
                o.sqnr_db.map(|x| format!("{x:.1}")).unwrap_or("∞".into()),
                o.top1_agreement
                    .map(|x| format!("{x:.3}"))
                    .unwrap_or("-".into())
            );
        }
        s.push_str("</table>\n");
    }
    // Budget.
    if let Some(b) = &r.budget {
        let _ = writeln!(
            s,
            "<h2>Accuracy budget</h2><p>{}: <strong class=\"{}\">{}</strong> \
             (metric {} before decisions, {} after; {} layer(s) kept in float, {} group(s) restored)</p>",
            esc(&b.spec.to_string()),
            if b.met { "ok" } else { "bad" },
            if b.met { "met" } else { "not met" },
            b.spec.show(b.metric_initial),
            b.spec.show(b.metric_final),
            b.float_layers.len(),
            b.restored_groups.len()
        );
        if !b.decisions.is_empty() {
            s.push_str("<table><tr><th>layer</th><th>kind</th><th>action</th><th>metric after</th><th>kept</th></tr>\n");
            for d in &b.decisions {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&d.layer),
                    esc(&d.kind),
                    esc(&d.action),
                    b.spec.show(d.metric_after),
                    if d.reverted {
                        "undone (not needed)"
                    } else {
                        "yes"
                    }
                );
            }
            s.push_str("</table>\n");
        }
    }
    // Charts.
    if let Some(p) = &r.pruning {
        let rows: Vec<(String, f64, f64, String)> = p
            .groups
            .iter()
            .map(|g| {
                (
                    g.members.join(", "),
                    g.kept as f64,
                    g.channels as f64,
                    match &g.frozen {
                        Some(why) => format!("{}/{} frozen: {why}", g.kept, g.channels),
                        None => format!("{}/{}", g.kept, g.channels),
                    },
                )
            })
            .collect();
        s.push_str(&bars("Channels kept per pruning group", &rows));
    }
    if let Some(q) = &r.quantization {
        let rows: Vec<(String, f64, f64, String)> = q
            .activations
            .iter()
            .filter_map(|a| a.sqnr_db.map(|d| (a.value.clone(), d)))
            .map(|(n, d)| (n, d.max(0.0), 60.0, format!("{d:.1} dB")))
            .collect();
        s.push_str(&bars(
            "SQNR of quantized tensors (dB, 60 = full bar)",
            &rows,
        ));
    }
    if let (false, Some(b)) = (r.sensitivity.is_empty(), &r.budget) {
        let harms: Vec<f64> = r
            .sensitivity
            .iter()
            .map(|x| b.spec.harm(x.metric))
            .collect();
        let lo = harms.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = harms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let rows: Vec<(String, f64, f64, String)> = r
            .sensitivity
            .iter()
            .zip(&harms)
            .map(|(x, h)| {
                (
                    format!("{} ({})", x.layer, x.kind),
                    // A floor so the least harmful layer still shows a bar.
                    (h - lo) + 0.05 * (hi - lo).max(1e-12),
                    (hi - lo) * 1.05 + 1e-12,
                    b.spec.show(x.metric),
                )
            })
            .collect();
        s.push_str(&bars(
            "Sensitivity: the budget metric with only this layer changed (longer bar = more harmful)",
            &rows,
        ));
    }
    if !r.notes.is_empty() {
        s.push_str("<h2>Notes</h2><ul>\n");
        for n in &r.notes {
            let _ = writeln!(s, "<li>{}</li>", esc(n));
        }
        s.push_str("</ul>\n");
    }
    s.push_str("</body></html>\n");
    s
}
