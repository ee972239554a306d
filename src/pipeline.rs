//! Frame → faces → embeddings: the detector at a chosen input size with InsightFace's
//! letterbox and decoding, and the recogniser on ArcFace-aligned crops. Data flows one way;
//! nothing here reaches back into the camera or the unlock policy.

use std::path::Path;

use image::RgbImage;

use crate::align::norm_crop;
use crate::detect::{decode, nms, Face, DEFAULT_NMS_IOU, DEFAULT_SCORE_THRESHOLD};
use crate::error::{Error, Result};
use crate::models::mobilefacenet::{l2_normalise, MobileFaceNet};
use crate::models::scrfd::Scrfd;
use crate::models::LoadOptions;
use crate::preprocess::{fill_nhwc, letterbox};

/// SCRFD with its input size and thresholds.
pub struct Detector {
    model: Scrfd,
    width: u32,
    height: u32,
    pub score_threshold: f32,
    pub nms_iou: f32,
}

/// Parses `WxH` (e.g. `640x640`), both multiples of 32.
pub fn parse_size(s: &str) -> Result<(u32, u32)> {
    let bad = || {
        Error::Msg(format!(
            "size `{s}`: expected WxH with multiples of 32, e.g. 640x640"
        ))
    };
    let (w, h) = s
        .to_ascii_lowercase()
        .split_once('x')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(bad)?;
    let (w, h): (u32, u32) = (
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    );
    if w == 0 || h == 0 || w % 32 != 0 || h % 32 != 0 || w > 8192 || h > 8192 {
        return Err(bad());
    }
    Ok((w, h))
}

impl Detector {
    /// Loads a detector model; `size` is the network input (`None`: the export size, or
    /// 640×640 for dynamic exports).
    pub fn load(path: &Path, size: Option<(u32, u32)>) -> Result<Self> {
        Ok(Self::new(Scrfd::load(path)?, size))
    }

    /// Loads with a chosen executor, thread count and precision.
    pub fn load_with(path: &Path, size: Option<(u32, u32)>, opts: &LoadOptions) -> Result<Self> {
        Ok(Self::new(Scrfd::load_with(path, opts)?, size))
    }

    pub fn new(model: Scrfd, size: Option<(u32, u32)>) -> Self {
        let (width, height) = size
            .or_else(|| {
                model
                    .config()
                    .export_size
                    .map(|[w, h]| (w as u32, h as u32))
            })
            .unwrap_or((640, 640));
        Detector {
            model,
            width,
            height,
            score_threshold: DEFAULT_SCORE_THRESHOLD,
            nms_iou: DEFAULT_NMS_IOU,
        }
    }

    pub fn input_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Half the input size, rounded down to multiples of 32, if that is at least 160×160.
    pub fn half_size(&self) -> Option<(u32, u32)> {
        let half = |v: u32| v / 2 / 32 * 32;
        let (w, h) = (half(self.width), half(self.height));
        (w >= 160 && h >= 160).then_some((w, h))
    }

    pub fn model(&self) -> &Scrfd {
        &self.model
    }

    /// Faces in `img`, best first, in image coordinates.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Face>> {
        self.detect_at(img, (self.width, self.height))
    }

    /// Faces in `img` with the network run at `width`×`height` (multiples of 32) instead of
    /// the configured size (the engine re-plans its buffers when the size changes).
    pub fn detect_at(&self, img: &RgbImage, (width, height): (u32, u32)) -> Result<Vec<Face>> {
        let (canvas, lb) = letterbox(img, width, height);
        let norm = self.model.norm();
        let mut levels = Vec::new();
        self.model.forward_nhwc(
            height as usize,
            width as usize,
            &mut |dst| fill_nhwc(&canvas, norm, dst),
            &mut levels,
        )?;
        let faces = decode(&levels, self.score_threshold, lb.scale);
        Ok(nms(faces, self.nms_iou))
    }
}

/// MobileFaceNet on aligned crops.
pub struct Embedder {
    model: MobileFaceNet,
}

impl Embedder {
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Embedder {
            model: MobileFaceNet::load(path)?,
        })
    }

    /// Loads with a chosen executor, thread count and precision.
    pub fn load_with(path: &Path, opts: &LoadOptions) -> Result<Self> {
        Ok(Embedder {
            model: MobileFaceNet::load_with(path, opts)?,
        })
    }

    pub fn new(model: MobileFaceNet) -> Self {
        Embedder { model }
    }

    pub fn model(&self) -> &MobileFaceNet {
        &self.model
    }

    pub fn dim(&self) -> usize {
        self.model.dim()
    }

    /// The L2-normalised embedding of an already aligned crop.
    pub fn embed_crop(&self, crop: &RgbImage) -> Result<Vec<f32>> {
        let s = self.model.input_size() as u32;
        if (crop.width(), crop.height()) != (s, s) {
            return Err(Error::Shape {
                what: "aligned crop".into(),
                expected: format!("{s}x{s}"),
                got: format!("{}x{}", crop.width(), crop.height()),
            });
        }
        let norm = self.model.norm();
        let mut e = Vec::with_capacity(self.model.dim());
        self.model
            .forward_nhwc(&mut |dst| fill_nhwc(crop, norm, dst), &mut e)?;
        check_embedding(&e)?;
        l2_normalise(&mut e);
        Ok(e)
    }

    /// Aligns the face with keypoints `kps` and embeds it.
    pub fn embed(&self, img: &RgbImage, kps: &[[f32; 2]; 5]) -> Result<Vec<f32>> {
        let crop = norm_crop(img, kps, self.model.input_size() as u32);
        self.embed_crop(&crop)
    }

    /// [`Embedder::embed`], with the face also aligned to `side × side` pixels: the crop
    /// that was embedded when the recogniser takes that size (no second alignment).
    pub fn embed_with_crop(
        &self,
        img: &RgbImage,
        kps: &[[f32; 2]; 5],
        side: u32,
    ) -> Result<(Vec<f32>, RgbImage)> {
        let crop = norm_crop(img, kps, self.model.input_size() as u32);
        let e = self.embed_crop(&crop)?;
        if crop.width() == side {
            Ok((e, crop))
        } else {
            Ok((e, norm_crop(img, kps, side)))
        }
    }
}

/// Smallest norm of a raw embedding that still has a direction: the recogniser's real
/// embeddings have norms of order 1 to 100, so anything this small means a broken model
/// (or an all-zero layer), never a face.
pub const MIN_EMBEDDING_NORM: f32 = 1e-4;

/// A raw embedding must be finite with a norm of at least [`MIN_EMBEDDING_NORM`]: a NaN
/// embedding would compare as "no match" or, normalised, as anything at all, and a zero one
/// has no direction. Either means a corrupt recogniser; it is an error, never a template or
/// a match.
pub fn check_embedding(e: &[f32]) -> Result<()> {
    if let Some(i) = e.iter().position(|x| !x.is_finite()) {
        return Err(Error::Msg(format!(
            "the recogniser produced a non-finite embedding (value {i} is {}): the model file is broken",
            e[i]
        )));
    }
    let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(norm.is_finite() && norm >= MIN_EMBEDDING_NORM) {
        return Err(Error::Msg(format!(
            "the recogniser produced an embedding of norm {norm:e} (under {MIN_EMBEDDING_NORM:e}): the model file is broken"
        )));
    }
    Ok(())
}

/// The face closest to the image centre (how `verify` picks the subject of a photo).
pub fn most_central(faces: &[Face], width: u32, height: u32) -> Option<&Face> {
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    faces.iter().min_by(|a, b| {
        let d = |f: &Face| {
            let c = f.centre();
            (c[0] - cx).powi(2) + (c[1] - cy).powi(2)
        };
        d(a).total_cmp(&d(b))
    })
}

/// The largest face (how the unlock loop picks the person at the door).
pub fn largest(faces: &[Face]) -> Option<&Face> {
    faces.iter().max_by(|a, b| a.area().total_cmp(&b.area()))
}

/// A detector and a recogniser together.
pub struct Pipeline {
    pub detector: Detector,
    pub embedder: Embedder,
}

/// A face with its embedding.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbeddedFace {
    #[serde(flatten)]
    pub face: Face,
    pub embedding: Vec<f32>,
}

impl Pipeline {
    /// Detects every face and embeds each that has keypoints.
    pub fn embed_all(&self, img: &RgbImage) -> Result<Vec<EmbeddedFace>> {
        let faces = self.detector.detect(img)?;
        faces
            .into_iter()
            .filter_map(|f| f.kps.map(|k| (f, k)))
            .map(|(face, kps)| {
                let embedding = self.embedder.embed(img, &kps)?;
                Ok(EmbeddedFace { face, embedding })
            })
            .collect()
    }
}

/// The embedding of one image's central face: `None` when it has no face.
pub type CentralEmbedding = Result<Option<Vec<f32>>>;

impl Pipeline {
    /// The embedding of the face closest to the centre of each image (`Ok(None)` when an
    /// image has no face, also at half the detector size), computed on `threads` worker threads; `progress` is called with
    /// the number of images done so far.
    pub fn embed_central_faces(
        &self,
        paths: &[std::path::PathBuf],
        threads: usize,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Vec<CentralEmbedding> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<std::sync::Mutex<Option<CentralEmbedding>>> =
            paths.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= paths.len() {
                        break;
                    }
                    let r = (|| {
                        let img = crate::image_io::load_rgb(&paths[i])?;
                        let mut faces = self.detector.detect(&img)?;
                        if faces.is_empty() {
                            // Letterboxing a small photo (LFW: 250×250) into a large input
                            // magnifies its face past what SCRFD was trained on; before
                            // giving up, look again at half the input size.
                            if let Some(half) = self.detector.half_size() {
                                faces = self.detector.detect_at(&img, half)?;
                            }
                        }
                        match most_central(&faces, img.width(), img.height()).and_then(|f| f.kps) {
                            Some(kps) => Ok(Some(self.embedder.embed(&img, &kps)?)),
                            None => Ok(None),
                        }
                    })();
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                    progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
                });
            }
        });
        results
            .into_iter()
            .map(|m| {
                m.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every image is processed")
            })
            .collect()
    }
}
