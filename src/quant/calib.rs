//! Calibration: run the float model in tract with the values to quantize exposed as outputs, and
//! fold every sample into per-value statistics of fixed size (min, max and a histogram of |x|), so
//! memory does not grow with the number of samples.
//!
//! The histogram covers `[0, range)` with [`BINS`] bins; when a sample exceeds the range, the range
//! doubles and pairs of bins merge, so no sample is clipped and the size never changes.

use crate::inputs::Sample;
use crate::ir::{GraphOutput, Model, Tensor};
use crate::verify::{RunError, Runner};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Histogram resolution: 2048 bins over |x| give the KL search 16 candidate thresholds per int8
/// level and keep each statistic at 16 KiB.
pub const BINS: usize = 2048;

/// Streaming statistics of one value.
#[derive(Clone, Debug)]
pub struct Stat {
    pub min: f32,
    pub max: f32,
    /// Upper edge of the histogram of |x|.
    pub range: f32,
    pub hist: Vec<u64>,
    pub count: u64,
}

impl Default for Stat {
    fn default() -> Self {
        Stat {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            range: 0.0,
            hist: vec![0; BINS],
            count: 0,
        }
    }
}

impl Stat {
    pub fn add(&mut self, values: &[f32]) {
        let mut local_max = 0.0f32;
        for &v in values {
            if v.is_finite() {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                local_max = local_max.max(v.abs());
            }
        }
        if self.range == 0.0 {
            self.range = if local_max > 0.0 { local_max } else { 1e-8 };
        }
        while local_max > self.range {
            // Double the range: bins 2k and 2k+1 merge into bin k.
            for k in 0..BINS / 2 {
                self.hist[k] = self.hist[2 * k] + self.hist[2 * k + 1];
            }
            self.hist[BINS / 2..].iter_mut().for_each(|h| *h = 0);
            self.range *= 2.0;
        }
        let scale = BINS as f32 / self.range;
        for &v in values {
            if v.is_finite() {
                let b = ((v.abs() * scale) as usize).min(BINS - 1);
                self.hist[b] += 1;
                self.count += 1;
            }
        }
    }

    /// Smallest threshold below which `percentile`% of |x| lies.
    pub fn percentile(&self, percentile: f64) -> f32 {
        let target = (self.count as f64 * percentile / 100.0).ceil() as u64;
        let mut acc = 0u64;
        for (k, &h) in self.hist.iter().enumerate() {
            acc += h;
            if acc >= target {
                return (k + 1) as f32 * self.range / BINS as f32;
            }
        }
        self.range
    }

    /// Threshold minimising the KL divergence between the |x| distribution and its 128-level
    /// quantisation (the entropy calibration of TensorRT-style int8), searched over bin edges.
    pub fn entropy_threshold(&self) -> f32 {
        const LEVELS: usize = 128;
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return self.range;
        }
        let mut best = (f64::INFINITY, BINS);
        for edge in (LEVELS..=BINS).step_by(16) {
            // Reference: the first `edge` bins, with everything above folded into the last one.
            let mut p: Vec<f64> = self.hist[..edge].iter().map(|&h| h as f64).collect();
            p[edge - 1] += self.hist[edge..].iter().map(|&h| h as f64).sum::<f64>();
            // Candidate: merge into LEVELS groups, then spread each group over its non-empty bins.
            let mut q = vec![0.0f64; edge];
            for l in 0..LEVELS {
                let (a, b) = (
                    l * edge / LEVELS,
                    ((l + 1) * edge / LEVELS).max(l * edge / LEVELS + 1),
                );
                let mass: f64 = self.hist[a..b].iter().map(|&h| h as f64).sum();
                let nonzero = self.hist[a..b].iter().filter(|&&h| h > 0).count();
                if nonzero > 0 {
                    for k in a..b {
                        if self.hist[k] > 0 {
                            q[k] = mass / nonzero as f64;
                        }
                    }
                }
            }
            let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
            if qs == 0.0 {
                continue;
            }
            let mut kl = 0.0;
            for k in 0..edge {
                if p[k] > 0.0 {
                    let pk = p[k] / ps;
                    let qk = (q[k] / qs).max(1e-12);
                    kl += pk * (pk / qk).ln();
                }
            }
            if kl < best.0 {
                best = (kl, edge);
            }
        }
        best.1 as f32 * self.range / BINS as f32
    }
}

/// How a range is chosen from the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Method {
    MinMax,
    Percentile(f64),
    Entropy,
}

/// The range used for one value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

/// Value name → range: what calibration produces and `--table` reuses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationTable {
    pub method: String,
    pub samples: usize,
    pub ranges: BTreeMap<String, Range>,
}

impl Stat {
    pub fn range_for(&self, method: Method) -> Range {
        if self.count == 0 {
            return Range { min: 0.0, max: 0.0 };
        }
        let t = match method {
            Method::MinMax => {
                return Range {
                    min: self.min,
                    max: self.max,
                }
            }
            Method::Percentile(p) => self.percentile(p),
            Method::Entropy => self.entropy_threshold(),
        };
        // Clip the observed extremes to the threshold, keeping one-sided ranges one-sided.
        Range {
            min: self.min.max(-t),
            max: self.max.min(t),
        }
    }
}

/// Runs the model on every sample with `values` exposed and returns their statistics.
pub fn collect(
    model: &Model,
    values: &[String],
    samples: impl IntoIterator<Item = Sample>,
) -> Result<BTreeMap<String, Stat>, RunError> {
    let mut samples = samples.into_iter().peekable();
    let mut m = model.clone();
    let g = &mut m.graph;
    let mut exposed = Vec::new();
    for name in values {
        if let Some(v) = g.find_value(name) {
            if !g.is_graph_output(v) {
                g.outputs.push(GraphOutput {
                    value: v,
                    ty: None,
                    doc_string: String::new(),
                    metadata_props: vec![],
                });
            }
            exposed.push(name.clone());
        }
    }
    let names: Vec<String> = g
        .outputs
        .iter()
        .map(|o| g.value(o.value).name.clone())
        .collect();
    let first = samples.peek().map(|s| s.inputs.clone()).unwrap_or_default();
    let runner = Runner::from_model(&m, &first)?;
    drop(first);
    let mut stats: BTreeMap<String, Stat> = exposed
        .iter()
        .map(|n| (n.clone(), Stat::default()))
        .collect();
    // One sample at a time: memory is one sample and its exposed values, whatever the count.
    for s in samples {
        let outs: Vec<Tensor> = runner.run(&s.inputs)?;
        for (name, t) in names.iter().zip(&outs) {
            if let Some(st) = stats.get_mut(name) {
                if let Some(v) = t.to_f32_vec() {
                    st.add(&v);
                }
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_grows_without_growing_memory() {
        let mut s = Stat::default();
        s.add(&[0.5, -0.25]);
        s.add(&[4.0]);
        s.add(&[-100.0]);
        assert_eq!(s.hist.len(), BINS);
        assert_eq!(s.count, 4);
        assert_eq!((s.min, s.max), (-100.0, 4.0));
        assert!(s.range >= 100.0);
        assert_eq!(s.hist.iter().sum::<u64>(), 4);
    }

    #[test]
    fn percentile_and_entropy_clip_outliers() {
        let mut s = Stat::default();
        let mut v: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32 / 100.0).collect();
        v.push(50.0);
        s.add(&v);
        let p = s.range_for(Method::Percentile(99.9));
        assert!(p.max < 2.0 && p.max > 0.9, "{p:?}");
        let e = s.range_for(Method::Entropy);
        assert!(e.max < 50.0, "{e:?}");
        assert_eq!(s.range_for(Method::MinMax).max, 50.0);
        assert_eq!(p.min, 0.0, "one-sided stays one-sided");
    }
}
