//! A/B statistics: Welch's t-test for continuous feedback, the
//! two-proportion z-test for 0/1 feedback, each with the difference of means
//! (candidate − stable) and its 95% confidence interval.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use crate::runtime::window::Moments;

/// The result of comparing two arms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestResult {
    /// "welch-t" or "two-proportion-z".
    pub test: &'static str,
    pub mean_stable: f64,
    pub mean_candidate: f64,
    pub n_stable: usize,
    pub n_candidate: usize,
    /// candidate − stable.
    pub difference: f64,
    pub ci95: (f64, f64),
    pub statistic: f64,
    pub p_value: f64,
}

/// Welch's unequal-variance t-test of `b` (candidate) against `a` (stable).
/// `None` with fewer than two values in an arm.
pub fn welch(a: &Moments, b: &Moments) -> Option<TestResult> {
    if a.count < 2 || b.count < 2 {
        return None;
    }
    let (ma, va) = (a.mean, a.variance());
    let (mb, vb) = (b.mean, b.variance());
    let (na, nb) = (a.count as f64, b.count as f64);
    let (sa, sb) = (va / na, vb / nb);
    let se = (sa + sb).sqrt();
    let diff = mb - ma;
    if se == 0.0 {
        let p = if diff == 0.0 { 1.0 } else { 0.0 };
        return Some(TestResult {
            test: "welch-t",
            mean_stable: ma,
            mean_candidate: mb,
            n_stable: a.count as usize,
            n_candidate: b.count as usize,
            difference: diff,
            ci95: (diff, diff),
            statistic: if diff == 0.0 {
                0.0
            } else {
                diff.signum() * f64::INFINITY
            },
            p_value: p,
        });
    }
    let df = (sa + sb).powi(2) / (sa.powi(2) / (na - 1.0) + sb.powi(2) / (nb - 1.0));
    let t = diff / se;
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let p = 2.0 * (1.0 - dist.cdf(t.abs()));
    let q = dist.inverse_cdf(0.975);
    Some(TestResult {
        test: "welch-t",
        mean_stable: ma,
        mean_candidate: mb,
        n_stable: a.count as usize,
        n_candidate: b.count as usize,
        difference: diff,
        ci95: (diff - q * se, diff + q * se),
        statistic: t,
        p_value: p.clamp(0.0, 1.0),
    })
}

/// Two-proportion z-test (pooled) of successes `xb/nb` (candidate) against
/// `xa/na` (stable); the interval uses the unpooled standard error.
pub fn two_proportion(xa: usize, na: usize, xb: usize, nb: usize) -> Option<TestResult> {
    if na == 0 || nb == 0 {
        return None;
    }
    let (pa, pb) = (xa as f64 / na as f64, xb as f64 / nb as f64);
    let pooled = (xa + xb) as f64 / (na + nb) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / na as f64 + 1.0 / nb as f64)).sqrt();
    let diff = pb - pa;
    let normal = Normal::new(0.0, 1.0).ok()?;
    let (z, p) = if se == 0.0 {
        (0.0, 1.0)
    } else {
        let z = diff / se;
        (z, 2.0 * (1.0 - normal.cdf(z.abs())))
    };
    let se_u = (pa * (1.0 - pa) / na as f64 + pb * (1.0 - pb) / nb as f64).sqrt();
    let q = normal.inverse_cdf(0.975);
    Some(TestResult {
        test: "two-proportion-z",
        mean_stable: pa,
        mean_candidate: pb,
        n_stable: na,
        n_candidate: nb,
        difference: diff,
        ci95: (diff - q * se_u, diff + q * se_u),
        statistic: z,
        p_value: p.clamp(0.0, 1.0),
    })
}

/// Chooses the test by the data: proportions for 0/1 values, Welch otherwise.
pub fn compare(stable: &Moments, candidate: &Moments) -> Option<TestResult> {
    if stable.non_binary == 0 && candidate.non_binary == 0 {
        let (xa, na) = (stable.successes() as usize, stable.count as usize);
        let (xb, nb) = (candidate.successes() as usize, candidate.count as usize);
        two_proportion(xa, na, xb, nb)
    } else {
        welch(stable, candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(xs: &[f64]) -> Moments {
        let mut m = Moments::default();
        xs.iter().for_each(|&x| m.push(x));
        m
    }

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} vs {b}");
    }

    /// Reference values from scipy 1.17.1:
    /// `stats.ttest_ind(a, b, equal_var=False)` and its confidence_interval(0.95)
    /// (note scipy's difference is a − b; ours is candidate − stable).
    #[test]
    fn welch_matches_scipy() {
        let a = [1.2, 3.4, 2.2, 5.1, 4.4, 3.3, 2.8, 4.0];
        let b = [2.1, 1.9, 1.0, 2.5, 1.8, 2.2, 1.4, 2.9, 2.0, 1.7];
        // stable = b, candidate = a  →  same orientation as scipy's a − b
        let r = welch(&moments(&b), &moments(&a)).unwrap();
        close(r.statistic, 2.8656252439750673, 1e-9);
        close(r.p_value, 0.018446754867191002, 1e-7);
        close(r.ci95.0, 0.2857205926566302, 1e-6);
        close(r.ci95.1, 2.4142794073433693, 1e-6);
    }

    /// Reference: z = (p1 − p2) / sqrt(p(1 − p)(1/n1 + 1/n2)) and
    /// 2·norm.sf(|z|) computed with scipy 1.17.1 for 430/450 vs 410/450.
    #[test]
    fn two_proportion_matches_scipy() {
        let r = two_proportion(410, 450, 430, 450).unwrap();
        close(r.statistic, 2.6726124191242477, 1e-9);
        close(r.p_value, 0.007526315166457795, 1e-9);
        close(r.ci95.0, 0.011980646645311864, 1e-9);
        close(r.ci95.1, 0.07690824224357715, 1e-9);
    }

    #[test]
    fn identical_arms_show_no_difference() {
        let a = [0.0, 1.0, 1.0, 0.0, 1.0];
        let r = compare(&moments(&a), &moments(&a)).unwrap();
        assert_eq!(r.test, "two-proportion-z");
        assert_eq!(r.difference, 0.0);
        assert!(r.p_value > 0.99);
        assert!(welch(&moments(&[1.0]), &moments(&[2.0, 3.0])).is_none());
    }
}
