//! Latency in tract: warm-up runs, then timed runs. With two models the runs alternate (A, B, A,
//! B …) so drift on a noisy machine hits both equally, and the ratio of medians is reported.

use super::{RunError, Runner};
use crate::ir::{Model, Tensor};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub runs: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub models: Vec<Latency>,
    /// Median of the second model over median of the first, when two were given.
    pub ratio: Option<f64>,
}

fn summarize(mut t: Vec<f64>) -> Latency {
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = t.len();
    let median = if n % 2 == 1 {
        t[n / 2]
    } else {
        (t[n / 2 - 1] + t[n / 2]) / 2.0
    };
    Latency {
        median_ms: median,
        min_ms: t[0],
        max_ms: t[n - 1],
        runs: n,
    }
}

pub fn bench(
    models: &[&Model],
    inputs: &[Tensor],
    runs: usize,
    warmup: usize,
) -> Result<BenchReport, RunError> {
    let runs = runs.max(1);
    let runners = models
        .iter()
        .map(|m| Runner::from_model(m, inputs))
        .collect::<Result<Vec<_>, _>>()?;
    for r in &runners {
        for _ in 0..warmup {
            r.run(inputs)?;
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); runners.len()];
    for _ in 0..runs {
        for (k, r) in runners.iter().enumerate() {
            let t0 = Instant::now();
            r.run(inputs)?;
            times[k].push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let models: Vec<Latency> = times.into_iter().map(summarize).collect();
    let ratio = (models.len() == 2).then(|| models[1].median_ms / models[0].median_ms);
    Ok(BenchReport { models, ratio })
}
