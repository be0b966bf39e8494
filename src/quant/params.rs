//! Scales and zero points (ONNX QuantizeLinear: `q = saturate(round(x / scale) + zero_point)`,
//! round half to even).
//!
//! - Activations, asymmetric: the range is widened to include 0 (so 0 is exact — padding, ReLU);
//!   `scale = (max − min) / (qmax − qmin)`, `zero_point = qmin − round(min / scale)`.
//! - Activations, symmetric: `scale = max(|min|, |max|) / 127`, zero point 0 (int8) or 128 (uint8).
//! - Weights: int8 symmetric over `[-127, 127]` (not −128, so the range is symmetric and
//!   products stay within what u8×s8 kernels accumulate without overflow), per output channel or
//!   per tensor.
//! - A zero-width range (all zeros) gets scale 1: every value quantizes to the zero point exactly.

use super::calib::Range;
use crate::ir::{DataType, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActType {
    U8,
    I8,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

pub fn activation(r: Range, t: ActType, symmetric: bool) -> QParams {
    let (qmin, qmax) = match t {
        ActType::U8 => (0i32, 255i32),
        ActType::I8 => (-128, 127),
    };
    let (lo, hi) = (r.min.min(0.0), r.max.max(0.0));
    if symmetric {
        let a = lo.abs().max(hi.abs());
        let scale = if a > 0.0 { a / 127.0 } else { 1.0 };
        return QParams {
            scale,
            zero_point: if t == ActType::U8 { 128 } else { 0 },
        };
    }
    if hi - lo <= 0.0 {
        return QParams {
            scale: 1.0,
            zero_point: if t == ActType::U8 { 0 } else { 0 },
        };
    }
    let scale = (hi - lo) / (qmax - qmin) as f32;
    let zp = (qmin as f32 - (lo / scale).round()).clamp(qmin as f32, qmax as f32) as i32;
    QParams {
        scale,
        zero_point: zp,
    }
}

/// Zero-point tensor of the activation type.
pub fn zero_point_tensor(t: ActType, zps: &[i32], dims: Vec<i64>) -> Tensor {
    let (dt, bytes): (DataType, Vec<u8>) = match t {
        ActType::U8 => (DataType::UINT8, zps.iter().map(|&z| z as u8).collect()),
        ActType::I8 => (DataType::INT8, zps.iter().map(|&z| z as i8 as u8).collect()),
    };
    Tensor::from_raw(dt, dims, bytes)
}

pub struct QuantizedWeight {
    pub values: Vec<i8>,
    /// One per channel along `axis`, or one.
    pub scales: Vec<f32>,
}

/// Symmetric int8 quantization of a weight along `axis` (or per tensor).
pub fn quantize_weight(w: &[f32], dims: &[i64], axis: usize, per_channel: bool) -> QuantizedWeight {
    let channels = if per_channel { dims[axis] as usize } else { 1 };
    let inner: usize = dims[axis + 1..].iter().product::<i64>() as usize;
    let channel_of = |i: usize| {
        if per_channel {
            (i / inner) % channels
        } else {
            0
        }
    };
    let mut maxabs = vec![0.0f32; channels];
    for (i, &v) in w.iter().enumerate() {
        let c = channel_of(i);
        maxabs[c] = maxabs[c].max(v.abs());
    }
    let scales: Vec<f32> = maxabs
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let values = w
        .iter()
        .enumerate()
        .map(|(i, &v)| round_half_even(v / scales[channel_of(i)]).clamp(-127.0, 127.0) as i8)
        .collect();
    QuantizedWeight { values, scales }
}

/// Round half to even, as QuantizeLinear specifies.
pub fn round_half_even(x: f32) -> f32 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(min: f32, max: f32) -> Range {
        Range { min, max }
    }

    #[test]
    fn asymmetric_uint8_by_hand() {
        // [-1, 3]: scale 4/255, zero point round(1 / (4/255)) = round(63.75) = 64.
        let p = activation(r(-1.0, 3.0), ActType::U8, false);
        assert!((p.scale - 4.0 / 255.0).abs() < 1e-9);
        assert_eq!(p.zero_point, 64);
        // One-sided negative [-3, -1] widens to [-3, 0]: zero point 255.
        let p = activation(r(-3.0, -1.0), ActType::U8, false);
        assert!((p.scale - 3.0 / 255.0).abs() < 1e-9);
        assert_eq!(p.zero_point, 255);
        // One-sided positive (after ReLU) [0.5, 2] widens to [0, 2]: zero point 0.
        assert_eq!(activation(r(0.5, 2.0), ActType::U8, false).zero_point, 0);
        // Constant [2, 2] widens to [0, 2].
        let p = activation(r(2.0, 2.0), ActType::U8, false);
        assert!((p.scale - 2.0 / 255.0).abs() < 1e-9);
        // All zeros: scale 1, zero point 0.
        assert_eq!(
            activation(r(0.0, 0.0), ActType::U8, false),
            QParams {
                scale: 1.0,
                zero_point: 0
            }
        );
    }

    #[test]
    fn int8_and_symmetric_by_hand() {
        // int8 asymmetric [-1, 3]: zero point -128 - round(-1 / (4/255)) = -128 + 64 = -64.
        let p = activation(r(-1.0, 3.0), ActType::I8, false);
        assert_eq!(p.zero_point, -64);
        // symmetric: scale max(|-1|, 3) / 127.
        let p = activation(r(-1.0, 3.0), ActType::I8, true);
        assert!((p.scale - 3.0 / 127.0).abs() < 1e-9);
        assert_eq!(p.zero_point, 0);
        assert_eq!(activation(r(-1.0, 3.0), ActType::U8, true).zero_point, 128);
    }

    #[test]
    fn weights_per_channel() {
        // Two output channels (axis 0) of two values each.
        let q = quantize_weight(&[1.0, -0.5, 0.0, 0.0], &[2, 2], 0, true);
        assert_eq!(q.scales, vec![1.0 / 127.0, 1.0]);
        assert_eq!(q.values, vec![127, -64, 0, 0]);
        let t = quantize_weight(&[1.0, -0.5, 0.0, 2.0], &[2, 2], 0, false);
        assert_eq!(t.scales, vec![2.0 / 127.0]);
        // Axis 1 (MatMul [K, N]): channels are columns.
        let c = quantize_weight(&[1.0, 2.0, -1.0, 4.0], &[2, 2], 1, true);
        assert_eq!(c.scales, vec![1.0 / 127.0, 4.0 / 127.0]);
        assert_eq!(c.values, vec![127, 64, -127, 127]);
    }

    #[test]
    fn rounding_is_half_to_even() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(-2.5), -2.0);
        assert_eq!(round_half_even(2.4), 2.0);
    }
}
