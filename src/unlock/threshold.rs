//! Measuring the match threshold a lock should use: the cosine score at which the false-accept
//! rate over ALL cross-identity pairs of a labelled photo set reaches a target (1e-5 by
//! default), and the false-reject rate over all same-identity pairs at that score.
//!
//! Why it is shaped so: a door lock's error that matters is a stranger getting in, so the
//! threshold is set from the impostor distribution's far tail, not from the best-accuracy
//! point of a verification benchmark. 1e-5 needs far more impostor pairs than the 3,000 of
//! LFW's `pairs.txt`, so every cross-identity pair of every photo is compared
//! ([`crate::eval::verification::far_threshold_all_impostors`]). Identities are the photos'
//! folder names, prefixed with the data set (`lfw/…`, `celeba/…`) so two sets never share a
//! label by accident. Each photo contributes the face closest to its centre (how `verify`
//! picks its subject); a photo without a face is skipped and counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::eval::verification::far_threshold_all_impostors;
use crate::format::{ModelConfig, ModelFile};
use crate::image_io::decode_rgb;
use crate::pipeline::{most_central, Pipeline};
use crate::unlock::embed_cache::{photo_digest, EmbedCache, Outcome};

/// One photo and its identity label.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImage {
    pub path: PathBuf,
    pub identity: String,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// Every image in the sub-folders of `root`, labelled `prefix/<folder>`, sorted by path.
pub fn list_identity_folders(root: &Path, prefix: &str) -> Result<Vec<LabelledImage>> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .map_err(|e| Error::io(&d, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|path| LabelledImage {
            path,
            identity: format!("{prefix}/{name}"),
        }));
    }
    if out.is_empty() {
        return Err(Error::Msg(format!(
            "{}: no images in identity sub-folders",
            root.display()
        )));
    }
    Ok(out)
}

/// Keeps every `k`-th identity so that about `limit` images remain (whole identities, so the
/// genuine pairs survive); `None` keeps all.
pub fn subset(images: Vec<LabelledImage>, limit: Option<usize>) -> Vec<LabelledImage> {
    let Some(limit) = limit.filter(|&l| l < images.len()) else {
        return images;
    };
    let mut ids: Vec<&str> = images.iter().map(|i| i.identity.as_str()).collect();
    ids.dedup();
    let step = images.len().div_ceil(limit.max(1));
    let keep: std::collections::HashSet<String> =
        ids.iter().step_by(step).map(|s| s.to_string()).collect();
    images
        .into_iter()
        .filter(|i| keep.contains(&i.identity))
        .collect()
}

/// The measurement, as printed and written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdReport {
    pub far_target: f64,
    /// The cosine score: accept when `score >= threshold`.
    pub threshold: f32,
    /// FAR actually reached at `threshold`.
    pub far: f64,
    pub impostor_pairs: u64,
    pub genuine_pairs: u64,
    /// Fraction of genuine pairs rejected at `threshold`.
    pub frr: f64,
    pub images: usize,
    pub embedded: usize,
    pub skipped_no_face: usize,
    pub unreadable: usize,
    pub identities: usize,
    pub detector: String,
    pub recognizer: String,
    pub det_size: [u32; 2],
    pub seconds: f64,
}

/// The embeddings of a photo set, one per photo with a face.
#[derive(Debug, Clone, Default)]
pub struct Embedded {
    pub embeddings: Vec<Vec<f32>>,
    /// Identity number of each embedding.
    pub labels: Vec<u32>,
    /// Index of each embedding's photo in the image list it was made from (photos without a
    /// face or unreadable have none), so a later pass can go back to the photo.
    pub images: Vec<usize>,
    pub skipped_no_face: usize,
    pub unreadable: usize,
    pub identities: usize,
    /// How many photos came from the cache.
    pub cached: usize,
}

/// Embeds every image (the face closest to its centre), taking what `cache` holds for the
/// same photo bytes and adding what it lacks. `progress(done, total, cached)` is called after
/// each image.
pub fn embed_all(
    pipeline: &Pipeline,
    images: &[LabelledImage],
    mut cache: Option<&mut EmbedCache>,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<Embedded> {
    let mut out = Embedded::default();
    let mut ids: HashMap<&str, u32> = HashMap::new();
    for (i, im) in images.iter().enumerate() {
        progress(i, images.len(), out.cached);
        let bytes = match std::fs::read(&im.path) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("{}", Error::io(&im.path, e));
                out.unreadable += 1;
                continue;
            }
        };
        let name = im.path.to_string_lossy();
        let digest = photo_digest(&bytes);
        let hit = cache
            .as_deref()
            .and_then(|c| c.get(&name, &digest))
            .cloned();
        let outcome = match hit {
            Some(o) => {
                out.cached += 1;
                o
            }
            None => {
                let rgb = match decode_rgb(&bytes, &im.path) {
                    Ok(r) => r,
                    Err(e) => {
                        log::warn!("{e}");
                        out.unreadable += 1;
                        continue;
                    }
                };
                let faces = pipeline.detector.detect(&rgb)?;
                let o = match most_central(&faces, rgb.width(), rgb.height()).and_then(|f| f.kps) {
                    Some(kps) => Outcome::Embedded(pipeline.embedder.embed(&rgb, &kps)?),
                    None => Outcome::NoFace,
                };
                if let Some(c) = cache.as_deref_mut() {
                    c.insert(&name, digest, o.clone())?;
                }
                o
            }
        };
        match outcome {
            Outcome::Embedded(e) => {
                out.embeddings.push(e);
                out.images.push(i);
                let next = ids.len() as u32;
                out.labels
                    .push(*ids.entry(im.identity.as_str()).or_insert(next));
            }
            Outcome::NoFace => out.skipped_no_face += 1,
        }
    }
    progress(images.len(), images.len(), out.cached);
    out.identities = ids.len();
    Ok(out)
}

/// Embeds every image (the most central face), then finds the FAR threshold over all pairs.
/// `progress(done, total)` is called after each image.
pub fn measure(
    pipeline: &Pipeline,
    images: &[LabelledImage],
    far: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ThresholdReport> {
    measure_cached(pipeline, images, far, None, &mut |i, n, _| progress(i, n))
}

/// [`measure`] through an embedding cache (see [`embed_all`]).
pub fn measure_cached(
    pipeline: &Pipeline,
    images: &[LabelledImage],
    far: f64,
    cache: Option<&mut EmbedCache>,
    progress: &mut dyn FnMut(usize, usize, usize),
) -> Result<ThresholdReport> {
    let start = Instant::now();
    let e = embed_all(pipeline, images, cache, progress)?;
    let r = far_threshold_all_impostors(&e.embeddings, &e.labels, far)?;
    let (w, h) = pipeline.detector.input_size();
    Ok(ThresholdReport {
        far_target: far,
        threshold: r.threshold,
        far: r.far,
        impostor_pairs: r.impostor_count,
        genuine_pairs: r.genuine_count,
        frr: r.frr,
        images: images.len(),
        embedded: e.embeddings.len(),
        skipped_no_face: e.skipped_no_face,
        unreadable: e.unreadable,
        identities: e.identities,
        detector: String::new(),
        recognizer: String::new(),
        det_size: [w, h],
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Stores `threshold` as the recogniser's `match_threshold` in a converted model file,
/// rewriting it atomically. Refuses files that are not a MobileFaceNet.
pub fn write_into_model(path: &Path, threshold: f32) -> Result<()> {
    if !(threshold.is_finite() && threshold > 0.0 && threshold < 1.0) {
        return Err(Error::Msg(format!(
            "match threshold {threshold} is not in (0, 1)"
        )));
    }
    let mut file = ModelFile::read(path)?;
    match &mut file.config {
        ModelConfig::MobileFaceNet(c) => c.match_threshold = Some(threshold),
        other => {
            return Err(Error::Model {
                path: path.to_path_buf(),
                reason: format!(
                    "is a {} model; the match threshold belongs to a recogniser",
                    other.family()
                ),
            })
        }
    }
    file.write(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_keeps_whole_identities() {
        let mut v = Vec::new();
        for id in 0..10 {
            for k in 0..3 {
                v.push(LabelledImage {
                    path: PathBuf::from(format!("{id}/{k}.jpg")),
                    identity: format!("x/{id}"),
                });
            }
        }
        let s = subset(v.clone(), Some(9));
        assert!(s.len() >= 9 && s.len().is_multiple_of(3), "{}", s.len());
        assert_eq!(subset(v.clone(), None).len(), 30);
        assert_eq!(subset(v, Some(100)).len(), 30);
    }
}
