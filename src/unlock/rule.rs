//! How a person's templates score a face: the match rule, shared by the template store (what
//! the lock does) and `attempts` (what the lock's errors are measured with), so the figure a
//! board's rule was chosen by is computed by the very code the door runs.
//!
//! A person enrolled from E frames has E unit templates; a probe (the face at the door, unit
//! as well) has one cosine with each. The rule turns those E cosines into the person's score,
//! which the policy compares with the threshold:
//! * `best`: the best template's cosine (the store's only rule before boards could choose);
//! * `mean`: the cosine with the mean of the templates, normalised. Averaging frames of one
//!   person cancels part of what differs frame to frame, and a look-alike must be close to all
//!   of them at once; measured on LFW + CelebA-wild it halves impostor unlocks at about the
//!   same false-reject rate (README "Models", attempt-level errors);
//! * `top2`: the mean of the two best cosines.
//!
//! The score is accumulated one cosine at a time ([`Scorer`]) so the store matches without a
//! buffer per frame; [`rule_score`] is the same on a slice, for `attempts`' score tables.

use serde::{Deserialize, Serialize};

/// How a person's E templates score a probe (`[match].rule` of a board profile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// The best template's cosine. The default, so that a profile without `[match].rule`
    /// matches as the store always did.
    #[default]
    Best,
    /// The cosine with the mean of the templates, L2-normalised (so the threshold, a cosine
    /// between unit vectors, means the same as for a single template).
    Mean,
    /// The mean of the two best templates' cosines (the best one when E = 1).
    Top2,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Best, Rule::Mean, Rule::Top2];
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rule::Best => "best",
            Rule::Mean => "mean",
            Rule::Top2 => "top2",
        })
    }
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "best" => Ok(Rule::Best),
            "mean" => Ok(Rule::Mean),
            "top2" => Ok(Rule::Top2),
            _ => Err(format!("match rule {s:?}: best, mean or top2")),
        }
    }
}

/// Below this length of the mean of a person's unit templates, the mean has no direction
/// worth the name (templates that nearly cancel out, which frames of one face never do: as
/// long as no two of E unit templates have a negative cosine, the mean is at least 1/√E long,
/// 0.03 for the store's 1000 templates at most). Dividing by such a length would turn rounding noise into any
/// score at all, above the threshold included, so under `mean` such a person scores -1 (the
/// lowest cosine): they can never be matched, and they cannot turn every frame into a NaN
/// error for the other people either.
pub const MIN_MEAN_NORM: f32 = 1e-3;

/// The length of the mean of `count` unit templates whose sum is `sum` (the `mean_norm` of
/// [`rule_score`]).
pub fn mean_norm(sum: &[f32], count: usize) -> f32 {
    sum.iter().map(|v| v * v).sum::<f32>().sqrt() / count as f32
}

/// A person's score under a rule, fed one template cosine at a time (no buffer).
#[derive(Debug, Clone, Copy)]
pub struct Scorer {
    rule: Rule,
    count: usize,
    sum: f32,
    /// The best and second-best cosines so far.
    first: f32,
    second: f32,
}

impl Scorer {
    pub fn new(rule: Rule) -> Self {
        Scorer {
            rule,
            count: 0,
            sum: 0.0,
            first: f32::NEG_INFINITY,
            second: f32::NEG_INFINITY,
        }
    }

    /// Adds the cosine with the next template.
    pub fn push(&mut self, c: f32) {
        self.count += 1;
        self.sum += c;
        if c > self.first {
            (self.first, self.second) = (c, self.first);
        } else if c > self.second {
            self.second = c;
        }
    }

    /// The score; `mean_norm` is the length of the mean of the (unit) templates: the cosine
    /// with the normalised mean is the mean cosine divided by it, so every rule comes from
    /// the same cosines (see [`MIN_MEAN_NORM`] for a mean too short to divide by).
    pub fn finish(&self, mean_norm: f32) -> f32 {
        match self.rule {
            Rule::Best => self.first,
            // Written so that a NaN length falls here too.
            Rule::Mean if mean_norm.is_nan() || mean_norm < MIN_MEAN_NORM => -1.0,
            Rule::Mean => self.sum / self.count as f32 / mean_norm,
            Rule::Top2 if self.count < 2 => self.first,
            Rule::Top2 => (self.first + self.second) / 2.0,
        }
    }
}

/// A person's score under `rule` from the cosines with each of their templates (see
/// [`Scorer::finish`] for `mean_norm`).
pub fn rule_score(rule: Rule, cosines: &[f32], mean_norm: f32) -> f32 {
    let mut s = Scorer::new(rule);
    for &c in cosines {
        s.push(c);
    }
    s.finish(mean_norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_by_hand() {
        let s = [0.2, 0.8, 0.5];
        assert_eq!(rule_score(Rule::Best, &s, 1.0), 0.8);
        assert!((rule_score(Rule::Top2, &s, 1.0) - 0.65).abs() < 1e-6);
        // mean cosine 0.5, mean template of length 0.5 -> cosine with its unit vector 1.0
        assert!((rule_score(Rule::Mean, &s, 0.5) - 1.0).abs() < 1e-6);
        // One template: every rule is that template's cosine.
        for r in Rule::ALL {
            assert_eq!(rule_score(r, &[0.3], 1.0), 0.3, "{r}");
        }
        // Top-2 with the best twice.
        assert_eq!(rule_score(Rule::Top2, &[0.7, 0.1, 0.7], 1.0), 0.7);
        // Top-2 when the best comes last: (0.9 + 0.4) / 2.
        assert!((rule_score(Rule::Top2, &[0.4, 0.1, 0.9], 1.0) - 0.65).abs() < 1e-6);
        assert_eq!("top2".parse::<Rule>().unwrap(), Rule::Top2);
        assert!("max".parse::<Rule>().is_err());
        for r in Rule::ALL {
            assert_eq!(r.to_string().parse::<Rule>().unwrap(), r);
        }
        assert_eq!(Rule::default(), Rule::Best);
    }

    #[test]
    fn a_mean_without_direction_never_matches() {
        // Templates t and -t: mean 0. Without the floor 0 / 0 would be NaN, and a tiny
        // non-zero length would blow rounding noise up to any score.
        assert_eq!(rule_score(Rule::Mean, &[0.9, -0.9], 0.0), -1.0);
        assert_eq!(rule_score(Rule::Mean, &[0.9, -0.9], 1e-4), -1.0);
        assert_eq!(rule_score(Rule::Mean, &[0.9, -0.9], f32::NAN), -1.0);
        // The other rules do not use the mean.
        assert_eq!(rule_score(Rule::Best, &[0.9, -0.9], 0.0), 0.9);
        // At the floor the division is made: 0.001 / 0.001.
        let s = rule_score(Rule::Mean, &[0.002, 0.0], MIN_MEAN_NORM);
        assert!((s - 1.0).abs() < 1e-4, "{s}");
    }

    #[test]
    fn mean_norm_of_unit_templates() {
        // e0 + e1 = (1, 1): length √2, mean of 2 -> √2 / 2.
        let n = mean_norm(&[1.0, 1.0, 0.0], 2);
        assert!((n - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7, "{n}");
        assert_eq!(mean_norm(&[0.6, 0.8], 1), 1.0);
    }
}
