//! Confidence calibration (temperature scaling), calibration error, and threshold fitting.

/// Softmax of `logits / temperature`, computed stably.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = temperature.max(1e-3);
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let exps: Vec<f32> = logits.iter().map(|&l| ((l - m) / t).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Mean negative log-likelihood of the labels under `softmax(logits / t)`.
pub fn nll(logits: &[Vec<f32>], labels: &[usize], t: f32) -> f64 {
    let n = logits.len().max(1) as f64;
    logits.iter().zip(labels).map(|(l, &y)| -f64::from(softmax(l, t)[y].max(1e-12)).ln()).sum::<f64>() / n
}

/// The temperature in `[0.05, 20]` minimising held-out NLL (golden-section search on `ln t`;
/// the NLL is unimodal in the temperature).
pub fn fit_temperature(logits: &[Vec<f32>], labels: &[usize]) -> f32 {
    if logits.is_empty() {
        return 1.0;
    }
    let f = |lt: f64| nll(logits, labels, lt.exp() as f32);
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - phi * (b - a);
    let mut d = a + phi * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..60 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - phi * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + phi * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp() as f32
}

/// Expected calibration error with `bins` equal-width confidence bins.
pub fn expected_calibration_error(confidence: &[f32], correct: &[bool], bins: usize) -> f64 {
    let n = confidence.len();
    if n == 0 || bins == 0 {
        return 0.0;
    }
    let mut count = vec![0usize; bins];
    let mut conf_sum = vec![0f64; bins];
    let mut acc_sum = vec![0f64; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c.clamp(0.0, 1.0) * bins as f32) as usize).min(bins - 1);
        count[b] += 1;
        conf_sum[b] += f64::from(c);
        acc_sum[b] += if ok { 1.0 } else { 0.0 };
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| (count[b] as f64 / n as f64) * ((acc_sum[b] - conf_sum[b]) / count[b] as f64).abs())
        .sum()
}

/// The threshold under which a fraction `rate` of `scores` falls: rejecting scores below it
/// rejects about `rate` of these (in-scope) items.
pub fn threshold_for_rejection_rate(scores: &[f32], rate: f32) -> f32 {
    if scores.is_empty() || rate <= 0.0 {
        return 0.0;
    }
    let mut s = scores.to_vec();
    s.sort_by(f32::total_cmp);
    let k = ((rate.min(1.0) * s.len() as f32).floor() as usize).min(s.len() - 1);
    if k == 0 {
        return s[0];
    }
    // Midway between the k-th lowest and the next, so exactly k items fall under it.
    (s[k - 1] + s[k]) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_temperature_flattens() {
        let p = softmax(&[2.0, 1.0, 0.0], 1.0);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let flat = softmax(&[2.0, 1.0, 0.0], 10.0);
        assert!(flat[0] < p[0]);
    }

    #[test]
    fn temperature_recovers_overconfidence() {
        // Logits that are 3x too sharp for labels that are right 75% of the time.
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for i in 0..400 {
            logits.push(vec![3.0 * 1.0986, 0.0]); // softmax at t=3 gives p=0.75
            labels.push(usize::from(i % 4 == 0));
        }
        let t = fit_temperature(&logits, &labels);
        assert!((t - 3.0).abs() < 0.05, "t = {t}");
        let before: Vec<f32> = logits.iter().map(|l| softmax(l, 1.0)[0]).collect();
        let after: Vec<f32> = logits.iter().map(|l| softmax(l, t)[0]).collect();
        let correct: Vec<bool> = labels.iter().map(|&l| l == 0).collect();
        let e1 = expected_calibration_error(&before, &correct, 10);
        let e2 = expected_calibration_error(&after, &correct, 10);
        assert!(e2 < 0.01 && e1 > 0.15, "before {e1}, after {e2}");
    }

    #[test]
    fn threshold_rejects_the_requested_fraction() {
        let scores: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let t = threshold_for_rejection_rate(&scores, 0.05);
        let rejected = scores.iter().filter(|&&s| s < t).count();
        assert_eq!(rejected, 5);
        assert_eq!(threshold_for_rejection_rate(&[], 0.1), 0.0);
        assert_eq!(threshold_for_rejection_rate(&scores, 0.0), 0.0);
    }
}
