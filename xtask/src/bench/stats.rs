//! Medians and spreads over rounds, and their text.

/// The median and the range of one quantity over the rounds.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Spread { median, min: v[0], max: v[n - 1] })
    }

    /// "118.2 (112.0–121.5)" with `unit` after the median.
    pub fn show(&self, unit: &str) -> String {
        if self.min == self.max {
            return format!("{}{unit}", num(self.median));
        }
        format!("{}{unit} ({}–{})", num(self.median), num(self.min), num(self.max))
    }
}

/// The median and range of `values` with `unit`, "–" for none.
pub fn show(values: &[f64], unit: &str) -> String {
    Spread::of(values).map_or_else(|| "–".into(), |s| s.show(unit))
}

/// The median and range of `values` with their signs: "+350 ns (+300…+420)".
pub fn signed(values: &[f64], unit: &str) -> String {
    let sign = |x: f64| format!("{}{}", if x >= 0.0 { "+" } else { "" }, num(x));
    match Spread::of(values) {
        None => "–".into(),
        Some(s) if s.min == s.max => format!("{}{unit}", sign(s.median)),
        Some(s) => format!("{}{unit} ({}…{})", sign(s.median), sign(s.min), sign(s.max)),
    }
}

/// Per-round differences `with[i] - without[i]`.
pub fn differences(without: &[f64], with: &[f64]) -> Vec<f64> {
    without.iter().zip(with).map(|(a, b)| b - a).collect()
}

/// "118", "11.8", "1.18": three significant digits, no exponent.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Per-round ratios `with[i] / without[i] - 1` (rounds pair up, so drift over
/// the run cancels), as "+3.1% (-1.0%…+6.2%)".
pub fn change(without: &[f64], with: &[f64]) -> String {
    let ratios: Vec<f64> = without.iter().zip(with).map(|(a, b)| (b / a - 1.0) * 100.0).collect();
    match Spread::of(&ratios) {
        None => "–".into(),
        Some(s) if ratios.len() == 1 => pct(s.median),
        Some(s) => format!("{} ({}…{})", pct(s.median), pct(s.min), pct(s.max)),
    }
}

fn pct(p: f64) -> String {
    format!("{}{p:.1}%", if p >= 0.0 { "+" } else { "" })
}

/// Ratio of medians of per-round ratios, as "4.6×".
pub fn times(without: &[f64], with: &[f64]) -> String {
    let ratios: Vec<f64> = without.iter().zip(with).map(|(a, b)| b / a).collect();
    Spread::of(&ratios).map(|s| format!("{:.2}×", s.median)).unwrap_or_else(|| "–".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ranges_and_changes() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert_eq!(s.show(" µs"), "2.50 µs (1.00–10.0)");
        assert!(Spread::of(&[]).is_none());
        assert_eq!(change(&[100.0, 200.0, 100.0], &[103.0, 202.0, 110.0]), "+3.0% (+1.0%…+10.0%)");
        assert_eq!(times(&[2.0], &[9.2]), "4.60×");
        assert_eq!(num(1234.4), "1234");
        assert_eq!(signed(&differences(&[200.0, 210.0], &[550.0, 520.0]), " ns"), "+330 ns (+310…+350)");
        assert_eq!(show(&[], " µs"), "–");
    }
}
