//! Summaries of repeated measurements: median and range of each side, and the ratio of the
//! subject's median to the baseline's.

use serde::Serialize;

/// The repetitions of one metric under one variant, and their median and range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Summary {
    pub(crate) values: Vec<f64>,
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Summary {
    /// `None` when there are no values (or a value is NaN, which cannot be ordered).
    pub(crate) fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            *sorted.get(n / 2)?
        } else {
            (*sorted.get(n / 2 - 1)? + *sorted.get(n / 2)?) / 2.0
        };
        Some(Summary {
            values: values.to_vec(),
            median,
            min: *sorted.first()?,
            max: *sorted.last()?,
        })
    }
}

/// subject / baseline; `None` when the baseline is zero (no meaningful ratio).
pub(crate) fn ratio(baseline: f64, subject: f64) -> Option<f64> {
    (baseline != 0.0 && baseline.is_finite() && subject.is_finite()).then(|| subject / baseline)
}

/// A value with as many decimals as its size warrants: 12346, 123.5, 12.35, 1.234.
pub(crate) fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(s.values, vec![3.0, 1.0, 2.0], "raw order is kept");
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(Summary::of(&[5.0]).unwrap().median, 5.0);
    }

    #[test]
    fn no_summary_of_nothing_or_nan() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratio_is_subject_over_baseline() {
        assert_eq!(ratio(2.0, 3.0), Some(1.5));
        assert_eq!(ratio(4.0, 2.0), Some(0.5));
        assert_eq!(ratio(0.0, 3.0), None);
        assert_eq!(ratio(1.0, f64::INFINITY), None);
    }

    #[test]
    fn formats_by_magnitude() {
        assert_eq!(fmt_value(12345.6), "12346");
        assert_eq!(fmt_value(123.46), "123.5");
        assert_eq!(fmt_value(12.346), "12.35");
        assert_eq!(fmt_value(1.2344), "1.234");
        assert_eq!(fmt_value(0.0), "0.000");
    }
}
