//! One JSON scalar as an element of a tensor: the conversions every JSON
//! decoder shares (range checks included: a finite number that does not fit
//! FP32 or FP16 is refused, never read as infinity).

use half::f16;

/// One JSON scalar converted to an element type.
pub(super) trait Element: Sized {
    const WHAT: &'static str;
    /// True for FP16/FP32/FP64 (a finite number out of their range gets its
    /// own message).
    const FLOAT: bool = false;
    fn from_f64(_v: f64) -> Option<Self> {
        None
    }
    fn from_i64(v: i64) -> Option<Self>;
    fn from_u64(v: u64) -> Option<Self>;
    fn from_bool(_v: bool) -> Option<Self> {
        None
    }
    fn from_str(_v: &str) -> Option<Self> {
        None
    }
}

macro_rules! int_element {
    ($t:ty, $what:literal) => {
        impl Element for $t {
            const WHAT: &'static str = $what;
            fn from_i64(v: i64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
        }
    };
}
int_element!(u8, "UINT8");
int_element!(u16, "UINT16");
int_element!(u32, "UINT32");
int_element!(u64, "UINT64");
int_element!(i8, "INT8");
int_element!(i16, "INT16");
int_element!(i32, "INT32");
int_element!(i64, "INT64");

/// Floats read the value the JSON number names; a finite number beyond the
/// type's range is refused (`None`), and only the non-finite strings (when
/// allowed) become infinity.
macro_rules! float_element {
    ($t:ty, $what:literal, $from:expr) => {
        impl Element for $t {
            const WHAT: &'static str = $what;
            const FLOAT: bool = true;
            fn from_f64(v: f64) -> Option<Self> {
                let x: $t = $from(v);
                (x.is_finite() || !v.is_finite()).then_some(x)
            }
            fn from_i64(v: i64) -> Option<Self> {
                <Self as Element>::from_f64(v as f64)
            }
            fn from_u64(v: u64) -> Option<Self> {
                <Self as Element>::from_f64(v as f64)
            }
        }
    };
}
float_element!(f32, "FP32", |v: f64| v as f32);
float_element!(f64, "FP64", |v: f64| v);
float_element!(f16, "FP16", f16::from_f64);

impl Element for bool {
    const WHAT: &'static str = "BOOL";
    fn from_i64(v: i64) -> Option<Self> {
        match v {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
    fn from_u64(v: u64) -> Option<Self> {
        Self::from_i64(i64::try_from(v).ok()?)
    }
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

impl Element for Vec<u8> {
    const WHAT: &'static str = "BYTES";
    fn from_i64(_v: i64) -> Option<Self> {
        None
    }
    fn from_u64(_v: u64) -> Option<Self> {
        None
    }
    fn from_str(v: &str) -> Option<Self> {
        Some(v.as_bytes().to_vec())
    }
}

/// The non-finite float a proto3 JSON string names.
pub(super) fn nonfinite(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// A float as an error message shows it: exponent notation when plain
/// notation would be long (`1e39`, not 40 digits).
pub(super) fn show_f64(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e16 || v.abs() < 1e-6) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Why a JSON number is no valid element of type `T`.
pub(super) fn refusal<T: Element>(shown: std::fmt::Arguments<'_>, finite_number: bool) -> String {
    if T::FLOAT && finite_number {
        format!("element {shown} is out of the range of {}", T::WHAT)
    } else {
        format!("element {shown} is not a valid {}", T::WHAT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_numbers_beyond_a_float_range_are_refused() {
        assert_eq!(<f32 as Element>::from_f64(1e39), None);
        assert_eq!(<f32 as Element>::from_f64(-3.5e38), None);
        assert_eq!(<f32 as Element>::from_f64(3.4e38), Some(3.4e38));
        assert_eq!(
            <f32 as Element>::from_f64(f64::INFINITY),
            Some(f32::INFINITY),
            "named infinity stays"
        );
        assert!(<f32 as Element>::from_f64(f64::NAN).unwrap().is_nan());
        assert_eq!(<f16 as Element>::from_f64(70000.0), None);
        assert_eq!(<f16 as Element>::from_u64(u64::MAX), None);
        assert_eq!(<f64 as Element>::from_f64(1e300), Some(1e300));
        assert_eq!(
            refusal::<f32>(format_args!("1e39"), true),
            "element 1e39 is out of the range of FP32"
        );
        assert_eq!(
            refusal::<i8>(format_args!("300"), true),
            "element 300 is not a valid INT8"
        );
    }
}
