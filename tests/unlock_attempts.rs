//! `facegate attempts`: attempt-level FRR and FAR through the real K-of-N policy. A tiny set
//! of embeddings whose outcomes are worked out by hand below, for each match rule and K/N,
//! and one run on a few real LFW identities (the whole data set is a CLI job, never a test).

mod common;

use std::time::Duration;

use facegate::unlock::attempts::{
    enrol, measure, parse_same_person, prepare, rule_scores, Counts, Person, PhotoSet, Rule, Setup,
};
use facegate::unlock::policy::PolicyConfig;
use facegate::unlock::session::QualityGates;
use facegate::unlock::store::TemplateStore;

const S: f32 = 0.953_939_2; // sqrt(1 - 0.3^2)

/// The hand-worked set, 5-d, one row per photo (all unit length):
///
/// | row | identity | vector                       | role                   |
/// |-----|----------|------------------------------|------------------------|
/// | 0   | A        | e0                           | enrolled (gates pass)  |
/// | 1   | A        | e1                           | enrolled (gates pass)  |
/// | 2   | A        | a1 = (0.8, 0.6, 0, 0, 0)     | probe                  |
/// | 3   | A        | a2 = (0.6, 0, 0, 0, 0.8)     | probe                  |
/// | 4   | A        | a3 = (0.36, 0.48, 0, 0, 0.8) | probe                  |
/// | 5   | B        | e2                           | enrolled               |
/// | 6   | B        | e3                           | enrolled               |
/// | 7   | B        | b1 = (0, 0, 0.6, 0.8, 0)     | probe                  |
/// | 8   | C        | c1 = (0.7, 0, 0, 0, 0.71414) | never enrolled         |
/// | 9   | C        | c2 = e4                      |                        |
/// | 10  | C        | c3 = (0, 0.3, 0, 0, 0.95394) |                        |
///
/// With E = 2, A's templates are e0, e1 (mean template length 1/√2) and B's e2, e3, so a
/// row's cosines with a person's templates are two of its coordinates. Scores for A:
///
/// | row | best | top2 | mean (sum/√2) |
/// |-----|------|------|---------------|
/// | a1  | 0.80 | 0.70 | 0.990         |
/// | a2  | 0.60 | 0.30 | 0.424         |
/// | a3  | 0.48 | 0.42 | 0.594         |
/// | c1  | 0.70 | 0.35 | 0.495         |
/// | c3  | 0.30 | 0.15 | 0.212         |
///
/// b1 scores 0.80 / 0.70 / 0.990 for B; every other row scores 0 for the other person.
fn hand_rows() -> Vec<Vec<f32>> {
    let e = |i: usize| {
        let mut v = vec![0.0; 5];
        v[i] = 1.0;
        v
    };
    vec![
        e(0),
        e(1),
        vec![0.8, 0.6, 0.0, 0.0, 0.0],
        vec![0.6, 0.0, 0.0, 0.0, 0.8],
        vec![0.36, 0.48, 0.0, 0.0, 0.8],
        e(2),
        e(3),
        vec![0.0, 0.0, 0.6, 0.8, 0.0],
        vec![0.7, 0.0, 0.0, 0.0, 0.714_142_8],
        e(4),
        vec![0.0, 0.3, 0.0, 0.0, S],
    ]
}

/// [`hand_rows`] as a photo set, and which rows passed the enrolment gates (0, 1, 5, 6).
fn hand_set() -> (PhotoSet, Vec<Option<Vec<f32>>>) {
    let rows = hand_rows();
    let identity = [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2];
    let names = vec!["A".into(), "B".into(), "C".into()];
    let set = PhotoSet::new(&rows, &identity, names).unwrap();
    // The enrolment gates passed rows 0, 1, 5, 6 only.
    let accepted = (0..rows.len())
        .map(|r| [0, 1, 5, 6].contains(&r).then(|| rows[r].clone()))
        .collect();
    (set, accepted)
}

fn setup(rule: Rule, k: usize, n: usize, gallery: usize) -> Setup {
    Setup {
        rule,
        gallery,
        policy: PolicyConfig {
            threshold: 0.55,
            k,
            n,
            ..PolicyConfig::default()
        },
        // The loop's spacing for n frames (1 s / n): well inside the 2 s window.
        interval: Duration::from_secs(1) / n as u32,
    }
}

#[test]
fn enrolment_takes_the_first_e_gate_passes_and_needs_a_probe() {
    let (set, accepted) = hand_set();
    let two = enrol(&set, &accepted, 2).unwrap();
    assert_eq!(
        two.iter()
            .map(|p| (p.identity, p.probes.clone()))
            .collect::<Vec<_>>(),
        vec![(0, vec![2, 3, 4]), (1, vec![7])]
    );
    assert_eq!(two[0].templates.len(), 2);
    // E = 1: the first pass only; the second enrolment photo becomes a probe.
    let one = enrol(&set, &accepted, 1).unwrap();
    assert_eq!(one[0].probes, vec![1, 2, 3, 4]);
    assert_eq!(one[1].probes, vec![6, 7]);
    // E = 3: nobody has three photos that passed; C never passed at all.
    assert!(enrol(&set, &accepted, 3).unwrap().is_empty());
}

/// (genuine failed, impostor unlocks) out of 4 genuine and 3 impostor attempts.
fn outcome(rule: Rule, k: usize, n: usize) -> (u64, u64) {
    let (set, accepted) = hand_set();
    let people = enrol(&set, &accepted, 2).unwrap();
    let c = measure(&set, &people, &setup(rule, k, n, 2), 1).unwrap();
    // One gallery {A, B}: A's 3 probes and B's 1 start one genuine attempt each, C's 3
    // photos one impostor attempt each.
    assert_eq!(
        (c.galleries, c.genuine_attempts, c.impostor_attempts),
        (1, 4, 3)
    );
    assert_eq!(c.genuine_wrong_user, 0);
    (c.genuine_failed, c.impostor_unlocks)
}

#[test]
fn outcomes_per_rule_and_k_of_n_by_hand() {
    // 1/1: each photo alone. best: a3 fails, c1 gets in; top2: a2 and a3 fail; mean: a2
    // fails. B's b1 passes under every rule.
    assert_eq!(outcome(Rule::Best, 1, 1), (1, 1));
    assert_eq!(outcome(Rule::Top2, 1, 1), (2, 0));
    assert_eq!(outcome(Rule::Mean, 1, 1), (1, 0));
    // 2/3: A's attempts hold a1, a2, a3 in some order; best matches a1 and a2, mean a1 and
    // a3 (2 hits: unlock), top2 only a1 (1 hit: all three fail, worse than 1/1). C's
    // attempts hold c1 once: no stranger gets in. B's b1 three times unlocks.
    assert_eq!(outcome(Rule::Best, 2, 3), (0, 0));
    assert_eq!(outcome(Rule::Top2, 2, 3), (3, 0));
    assert_eq!(outcome(Rule::Mean, 2, 3), (0, 0));
    // 3/5: A's attempts a1 a2 a3 a1 a2 / a2 a3 a1 a2 a3 / a3 a1 a2 a3 a1: best and mean reach
    // 3 hits in each, top2 at most 2 (a1 twice). C's c1 c2 c3 c1 c2 / c2 c3 c1 c2 c3 /
    // c3 c1 c2 c3 c1: at most 2 hits.
    assert_eq!(outcome(Rule::Best, 3, 5), (0, 0));
    assert_eq!(outcome(Rule::Top2, 3, 5), (3, 0));
    assert_eq!(outcome(Rule::Mean, 3, 5), (0, 0));
}

#[test]
fn galleries_of_one_leave_each_persons_own_photos_out_of_the_impostors() {
    let (set, accepted) = hand_set();
    let people = enrol(&set, &accepted, 2).unwrap();
    let c = measure(&set, &people, &setup(Rule::Best, 1, 1, 1), 1).unwrap();
    // Gallery {A}: impostors are B's 3 rows and C's 3 (c1 gets in at 0.70); gallery {B}:
    // A's 5 rows and C's 3 (all score 0 for B).
    let ex = &c.impostor_examples;
    assert_eq!(ex.len(), 1);
    assert_eq!(
        (ex[0].enrolled.as_str(), ex[0].impostor.as_str()),
        ("A", "C")
    );
    assert_eq!(ex[0].rows, vec![8]);
    assert!((ex[0].scores[0] - 0.7).abs() < 1e-6, "{:?}", ex[0].scores);
    assert_eq!(
        Counts {
            impostor_examples: Vec::new(),
            ..c.clone()
        },
        Counts {
            people: 2,
            galleries: 2,
            last_gallery: 1,
            genuine_attempts: 4,
            genuine_failed: 1,
            genuine_wrong_user: 0,
            impostor_attempts: 6 + 8,
            impostor_unlocks: 1,
            impostor_examples: Vec::new(),
        }
    );
    // The same on three threads.
    let c3 = measure(&set, &people, &setup(Rule::Best, 1, 1, 1), 3).unwrap();
    assert_eq!(c3, c);
}

#[test]
fn labels_marked_as_one_person_are_not_impostors_of_each_other() {
    let (mut set, accepted) = hand_set();
    let pairs = parse_same_person(
        "# C is A under another name\nA C\n\nB Zed # not in the set: ignored\n",
        std::path::Path::new("same.txt"),
    )
    .unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(set.set_same_person(&pairs), 1);
    let people = enrol(&set, &accepted, 2).unwrap();
    let c = measure(&set, &people, &setup(Rule::Best, 1, 1, 1), 1).unwrap();
    // Gallery {A}: only B's 3 rows are impostors now (c1 no longer unlocks as one); gallery
    // {B}: A's 5 and C's 3, as before.
    assert_eq!((c.impostor_attempts, c.impostor_unlocks), (3 + 8, 0));
    assert!(parse_same_person("A B C\n", std::path::Path::new("x")).is_err());
}

#[test]
fn a_genuine_attempt_that_opens_for_another_member_is_a_failure() {
    // A's probe is B's template itself: it unlocks, for B.
    let rows = vec![
        vec![1.0, 0.0],
        vec![0.0, 1.0],
        vec![0.0, 1.0],
        vec![0.6, 0.8],
    ];
    let set = PhotoSet::new(&rows, &[0, 0, 1, 1], vec!["A".into(), "B".into()]).unwrap();
    let people = vec![
        Person {
            identity: 0,
            templates: vec![rows[0].clone()],
            probes: vec![1],
        },
        Person {
            identity: 1,
            templates: vec![rows[2].clone()],
            probes: vec![3],
        },
    ];
    let c = measure(&set, &people, &setup(Rule::Best, 1, 1, 2), 1).unwrap();
    assert_eq!((c.genuine_attempts, c.genuine_failed), (2, 1));
    assert_eq!(c.genuine_wrong_user, 1);
}

#[test]
fn every_rule_is_what_the_template_store_matches_under_it() {
    let (set, accepted) = hand_set();
    let people = enrol(&set, &accepted, 2).unwrap();
    let mut store = TemplateStore::new("m", 5).unwrap();
    for (name, p) in ["A", "B"].iter().zip(&people) {
        store.add_templates(name, p.templates.clone()).unwrap();
    }
    for rule in Rule::ALL {
        let table = rule_scores(&set, &people, rule, 2).unwrap();
        for (r, v) in hand_rows().iter().enumerate() {
            let (user, score) = store.best_match(v, rule).unwrap().unwrap();
            let (m, s) = table.best_in(r, 0..2);
            assert_eq!(["A", "B"][m], user, "{rule} row {r}");
            assert!((s - score).abs() < 1e-6, "{rule} row {r}: {s} vs {score}");
        }
    }
}

#[test]
fn a_few_real_identities_mostly_unlock_and_strangers_do_not() {
    use facegate::unlock::threshold::list_identity_folders;
    let lfw = common::shared().join("data/faces/lfw");
    let all = list_identity_folders(&lfw, "lfw").unwrap();
    // The first 12 identities (folder order) with at least 6 photos: enough for E = 3 and a
    // few attempts each.
    let mut count = std::collections::BTreeMap::<String, usize>::new();
    for i in &all {
        *count.entry(i.identity.clone()).or_default() += 1;
    }
    let chosen: Vec<String> = count
        .into_iter()
        .filter(|(_, n)| *n >= 6)
        .map(|(id, _)| id)
        .take(12)
        .collect();
    let images: Vec<_> = all
        .into_iter()
        .filter(|i| chosen.contains(&i.identity))
        .collect();
    let models = facegate::unlock::app::load_models(
        &common::model("det_500m"),
        &common::model("mobilefacenet_512"),
        (320, 256),
        &Default::default(),
    )
    .unwrap();
    let gates = QualityGates::default();
    let p = prepare(
        &models.pipeline,
        &images,
        &gates,
        3,
        None,
        None,
        &mut |_, _, _, _| {},
    )
    .unwrap();
    assert_eq!(p.set.identities(), 12);
    // What passed the gates is the photo's own face: the embedding of the most central
    // face of the set (a passing photo has exactly one face).
    let mut passed = 0;
    for (row, t) in p.accepted.iter().enumerate() {
        if let Some(t) = t {
            passed += 1;
            assert!(common::cosine(t, p.set.row(row)) > 0.9999, "row {row}");
        }
    }
    assert_eq!(passed, p.gate_passed);
    let people = enrol(&p.set, &p.accepted, 3).unwrap();
    assert!(people.len() >= 8, "{} people", people.len());
    let setup = Setup {
        rule: Rule::Best,
        gallery: 4,
        policy: PolicyConfig {
            threshold: common::f32_match_threshold(),
            k: 3,
            n: 5,
            ..PolicyConfig::default()
        },
        interval: Duration::from_millis(200),
    };
    let c = measure(&p.set, &people, &setup, 2).unwrap();
    println!("{c:?}");
    assert!(c.genuine_attempts >= 30, "{c:?}");
    assert!(c.frr() < 0.2, "{c:?}");
    assert!(c.impostor_attempts >= 100, "{c:?}");
    assert_eq!(c.impostor_unlocks, 0, "{c:?}");
}
