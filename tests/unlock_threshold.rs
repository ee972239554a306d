//! Storing a measured match threshold in a converted recogniser file, and the pieces of the
//! threshold measurement that run quickly (the long run over all photos is a CLI job:
//! `facegate threshold`, never a test).

mod common;

use facegate::format::{ModelConfig, ModelFile};
use facegate::unlock::app::load_models;
use facegate::unlock::threshold::{list_identity_folders, measure, subset, write_into_model};

#[test]
fn write_into_stores_the_threshold_and_refuses_a_detector() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec.safetensors");
    std::fs::copy(common::model("mobilefacenet_512"), &rec).unwrap();
    let before = ModelFile::read(&rec).unwrap();
    write_into_model(&rec, 0.4321).unwrap();
    let after = ModelFile::read(&rec).unwrap();
    match &after.config {
        ModelConfig::MobileFaceNet(c) => assert_eq!(c.match_threshold, Some(0.4321)),
        other => panic!("{}", other.family()),
    }
    // Only the threshold changed.
    assert_eq!(after.tensors, before.tensors);
    assert_eq!(after.source, before.source);
    let det = dir.path().join("det.safetensors");
    std::fs::copy(common::model("det_500m"), &det).unwrap();
    let e = write_into_model(&det, 0.4).unwrap_err().to_string();
    assert!(e.contains("scrfd"), "{e}");
    assert!(write_into_model(&rec, 1.5).is_err());
    // The loader reports the stored threshold.
    let m = load_models(
        &common::model("det_500m"),
        &rec,
        (320, 320),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(m.model_threshold, Some(0.4321));
}

#[test]
fn measurement_on_a_few_identities_separates_genuine_from_impostor() {
    let lfw = common::shared().join("data/faces/lfw");
    let all = list_identity_folders(&lfw, "lfw").unwrap();
    assert!(all.len() > 7000, "{}", all.len());
    assert!(all.iter().all(|i| i.identity.starts_with("lfw/")));
    // About 24 images, whole identities.
    let few = subset(all, Some(24));
    let m = load_models(
        &common::model("det_500m"),
        &common::model("mobilefacenet_512"),
        (320, 320),
        &Default::default(),
    )
    .unwrap();
    let r = measure(&m.pipeline, &few, 1e-5, &mut |_, _| {}).unwrap();
    println!("{r:?}");
    assert_eq!(r.images, few.len());
    assert!(r.embedded + r.skipped_no_face == r.images);
    assert!(r.impostor_pairs > 0 && r.threshold > -1.0 && r.threshold <= 1.01);
    assert!(r.genuine_pairs > 0);
    // Most same-person pairs score above the highest different-person pair.
    assert!(r.frr < 0.5, "{}", r.frr);
}
