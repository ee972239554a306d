//! ISO/IEC 30107-3 figures of a liveness model on labelled photos: BPCER (live users
//! rejected), APCER (attacks accepted) per attack type and pooled, the ROC AUC, and the
//! threshold that keeps BPCER at 5 %. Pure functions over scores, so that they can be checked
//! against hand-computed values.

use serde::Serialize;

/// One attack type's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackFigures {
    /// The attack class the model names (`print`, `replay`, `spoof`).
    pub kind: String,
    pub attacks: usize,
    pub accepted: usize,
    pub apcer: f64,
}

/// Figures at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub threshold: f32,
    pub live: usize,
    pub rejected: usize,
    pub bpcer: f64,
    pub attacks: usize,
    pub accepted: usize,
    /// Attacks accepted over all attacks.
    pub apcer: f64,
    /// The worst attack type's APCER (what ISO/IEC 30107-3 reports).
    pub apcer_worst_type: f64,
    pub per_type: Vec<AttackFigures>,
}

/// A scored attack photo: its live score and the attack class the model finds most likely
/// (index into the class names, ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attack {
    pub live: f32,
    pub kind: usize,
}

/// The most probable attack class of `probs` (class 0 is live, so it is never returned;
/// a two-class model always says 1).
pub fn attack_kind(probs: &[f32]) -> usize {
    (1..probs.len())
        .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
        .unwrap_or(1)
}

/// BPCER and APCER at `threshold` (a face is accepted as live when its score ≥ threshold).
pub fn figures(live: &[f32], attacks: &[Attack], classes: &[String], threshold: f32) -> Figures {
    let rejected = live.iter().filter(|&&s| s < threshold).count();
    let accepted = attacks.iter().filter(|a| a.live >= threshold).count();
    let ratio = |k: usize, n: usize| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let per_type: Vec<AttackFigures> = (1..classes.len())
        .map(|k| {
            let of: Vec<&Attack> = attacks.iter().filter(|a| a.kind == k).collect();
            let acc = of.iter().filter(|a| a.live >= threshold).count();
            AttackFigures {
                kind: classes[k].clone(),
                attacks: of.len(),
                accepted: acc,
                apcer: ratio(acc, of.len()),
            }
        })
        .collect();
    Figures {
        threshold,
        live: live.len(),
        rejected,
        bpcer: ratio(rejected, live.len()),
        attacks: attacks.len(),
        accepted,
        apcer: ratio(accepted, attacks.len()),
        apcer_worst_type: per_type.iter().map(|t| t.apcer).fold(0.0, f64::max),
        per_type,
    }
}

/// Area under the ROC curve: the chance that a live photo scores above an attack (ties
/// count half). `None` without both kinds.
pub fn auc(live: &[f32], attacks: &[f32]) -> Option<f64> {
    if live.is_empty() || attacks.is_empty() {
        return None;
    }
    let mut wins = 0f64;
    for &l in live {
        for &a in attacks {
            wins += if l > a {
                1.0
            } else if l == a {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (live.len() * attacks.len()) as f64)
}

/// The highest threshold whose BPCER is at most `bpcer` (e.g. 0.05): the live scores sorted,
/// the `floor(bpcer · n)`-th smallest. `None` without live scores.
pub fn threshold_at_bpcer(live: &[f32], bpcer: f64) -> Option<f32> {
    let mut s = live.to_vec();
    s.sort_by(f32::total_cmp);
    let k = (bpcer * s.len() as f64 + 1e-9).floor() as usize;
    s.get(k.min(s.len().checked_sub(1)?)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["live", "print", "replay"].map(String::from).to_vec()
    }

    #[test]
    fn figures_by_hand() {
        let live = [0.9, 0.4, 0.6, 0.5];
        let attacks = [
            Attack { live: 0.7, kind: 1 },
            Attack { live: 0.1, kind: 1 },
            Attack { live: 0.2, kind: 2 },
        ];
        let f = figures(&live, &attacks, &names(), 0.5);
        // 0.4 is the one live score below 0.5 (0.5 itself is accepted).
        assert_eq!((f.rejected, f.live), (1, 4));
        assert!((f.bpcer - 0.25).abs() < 1e-12);
        // One print of two accepted, no replay.
        assert_eq!((f.accepted, f.attacks), (1, 3));
        assert_eq!(f.per_type[0].kind, "print");
        assert!((f.per_type[0].apcer - 0.5).abs() < 1e-12);
        assert_eq!(f.per_type[1].apcer, 0.0);
        assert!((f.apcer_worst_type - 0.5).abs() < 1e-12);
    }

    #[test]
    fn auc_and_threshold_by_hand() {
        // Live 0.9, 0.6 against attacks 0.7, 0.1: 0.9 beats both, 0.6 beats one → 3/4.
        assert_eq!(auc(&[0.9, 0.6], &[0.7, 0.1]), Some(0.75));
        assert_eq!(auc(&[0.5], &[0.5]), Some(0.5));
        assert_eq!(auc(&[], &[0.5]), None);
        // 20 live scores 0.05, 0.10, ... 1.00: 5 % of 20 is one rejection → the 2nd smallest.
        let live: Vec<f32> = (1..=20).map(|i| i as f32 * 0.05).collect();
        assert_eq!(threshold_at_bpcer(&live, 0.05), Some(0.1));
        assert_eq!(figures(&live, &[], &names(), 0.1).rejected, 1);
        // Fewer than 20: no rejection allowed → the smallest.
        assert_eq!(threshold_at_bpcer(&[0.3, 0.8], 0.05), Some(0.3));
        assert_eq!(threshold_at_bpcer(&[], 0.05), None);
    }

    #[test]
    fn attack_kind_skips_live() {
        assert_eq!(attack_kind(&[0.9, 0.02, 0.08]), 2);
        assert_eq!(attack_kind(&[0.9, 0.1]), 1);
    }
}
