//! Multinomial logistic regression with L2, fitted by L-BFGS on candle matrices.
//!
//! The loss is the mean cross-entropy plus `l2 / 2 · ‖W‖²` (the bias is not penalised). Full-batch
//! optimisation makes training deterministic: the same data and settings give the same weights.

use candle_core::{D, DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::lbfgs::{LbfgsConfig, LbfgsReport, minimize};
use crate::error::{Result, RouterError};

/// Settings of a fit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct LogRegConfig {
    /// L2 penalty on the weights.
    pub l2: f32,
    /// Iteration cap of L-BFGS.
    pub max_iter: usize,
}

impl Default for LogRegConfig {
    fn default() -> Self {
        Self { l2: 1e-4, max_iter: 300 }
    }
}

/// A fitted classifier: `logits = x · W + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogReg {
    /// Weights, `dim × classes`, row-major.
    pub weights: Vec<f32>,
    /// Biases, one per class.
    pub bias: Vec<f32>,
    /// Input width.
    pub dim: usize,
    /// Number of classes.
    pub classes: usize,
}

/// The training matrices, built once per fit.
pub(crate) struct Problem {
    x: Tensor,
    xt: Tensor,
    y_onehot: Tensor,
    y: Tensor,
    n: usize,
    dim: usize,
    classes: usize,
    l2: f32,
}

impl Problem {
    pub(crate) fn new(rows: &[&[f32]], labels: &[usize], classes: usize, l2: f32) -> Result<Self> {
        let n = rows.len();
        if n == 0 || labels.len() != n {
            return Err(RouterError::Training("no training rows".into()));
        }
        let dim = rows[0].len();
        if rows.iter().any(|r| r.len() != dim) {
            return Err(RouterError::Training("rows of different widths".into()));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
            return Err(RouterError::Training(format!("label index {bad} out of range")));
        }
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let x = Tensor::from_vec(flat, (n, dim), &Device::Cpu)?;
        let xt = x.t()?.contiguous()?;
        let mut onehot = vec![0f32; n * classes];
        for (i, &l) in labels.iter().enumerate() {
            onehot[i * classes + l] = 1.0;
        }
        let y_onehot = Tensor::from_vec(onehot, (n, classes), &Device::Cpu)?;
        let y = Tensor::from_vec(labels.iter().map(|&l| l as u32).collect::<Vec<_>>(), n, &Device::Cpu)?;
        Ok(Self { x, xt, y_onehot, y, n, dim, classes, l2 })
    }

    /// Loss and gradient at flat parameters `[W (dim×classes), b (classes)]`.
    pub(crate) fn loss_grad(&self, theta: &[f32], grad: &mut [f32]) -> Result<f64> {
        let wk = self.dim * self.classes;
        let w = Tensor::from_slice(&theta[..wk], (self.dim, self.classes), &Device::Cpu)?;
        let b = Tensor::from_slice(&theta[wk..], self.classes, &Device::Cpu)?;
        let logits = self.x.matmul(&w)?.broadcast_add(&b)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked = logp.gather(&self.y.unsqueeze(1)?, 1)?;
        let nll = -(picked.sum_all()?.to_scalar::<f32>()? as f64) / self.n as f64;
        let wsq = w.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        let loss = nll + 0.5 * f64::from(self.l2) * wsq;
        let diff = (logp.exp()? - &self.y_onehot)?;
        let scale = 1.0 / self.n as f64;
        let gw = ((self.xt.matmul(&diff)? * scale)? + (w * f64::from(self.l2))?)?;
        let gb = (diff.sum(0)? * scale)?;
        let gw: Vec<f32> = gw.flatten_all()?.to_vec1()?;
        let gb: Vec<f32> = gb.to_vec1()?;
        grad[..wk].copy_from_slice(&gw);
        grad[wk..].copy_from_slice(&gb);
        Ok(loss)
    }
}

impl LogReg {
    /// Fit on rows (all of one width) with labels in `0..classes`.
    ///
    /// # Errors
    /// [`RouterError::Training`] for empty or inconsistent data; tensor failures.
    pub fn fit(rows: &[&[f32]], labels: &[usize], classes: usize, cfg: LogRegConfig) -> Result<(Self, LbfgsReport)> {
        let problem = Problem::new(rows, labels, classes, cfg.l2)?;
        let mut theta = vec![0f32; problem.dim * classes + classes];
        let report = minimize(&mut theta, LbfgsConfig { max_iter: cfg.max_iter, ..LbfgsConfig::default() }, |t, g| {
            problem.loss_grad(t, g)
        })?;
        let wk = problem.dim * classes;
        Ok((Self { weights: theta[..wk].to_vec(), bias: theta[wk..].to_vec(), dim: problem.dim, classes }, report))
    }

    /// Logits of one row.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let mut out = self.bias.clone();
        for (xi, wrow) in x.iter().zip(self.weights.chunks_exact(self.classes)) {
            if *xi == 0.0 {
                continue;
            }
            for (o, w) in out.iter_mut().zip(wrow) {
                *o += xi * w;
            }
        }
        out
    }

    /// Logits of many rows at once (one matrix product).
    ///
    /// # Errors
    /// Tensor failures.
    pub fn logits_batch(&self, rows: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let x = Tensor::from_vec(flat, (rows.len(), self.dim), &Device::Cpu)?;
        let w = Tensor::from_slice(&self.weights, (self.dim, self.classes), &Device::Cpu)?;
        let b = Tensor::from_slice(&self.bias, self.classes, &Device::Cpu)?;
        let l = x.matmul(&w)?.broadcast_add(&b)?.to_dtype(DType::F32)?;
        Ok(l.to_vec2()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vec<Vec<f32>>, Vec<usize>) {
        // Three blobs in 4 dimensions, deterministic.
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..60usize {
            let c = i % 3;
            let jitter = ((i * 37 % 11) as f32 - 5.0) / 20.0;
            let mut r = vec![jitter, -jitter, 0.5 * jitter, 0.1];
            r[c] += 1.0;
            rows.push(r);
            labels.push(c);
        }
        (rows, labels)
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (rows, labels) = toy();
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let p = Problem::new(&refs, &labels, 3, 0.05).expect("problem");
        let theta: Vec<f32> = (0..15).map(|i| ((i * 7 % 5) as f32 - 2.0) / 10.0).collect();
        let mut g = vec![0f32; 15];
        p.loss_grad(&theta, &mut g).expect("grad");
        let mut scratch = vec![0f32; 15];
        let h = 1e-2f32;
        for i in 0..15 {
            let mut tp = theta.clone();
            tp[i] += h;
            let lp = p.loss_grad(&tp, &mut scratch).expect("lp");
            let mut tm = theta.clone();
            tm[i] -= h;
            let lm = p.loss_grad(&tm, &mut scratch).expect("lm");
            let numeric = (lp - lm) / (2.0 * f64::from(h));
            assert!((numeric - f64::from(g[i])).abs() < 2e-3, "param {i}: analytic {} numeric {numeric}", g[i]);
        }
    }

    #[test]
    fn fits_separable_blobs_and_is_deterministic() {
        let (rows, labels) = toy();
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        let (m1, r1) = LogReg::fit(&refs, &labels, 3, LogRegConfig::default()).expect("fit");
        let (m2, _) = LogReg::fit(&refs, &labels, 3, LogRegConfig::default()).expect("fit");
        assert_eq!(m1, m2);
        assert!(r1.loss < 0.2, "{r1:?}");
        let correct = rows
            .iter()
            .zip(&labels)
            .filter(|&(r, &l)| {
                let lg = m1.logits(r);
                let best = (0..3).max_by(|&a, &b| lg[a].total_cmp(&lg[b])).expect("3 classes");
                best == l
            })
            .count();
        assert_eq!(correct, rows.len());
        let batch = m1.logits_batch(&refs[..2]).expect("batch");
        for (a, b) in batch[0].iter().zip(m1.logits(&rows[0])) {
            assert!((a - b).abs() < 1e-4);
        }
    }

    #[test]
    fn bad_labels_are_an_error_not_a_panic() {
        let rows = [vec![1.0f32, 0.0]];
        let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
        assert!(LogReg::fit(&refs, &[5], 2, LogRegConfig::default()).is_err());
        assert!(LogReg::fit(&[], &[], 2, LogRegConfig::default()).is_err());
    }
}
