//! Limited-memory BFGS with a backtracking (Armijo) line search, for smooth convex losses.
//!
//! Small and deterministic: no randomness, a fixed history size, and sums in `f64` so that the
//! same inputs always give the same iterates.

/// Stopping rules and memory of the optimiser.
#[derive(Debug, Clone, Copy)]
pub struct LbfgsConfig {
    /// Number of correction pairs kept.
    pub memory: usize,
    /// Iteration cap.
    pub max_iter: usize,
    /// Stop once the largest gradient component is below this.
    pub grad_tol: f64,
    /// Stop once the relative decrease of the loss over one step is below this.
    pub rel_tol: f64,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self { memory: 10, max_iter: 300, grad_tol: 1e-5, rel_tol: 1e-9 }
    }
}

/// Why the optimiser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbfgsStop {
    /// The largest gradient component fell below `grad_tol`.
    Gradient,
    /// One step decreased the loss by less than `rel_tol` (relative).
    Loss,
    /// No step along the search direction decreased the loss enough.
    LineSearch,
    /// `max_iter` iterations ran.
    MaxIter,
}

impl LbfgsStop {
    /// Lower-case name, for reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gradient => "gradient",
            Self::Loss => "loss",
            Self::LineSearch => "line-search",
            Self::MaxIter => "max-iter",
        }
    }
}

/// What the optimiser did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LbfgsReport {
    /// Iterations run.
    pub iterations: usize,
    /// Final loss.
    pub loss: f64,
    /// Why it stopped.
    pub stop: LbfgsStop,
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
}

/// Minimise `f` from `x` (updated in place). `f` returns the loss and writes the gradient.
///
/// # Errors
/// Whatever `f` returns.
pub fn minimize<E>(
    x: &mut [f32],
    cfg: LbfgsConfig,
    mut f: impl FnMut(&[f32], &mut [f32]) -> Result<f64, E>,
) -> Result<LbfgsReport, E> {
    let n = x.len();
    let mut g = vec![0f32; n];
    let mut loss = f(x, &mut g)?;
    let mut stop = LbfgsStop::MaxIter;
    let mut s_hist: Vec<Vec<f32>> = Vec::new();
    let mut y_hist: Vec<Vec<f32>> = Vec::new();
    let mut rho: Vec<f64> = Vec::new();
    let mut x_new = vec![0f32; n];
    let mut g_new = vec![0f32; n];
    let mut iterations = 0;
    for it in 0..cfg.max_iter {
        iterations = it + 1;
        let gmax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
        if f64::from(gmax) < cfg.grad_tol {
            stop = LbfgsStop::Gradient;
            break;
        }
        // Two-loop recursion: d = -H g.
        let mut q: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
        let mut alpha = vec![0f64; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            let a = rho[i] * s_hist[i].iter().zip(&q).map(|(&s, &qq)| f64::from(s) * qq).sum::<f64>();
            alpha[i] = a;
            for (qq, &yy) in q.iter_mut().zip(&y_hist[i]) {
                *qq -= a * f64::from(yy);
            }
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => dot(s, y) / dot(y, y).max(1e-300),
            _ => 1.0 / f64::from(gmax.max(1e-12)) / (n as f64).sqrt().max(1.0),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for i in 0..s_hist.len() {
            let beta = rho[i] * y_hist[i].iter().zip(&q).map(|(&y, &qq)| f64::from(y) * qq).sum::<f64>();
            for (qq, &ss) in q.iter_mut().zip(&s_hist[i]) {
                *qq += (alpha[i] - beta) * f64::from(ss);
            }
        }
        let mut d: Vec<f32> = q.iter().map(|&v| -v as f32).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            rho.clear();
            d = g.iter().map(|&v| -v).collect();
            slope = dot(&g, &d);
        }
        let mut step = 1.0f64;
        let mut new_loss;
        let mut accepted = false;
        for _ in 0..40 {
            for ((xn, &xv), &dv) in x_new.iter_mut().zip(x.iter()).zip(&d) {
                *xn = xv + (step * f64::from(dv)) as f32;
            }
            new_loss = f(&x_new, &mut g_new)?;
            if new_loss.is_finite() && new_loss <= loss + 1e-4 * step * slope {
                accepted = true;
                let s: Vec<f32> = x_new.iter().zip(x.iter()).map(|(a, b)| a - b).collect();
                let y: Vec<f32> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
                let sy = dot(&s, &y);
                if sy > 1e-12 {
                    if s_hist.len() == cfg.memory {
                        s_hist.remove(0);
                        y_hist.remove(0);
                        rho.remove(0);
                    }
                    s_hist.push(s);
                    y_hist.push(y);
                    rho.push(1.0 / sy);
                }
                x.copy_from_slice(&x_new);
                g.copy_from_slice(&g_new);
                let rel = (loss - new_loss).abs() / loss.abs().max(1e-12);
                loss = new_loss;
                if rel < cfg.rel_tol {
                    return Ok(LbfgsReport { iterations, loss, stop: LbfgsStop::Loss });
                }
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            stop = LbfgsStop::LineSearch;
            break;
        }
    }
    Ok(LbfgsReport { iterations, loss, stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_a_rosenbrock_valley() {
        let mut x = vec![-1.2f32, 1.0];
        let cfg = LbfgsConfig { max_iter: 500, ..LbfgsConfig::default() };
        let report = minimize::<()>(&mut x, cfg, |p, g| {
            let (a, b) = (f64::from(p[0]), f64::from(p[1]));
            g[0] = (-2.0 * (1.0 - a) - 400.0 * a * (b - a * a)) as f32;
            g[1] = (200.0 * (b - a * a)) as f32;
            Ok((1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2))
        })
        .expect("no error");
        assert!(report.loss < 1e-6, "{report:?}");
        assert!((x[0] - 1.0).abs() < 1e-2 && (x[1] - 1.0).abs() < 1e-2, "{x:?}");
    }
}
