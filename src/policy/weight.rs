//! A *weight* is a share of traffic. It is held in basis points (1 = 0.01 %,
//! 10000 = all traffic) and spoken in percent: specs and policies write
//! `"10%"` or `10` under a field named `weight` (meaning 10 %), and basis
//! points only under a field that says so (`weight_bp`, `split_bp`), so a
//! `10` can never mean 0.1 % by accident. Answers write `"10%"`.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Basis points: 10000 = 100%.
pub const FULL_WEIGHT: u32 = 10_000;

/// A share of traffic, 0 % to 100 % in steps of 0.01 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(u32);

/// Why a weight was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightError {
    #[error("weight {0}% is outside 0%..=100%")]
    OutOfRange(String),
    #[error("weight {0}% is finer than 0.01% (write at most two decimals)")]
    TooFine(String),
    #[error("'{0}' is not a weight; write a percent such as \"10%\" or 10 (meaning 10%)")]
    NotAWeight(String),
    #[error("weight {0} basis points is above 10000 (100%)")]
    BasisPoints(u64),
}

impl Weight {
    /// No traffic.
    pub const ZERO: Weight = Weight(0);
    /// All traffic.
    pub const FULL: Weight = Weight(FULL_WEIGHT);

    /// A weight in basis points (10000 = 100 %).
    pub fn from_bp(bp: u64) -> Result<Weight, WeightError> {
        if bp > FULL_WEIGHT as u64 {
            return Err(WeightError::BasisPoints(bp));
        }
        Ok(Weight(bp as u32))
    }

    /// A weight in percent; at most two decimals.
    pub fn from_percent(p: f64) -> Result<Weight, WeightError> {
        let shown = format_number(p);
        if !p.is_finite() || !(0.0..=100.0).contains(&p) {
            return Err(WeightError::OutOfRange(shown));
        }
        let bp = p * 100.0;
        if (bp - bp.round()).abs() > 1e-6 {
            return Err(WeightError::TooFine(shown));
        }
        Ok(Weight(bp.round() as u32))
    }

    /// Parses `"10%"`, `"10 %"`, `"0.5%"` or a bare `"10"` (percent).
    pub fn parse(s: &str) -> Result<Weight, WeightError> {
        let t = s.trim();
        let number = t.strip_suffix('%').unwrap_or(t).trim();
        let p: f64 = number
            .parse()
            .map_err(|_| WeightError::NotAWeight(s.to_string()))?;
        Weight::from_percent(p)
    }

    /// The weight in basis points.
    pub fn bp(self) -> u32 {
        self.0
    }

    /// The weight in percent.
    pub fn percent(self) -> f64 {
        self.0 as f64 / 100.0
    }

    /// True for 0 %.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// `12`, `0.5`, `12.25`: no trailing zeros.
fn format_number(p: f64) -> String {
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".into()
    } else {
        s.to_string()
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", format_number(self.percent()))
    }
}

impl Serialize for Weight {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Weight, D::Error> {
        struct Percent;
        impl Visitor<'_> for Percent {
            type Value = Weight;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percent such as \"10%\" or 10")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Weight, E> {
                Weight::from_percent(v as f64).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Weight, E> {
                Weight::from_percent(v as f64).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Weight, E> {
                Weight::from_percent(v).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Weight, E> {
                Weight::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Percent)
    }
}

/// A weight given as percent (`weight`) or as basis points (`weight_bp`):
/// exactly one of the two. For spec structs that accept both spellings.
pub fn one_of(percent: Option<Weight>, bp: Option<u64>, field: &str) -> Result<Weight, String> {
    match (percent, bp) {
        (Some(w), None) => Ok(w),
        (None, Some(bp)) => Weight::from_bp(bp).map_err(|e| e.to_string()),
        (Some(_), Some(_)) => Err(format!("give `{field}` (percent) or `{field}_bp`, not both")),
        (None, None) => Err(format!("missing `{field}` (a percent such as \"10%\")")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_in_percent_out() {
        for (input, bp) in [
            ("\"10%\"", 1000),
            ("\"10 %\"", 1000),
            ("10", 1000),
            ("0.5", 50),
            ("\"0.01%\"", 1),
            ("100", 10_000),
            ("\"100%\"", 10_000),
            ("0", 0),
        ] {
            let w: Weight = serde_json::from_str(input).unwrap();
            assert_eq!(w.bp(), bp, "{input}");
        }
        assert_eq!(serde_json::to_string(&Weight(1000)).unwrap(), "\"10%\"");
        assert_eq!(serde_json::to_string(&Weight(50)).unwrap(), "\"0.5%\"");
        assert_eq!(serde_json::to_string(&Weight(1234)).unwrap(), "\"12.34%\"");
        let back: Weight = serde_json::from_str(&serde_json::to_string(&Weight(1234)).unwrap()).unwrap();
        assert_eq!(back, Weight(1234));
    }

    #[test]
    fn nothing_silently_means_something_else() {
        for bad in ["1000", "\"150%\"", "-1", "\"12.345%\"", "\"ten\"", "true"] {
            let err = serde_json::from_str::<Weight>(bad).unwrap_err().to_string();
            assert!(
                err.contains("outside")
                    || err.contains("finer")
                    || err.contains("not a weight")
                    || err.contains("percent"),
                "{bad}: {err}"
            );
        }
        assert_eq!(one_of(None, Some(1000), "weight").unwrap(), Weight(1000));
        assert!(one_of(None, Some(10_001), "weight").is_err());
        assert!(one_of(Some(Weight(1)), Some(1), "weight")
            .unwrap_err()
            .contains("not both"));
        assert!(one_of(None, None, "weight").unwrap_err().contains("missing"));
    }
}
