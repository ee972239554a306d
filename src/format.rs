//! The model file format, read AND written here so that the converter (`quantize/`) and the
//! runtime can never drift apart: a safetensors file whose tensors carry canonical names
//! (`body.12.weight`, `head.s8.cls.bias`) and whose metadata holds a format version, the
//! architecture config (the layer program and what its outputs mean), the input
//! normalisation, the precision and the sha256 of the ONNX file it came from, and an
//! integrity digest over the whole file so that a changed byte anywhere never loads.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::{Graph, ValueId};

/// Bumped whenever the metadata or tensor conventions change incompatibly. Version 2 adds
/// mixed-precision int8 files (`float_layers`: convolutions kept in f32 inside an int8
/// model). A file is written with the lowest version that describes it, so files without
/// float layers stay version 1 and older readers keep reading them, while a mixed file is
/// refused by them with a clear version error rather than misread.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version this reader still understands (a version 1 file is a version 2 file
/// without float layers).
pub const MIN_FORMAT_VERSION: u32 = 1;
/// Metadata key of the JSON list of convolutions an int8 model keeps in f32.
const FLOAT_LAYERS_KEY: &str = "float_layers";
const CALIBRATION_KEY: &str = "calibration";
const MAGIC_KEY: &str = "format";
const MAGIC: &str = "facegate";
/// Metadata key of the file's integrity digest (see [`ModelFile::to_bytes`]).
pub const DIGEST_KEY: &str = "digest_sha256";
/// Hex digits of a sha256.
const DIGEST_HEX: usize = 64;
/// The f32 tensor of an int8 model holding one activation scale per value of the layer
/// program (value 0, the network input, first): real value = scale × int8 value.
pub const ACT_SCALES: &str = "act.scales";

/// How pixel values become network inputs: `(x - mean) / std`, channels in RGB order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputNorm {
    pub mean: f32,
    pub std: f32,
}

/// One SCRFD output level: the values holding the raw head convolutions (NCHW, `anchors × k`
/// channels) for scores (before the sigmoid), box distances and keypoint offsets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrfdLevel {
    pub stride: usize,
    pub score: ValueId,
    pub bbox: ValueId,
    pub kps: Option<ValueId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrfdConfig {
    pub graph: Graph,
    pub norm: InputNorm,
    pub anchors_per_cell: usize,
    pub levels: Vec<ScrfdLevel>,
    /// Input size the ONNX file was exported at, if it was fixed (we run at any size).
    pub export_size: Option<[usize; 2]>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileFaceNetConfig {
    pub graph: Graph,
    pub norm: InputNorm,
    /// Square input side (112 for ArcFace-aligned crops).
    pub input_size: usize,
    /// The value whose 1×1 spatial map is the embedding.
    pub embedding: ValueId,
    pub dim: usize,
    /// Cosine score for a match, measured for this model (see `facegate verify`), if known.
    pub match_threshold: Option<f32>,
}

/// A presentation-attack (anti-spoofing) classifier: a square crop around the detector's box
/// in, one logit per class out; class 0 is a live face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LivenessConfig {
    pub graph: Graph,
    /// RGB `(x − mean)/std` (the published models take RGB / 255).
    pub norm: InputNorm,
    /// Square input side (128).
    pub input_size: usize,
    /// The crop is a square of this many times the box's longer side about its centre.
    pub crop_scale: f32,
    /// The value whose 1×1 map holds the logits.
    pub logits: ValueId,
    /// One name per logit, class 0 first (`live`).
    pub classes: Vec<String>,
}

/// The architecture of a model file, tagged by family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum ModelConfig {
    Scrfd(ScrfdConfig),
    MobileFaceNet(MobileFaceNetConfig),
    Liveness(LivenessConfig),
}

impl ModelConfig {
    pub fn family(&self) -> &'static str {
        match self {
            ModelConfig::Scrfd(_) => "scrfd",
            ModelConfig::MobileFaceNet(_) => "mobilefacenet",
            ModelConfig::Liveness(_) => "liveness",
        }
    }

    pub fn graph(&self) -> &Graph {
        match self {
            ModelConfig::Scrfd(c) => &c.graph,
            ModelConfig::MobileFaceNet(c) => &c.graph,
            ModelConfig::Liveness(c) => &c.graph,
        }
    }

    /// The input normalisation of any family.
    pub fn norm(&self) -> InputNorm {
        match self {
            ModelConfig::Scrfd(c) => c.norm,
            ModelConfig::MobileFaceNet(c) => c.norm,
            ModelConfig::Liveness(c) => c.norm,
        }
    }
}

/// Numeric precision of the stored weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    F16,
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "int8" => Ok(Precision::Int8),
            other => Err(format!(
                "unknown precision `{other}` (expected f32, f16 or int8)"
            )),
        }
    }
}

/// Where the weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// File name of the ONNX model (no directory: the file may move).
    pub file: String,
    pub sha256: String,
    /// int8 files: what calibrated them ([`crate::quant::calibration_stamp`]: recipe,
    /// calibration list and detector digests, methods, float budget). Caches of converted
    /// models compare it, so a changed recipe or list converts again instead of reusing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
}

/// Tensor payloads in the precisions the format stores.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorValues {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    I8(Vec<i8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub shape: Vec<usize>,
    pub values: TensorValues,
}

impl TensorData {
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        TensorData {
            shape,
            values: TensorValues::F32(values),
        }
    }

    pub fn len(&self) -> usize {
        match &self.values {
            TensorValues::F32(v) => v.len(),
            TensorValues::F16(v) => v.len(),
            TensorValues::I8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values widened to f32 (int8 values are returned as stored, unscaled).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.values {
            TensorValues::F32(v) => v.clone(),
            TensorValues::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorValues::I8(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match &self.values {
            TensorValues::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorValues::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorValues::I8(v) => v.iter().map(|&x| x as u8).collect(),
        }
    }

    fn dtype(&self) -> Dtype {
        match &self.values {
            TensorValues::F32(_) => Dtype::F32,
            TensorValues::F16(_) => Dtype::F16,
            TensorValues::I8(_) => Dtype::I8,
        }
    }
}

/// A whole model file in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    pub config: ModelConfig,
    pub precision: Precision,
    pub source: SourceInfo,
    pub tensors: BTreeMap<String, TensorData>,
    /// int8 models only: the convolutions kept in f32 (f32 `<name>.weight`, no `w_scale`)
    /// because quantising them costs the most fidelity for the least work; sorted. The
    /// engine converts between int8 and f32 at their boundaries.
    pub float_layers: Vec<String>,
}

impl ModelFile {
    /// Every check a model must pass before it is written or after it is read: the config
    /// within [`crate::limits`] (ranges, indices, sizes) and the tensors the layer program
    /// needs. One function, so the converter never writes what the runtime would refuse.
    pub fn validate(&self) -> std::result::Result<(), String> {
        crate::limits::check_config(&self.config)?;
        self.check_tensors()
    }

    /// Writes the file atomically (a temporary file in the same directory, then a rename), so
    /// that an interrupted conversion never leaves a half-written model behind. A model that
    /// fails [`ModelFile::validate`] is refused and nothing is written.
    pub fn write(&self, path: &Path) -> Result<()> {
        self.validate().map_err(|reason| Error::Model {
            path: path.to_path_buf(),
            reason: format!("not written: {reason}"),
        })?;
        self.write_unvalidated(path)
    }

    /// [`ModelFile::write`] without [`ModelFile::validate`]: what a careless or hostile writer
    /// could produce, for tests of the reader's checks only.
    #[doc(hidden)]
    pub fn write_unvalidated(&self, path: &Path) -> Result<()> {
        let (buf, _) = self.to_bytes().map_err(|reason| Error::Model {
            path: path.to_path_buf(),
            reason,
        })?;
        write_atomically(path, &buf)
    }

    /// The integrity digest the file of this model has (see [`ModelFile::to_bytes`]): what
    /// [`ModelFile::read_with_digest`] returns for the file [`ModelFile::write`] writes.
    pub fn digest(&self) -> Result<String> {
        Ok(self.to_bytes().map_err(Error::Msg)?.1)
    }

    /// The file's bytes and their digest. The bytes are deterministic (metadata keys sorted,
    /// tensors in safetensors' order), so one model always has one digest. The digest is the
    /// sha256 of the whole file (length prefix, header with every metadata entry, every
    /// tensor's bytes) with the 64 hex digits of the digest entry itself set to `0`; it is then
    /// written into that entry.
    pub fn to_bytes(&self) -> std::result::Result<(Vec<u8>, String), String> {
        let mut meta = BTreeMap::new();
        meta.insert(MAGIC_KEY.to_string(), MAGIC.to_string());
        let version = if self.float_layers.is_empty() {
            MIN_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        };
        meta.insert("format_version".to_string(), version.to_string());
        if !self.float_layers.is_empty() {
            meta.insert(
                FLOAT_LAYERS_KEY.to_string(),
                serde_json::to_string(&self.float_layers).map_err(|e| e.to_string())?,
            );
        }
        meta.insert(
            "config".to_string(),
            serde_json::to_string(&self.config).map_err(|e| e.to_string())?,
        );
        meta.insert("precision".to_string(), self.precision.to_string());
        meta.insert("source_file".to_string(), self.source.file.clone());
        meta.insert("source_sha256".to_string(), self.source.sha256.clone());
        if let Some(c) = &self.source.calibration {
            meta.insert(CALIBRATION_KEY.to_string(), c.clone());
        }
        meta.insert(DIGEST_KEY.to_string(), "0".repeat(DIGEST_HEX));
        let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.bytes(), t.dtype(), t.shape.clone()))
            .collect();
        let mut views = Vec::with_capacity(bytes.len());
        for (name, data, dtype, shape) in &bytes {
            let view = TensorView::new(*dtype, shape.clone(), data)
                .map_err(|e| format!("tensor {name}: {e}"))?;
            views.push((name.clone(), view));
        }
        let buf = safetensors::serialize(views, Some(meta.clone().into_iter().collect()))
            .map_err(|e| format!("cannot serialise: {e}"))?;
        let mut buf = canonical_header(&buf, &meta)?;
        let at = digest_position(&buf, &"0".repeat(DIGEST_HEX))?;
        let digest = crate::onnx::hex(&<sha2::Sha256 as sha2::Digest>::digest(&buf));
        buf[at..at + DIGEST_HEX].copy_from_slice(digest.as_bytes());
        Ok((buf, digest))
    }

    /// Reads and checks a model file: magic, version, integrity digest, config within
    /// [`crate::limits`], and that every tensor the layer program needs is present with the
    /// right shape and finite values.
    pub fn read(path: &Path) -> Result<Self> {
        Ok(Self::read_with_digest(path)?.0)
    }

    /// [`ModelFile::read`], also returning the file's verified integrity digest (what binds a
    /// template store to this exact file).
    pub fn read_with_digest(path: &Path) -> Result<(Self, String)> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes_with_digest(&bytes, path)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        Ok(Self::from_bytes_with_digest(bytes, path)?.0)
    }

    /// Reads a model from its file's bytes: the magic and version, then the integrity digest
    /// (nothing else of a file that fails it is used), then the config within its limits and
    /// the tensors.
    pub fn from_bytes_with_digest(bytes: &[u8], path: &Path) -> Result<(Self, String)> {
        let bad = |reason: String| Error::Model {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.is_empty() {
            return Err(bad("empty file (0 bytes), not a facegate model".into()));
        }
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
            bad(format!(
                "not a facegate model file (safetensors header: {e})"
            ))
        })?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get(MAGIC_KEY).map(String::as_str) != Some(MAGIC) {
            return Err(bad(
                "a safetensors file, but not a facegate model (no `format: facegate` metadata); convert the ONNX file with `quantize`".into(),
            ));
        }
        let version: u32 = meta
            .get("format_version")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("missing or invalid format_version".into()))?;
        if version > FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}, written by a newer facegate (this one reads versions {MIN_FORMAT_VERSION} to {FORMAT_VERSION}); update facegate or convert the model with this version's `quantize`"
            )));
        }
        if version < MIN_FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}, this facegate reads versions {MIN_FORMAT_VERSION} to {FORMAT_VERSION}; convert the model again"
            )));
        }
        // After the version (a newer format may protect itself differently), before
        // anything else of the file is used.
        let digest = verify_digest(bytes, &meta).map_err(bad)?;
        let get = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("missing metadata `{k}`")))
        };
        let config: ModelConfig = serde_json::from_str(&get("config")?)
            .map_err(|e| bad(format!("invalid config metadata: {e}")))?;
        crate::limits::check_config(&config)
            .map_err(|e| bad(format!("invalid model config: {e}")))?;
        let precision: Precision = get("precision")?.parse().map_err(bad)?;
        let float_layers: Vec<String> = match meta.get(FLOAT_LAYERS_KEY) {
            Some(_) if version < 2 => {
                return Err(bad(format!(
                    "format version {version} cannot have `{FLOAT_LAYERS_KEY}`"
                )))
            }
            Some(j) => serde_json::from_str(j)
                .map_err(|e| bad(format!("invalid {FLOAT_LAYERS_KEY} metadata: {e}")))?,
            None => Vec::new(),
        };
        let source = SourceInfo {
            file: get("source_file")?,
            sha256: get("source_sha256")?,
            calibration: meta.get(CALIBRATION_KEY).cloned(),
        };
        let st =
            SafeTensors::deserialize(bytes).map_err(|e| bad(format!("corrupt tensors: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values = match view.dtype() {
                Dtype::F32 => TensorValues::F32(
                    data.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                Dtype::F16 => TensorValues::F16(
                    data.chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
                        .collect(),
                ),
                Dtype::I8 => TensorValues::I8(data.iter().map(|&b| b as i8).collect()),
                other => return Err(bad(format!("tensor {name}: unsupported dtype {other:?}"))),
            };
            tensors.insert(
                name,
                TensorData {
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
        let file = ModelFile {
            config,
            precision,
            source,
            tensors,
            float_layers,
        };
        file.check_tensors().map_err(bad)?;
        Ok((file, digest))
    }

    /// Every convolution of the layer program has its weight, bias (and PReLU slope) tensors
    /// with the shapes the program implies.
    fn check_tensors(&self) -> std::result::Result<(), String> {
        // A NaN or infinite weight poisons every embedding or score it touches.
        for (name, t) in &self.tensors {
            let bad = match &t.values {
                TensorValues::F32(v) => v.iter().position(|x| !x.is_finite()),
                TensorValues::F16(v) => v.iter().position(|x| !x.is_finite()),
                TensorValues::I8(_) => None,
            };
            if let Some(i) = bad {
                return Err(format!("tensor {name} holds a non-finite value at {i}"));
            }
        }
        if !self.float_layers.is_empty() && self.precision != Precision::Int8 {
            return Err(format!(
                "a {} model with float layers (only int8 models have them)",
                self.precision
            ));
        }
        for l in &self.float_layers {
            let known = self
                .config
                .graph()
                .ops
                .iter()
                .any(|op| matches!(op, crate::graph::Op::Conv { name, .. } if name == l));
            if !known {
                return Err(format!(
                    "float layer {l} is not a convolution of the layer program"
                ));
            }
        }
        for op in &self.config.graph().ops {
            if let crate::graph::Op::Conv {
                name,
                cin,
                cout,
                kernel,
                groups,
                act,
                ..
            } = op
            {
                let mut want = vec![
                    (
                        format!("{name}.weight"),
                        vec![*cout, cin / groups, *kernel, *kernel],
                    ),
                    (format!("{name}.bias"), vec![*cout]),
                ];
                if *act == crate::graph::Act::PRelu {
                    want.push((format!("{name}.alpha"), vec![*cout]));
                }
                if self.precision == Precision::Int8 && !self.is_float_layer(name) {
                    want.push((format!("{name}.w_scale"), vec![*cout]));
                }
                for (tname, shape) in want {
                    match self.tensors.get(&tname) {
                        None => return Err(format!("tensor {tname} is missing")),
                        Some(t)
                            if t.shape != shape || t.len() != shape.iter().product::<usize>() =>
                        {
                            return Err(format!(
                                "tensor {tname} has shape {:?}, the layer program needs {shape:?}",
                                t.shape
                            ))
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        if self.precision == Precision::Int8 {
            let n = self.config.graph().num_values();
            match self.tensors.get(ACT_SCALES) {
                None => return Err(format!("int8 model without its tensor {ACT_SCALES}")),
                Some(t) if t.shape != [n] || !matches!(t.values, TensorValues::F32(_)) => {
                    return Err(format!(
                        "tensor {ACT_SCALES} has shape {:?}, the layer program needs [{n}] f32",
                        t.shape
                    ))
                }
                Some(t) => {
                    if t.to_f32().iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                        return Err(format!("tensor {ACT_SCALES} holds a scale that is not > 0"));
                    }
                }
            }
            for op in &self.config.graph().ops {
                if let crate::graph::Op::Conv { name, .. } = op {
                    let w = &self.tensors[&format!("{name}.weight")];
                    match (&w.values, self.is_float_layer(name)) {
                        (TensorValues::I8(_), false) | (TensorValues::F32(_), true) => {}
                        (_, false) => {
                            return Err(format!("int8 model: tensor {name}.weight is not i8"))
                        }
                        (_, true) => {
                            return Err(format!(
                                "int8 model: tensor {name}.weight of a float layer is not f32"
                            ))
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The int8 model of this f32 (or f16) model, given one calibrated activation scale per
    /// value of the layer program (`act_scales[v]`: real value per int8 step of value `v`).
    ///
    /// Weights become symmetric per-output-channel int8 (`<name>.weight` as i8,
    /// `<name>.w_scale` = max|w|/127 per output channel, 1 for an all-zero channel); biases
    /// and PReLU slopes stay f32 (the engine turns biases into i32 at load, once it knows the
    /// input and weight scales); the activation scales go to the f32 tensor [`ACT_SCALES`].
    pub fn quantize_int8(&self, act_scales: &[f32]) -> Result<ModelFile> {
        self.quantize_int8_mixed(act_scales, &[])
    }

    /// [`ModelFile::quantize_int8`] keeping the convolutions named in `float_layers` in f32
    /// (their weights stay f32 and get no `w_scale`; every value still gets its activation
    /// scale, which the engine uses where a float layer's output feeds an int8 op).
    pub fn quantize_int8_mixed(
        &self,
        act_scales: &[f32],
        float_layers: &[String],
    ) -> Result<ModelFile> {
        let n = self.config.graph().num_values();
        if act_scales.len() != n {
            return Err(Error::Msg(format!(
                "{} activation scales for {n} values",
                act_scales.len()
            )));
        }
        if self.precision == Precision::Int8 {
            return Err(Error::Msg("the model is int8 already".into()));
        }
        let mut out = self.clone();
        out.float_layers = float_layers.to_vec();
        out.float_layers.sort();
        out.float_layers.dedup();
        for op in &self.config.graph().ops {
            if let crate::graph::Op::Conv { name, cout, .. } = op {
                let wname = format!("{name}.weight");
                if out.is_float_layer(name) {
                    // Widened from f16 if need be: a float layer runs in f32.
                    let t = &self.tensors[&wname];
                    out.tensors
                        .insert(wname, TensorData::f32(t.shape.clone(), t.to_f32()));
                    continue;
                }
                let w = self.tensor_f32(&wname)?;
                let per = w.len() / cout;
                let mut q = Vec::with_capacity(w.len());
                let mut scales = Vec::with_capacity(*cout);
                for ch in w.chunks_exact(per) {
                    let m = ch.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let s = if m > 0.0 { m / 127.0 } else { 1.0 };
                    q.extend(
                        ch.iter()
                            .map(|&x| (x / s).round().clamp(-127.0, 127.0) as i8),
                    );
                    scales.push(s);
                }
                let shape = self.tensors[&wname].shape.clone();
                out.tensors.insert(
                    wname,
                    TensorData {
                        shape,
                        values: TensorValues::I8(q),
                    },
                );
                out.tensors.insert(
                    format!("{name}.w_scale"),
                    TensorData::f32(vec![*cout], scales),
                );
            }
        }
        out.tensors.insert(
            ACT_SCALES.into(),
            TensorData::f32(vec![n], act_scales.to_vec()),
        );
        out.precision = Precision::Int8;
        out.check_tensors().map_err(Error::Msg)?;
        Ok(out)
    }

    /// Whether the convolution `name` is kept in f32 inside this int8 model.
    pub fn is_float_layer(&self, name: &str) -> bool {
        self.float_layers.iter().any(|l| l == name)
    }

    /// The activation scales of an int8 model (`None` for f32/f16 files).
    pub fn act_scales(&self) -> Option<Vec<f32>> {
        (self.precision == Precision::Int8)
            .then(|| self.tensors.get(ACT_SCALES).map(TensorData::to_f32))
            .flatten()
    }

    /// The f32 model an int8 model stands for: weights `q * w_scale`, the int8-only tensors
    /// dropped (f32 and f16 models are returned widened to f32).
    pub fn dequantize(&self) -> ModelFile {
        let mut out = self.clone();
        out.tensors.remove(ACT_SCALES);
        out.float_layers.clear();
        out.source.calibration = None;
        for op in &self.config.graph().ops {
            if let crate::graph::Op::Conv { name, cout, .. } = op {
                let wname = format!("{name}.weight");
                let Some(t) = out.tensors.get_mut(&wname) else {
                    continue;
                };
                let mut w = t.to_f32();
                if let Some(s) = self.tensors.get(&format!("{name}.w_scale")) {
                    let s = s.to_f32();
                    let per = w.len() / cout;
                    for (ch, s) in w.chunks_exact_mut(per).zip(s) {
                        ch.iter_mut().for_each(|x| *x *= s);
                    }
                }
                t.values = TensorValues::F32(w);
                out.tensors.remove(&format!("{name}.w_scale"));
            }
        }
        out.precision = Precision::F32;
        out
    }

    /// The same model with its convolution weights (`*.weight`) stored as f16; biases and
    /// PReLU slopes stay f32 (they are tiny and feed the f32 epilogue directly).
    pub fn to_f16(&self) -> ModelFile {
        let mut out = self.clone();
        for (name, t) in out.tensors.iter_mut() {
            if let (true, TensorValues::F32(v)) = (name.ends_with(".weight"), &t.values) {
                t.values = TensorValues::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect());
            }
        }
        out.precision = Precision::F16;
        out
    }

    /// The f32 values of a tensor, or an error naming it.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        self.tensors
            .get(name)
            .map(TensorData::to_f32)
            .ok_or_else(|| Error::Msg(format!("model tensor {name} is missing")))
    }
}

/// The safetensors file `buf` with its JSON header rewritten in one canonical order
/// (`__metadata__` first with its keys sorted, then the tensors sorted by name): safetensors
/// writes the metadata map in hash order, which would give one model many digests.
fn canonical_header(
    buf: &[u8],
    meta: &BTreeMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    let (n, _) = SafeTensors::read_metadata(buf).map_err(|e| format!("cannot serialise: {e}"))?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&buf[8..8 + n]).map_err(|e| format!("cannot serialise: {e}"))?;
    let mut out = String::from("{\"__metadata__\":");
    out.push_str(&to_json(meta)?);
    for (k, v) in header.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        out.push(',');
        out.push_str(&to_json(k)?);
        out.push(':');
        out.push_str(&to_json(v)?);
    }
    out.push('}');
    // safetensors pads the header with spaces to a multiple of 8 bytes.
    while out.len() % 8 != 0 {
        out.push(' ');
    }
    let mut res = Vec::with_capacity(8 + out.len() + buf.len() - 8 - n);
    res.extend_from_slice(&(out.len() as u64).to_le_bytes());
    res.extend_from_slice(out.as_bytes());
    res.extend_from_slice(&buf[8 + n..]);
    Ok(res)
}

/// `serde_json::to_string` with the error as a message.
fn to_json<T: Serialize + ?Sized>(v: &T) -> std::result::Result<String, String> {
    serde_json::to_string(v).map_err(|e| e.to_string())
}

/// Where, in the header of `buf`, the 64 hex digits of the digest entry (holding `value`)
/// are: the entry must occur exactly once, as a top-level metadata entry written plainly.
fn digest_position(buf: &[u8], value: &str) -> std::result::Result<usize, String> {
    let n = buf
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .filter(|n| n.checked_add(8).is_some_and(|end| end <= buf.len()))
        .ok_or("truncated header")?;
    let header = &buf[8..8 + n];
    let pattern = format!("\"{DIGEST_KEY}\":\"{value}\"");
    let mut found = header
        .windows(pattern.len())
        .enumerate()
        .filter(|(_, w)| *w == pattern.as_bytes())
        .map(|(i, _)| i);
    match (found.next(), found.next()) {
        (Some(i), None) => Ok(8 + i + pattern.len() - 1 - DIGEST_HEX),
        _ => Err(format!(
            "the integrity digest entry `{DIGEST_KEY}` is not written plainly once in the header"
        )),
    }
}

/// Checks the integrity digest of a model file's bytes (see [`ModelFile::to_bytes`]) and
/// returns it. A file without one predates digests and must be converted again.
fn verify_digest(
    bytes: &[u8],
    meta: &HashMap<String, String>,
) -> std::result::Result<String, String> {
    let stored = meta.get(DIGEST_KEY).ok_or_else(|| {
        format!(
            "no integrity digest (`{DIGEST_KEY}`): written by an older facegate; convert the ONNX file again with `quantize`"
        )
    })?;
    if stored.len() != DIGEST_HEX
        || !stored
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!(
            "integrity digest `{DIGEST_KEY}` is not {DIGEST_HEX} lowercase hex digits: the file is corrupt or was tampered with; convert the ONNX file again with `quantize`"
        ));
    }
    let at = digest_position(bytes, stored)?;
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, &bytes[..at]);
    sha2::Digest::update(&mut h, "0".repeat(DIGEST_HEX).as_bytes());
    sha2::Digest::update(&mut h, &bytes[at + DIGEST_HEX..]);
    let actual = crate::onnx::hex(&sha2::Digest::finalize(h));
    if &actual != stored {
        return Err(
            "integrity digest mismatch: the file changed after it was written (corrupt or tampered with); convert the ONNX file again with `quantize`"
                .into(),
        );
    }
    Ok(actual)
}

/// Writes `bytes` to `path` via a temporary file in the same directory, fsync and rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Msg(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Act, Op};

    fn tiny() -> ModelFile {
        let graph = Graph {
            input_channels: 3,
            ops: vec![Op::Conv {
                name: "body.0".into(),
                input: 0,
                cin: 3,
                cout: 2,
                kernel: 1,
                stride: 1,
                pad: 0,
                groups: 1,
                act: Act::PRelu,
            }],
        };
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "body.0.weight".into(),
            TensorData::f32(vec![2, 3, 1, 1], vec![0.5, -1.0, 2.0, 3.0, 0.25, -0.125]),
        );
        tensors.insert(
            "body.0.bias".into(),
            TensorData::f32(vec![2], vec![0.1, -0.2]),
        );
        tensors.insert(
            "body.0.alpha".into(),
            TensorData::f32(vec![2], vec![0.25, 0.3]),
        );
        ModelFile {
            config: ModelConfig::MobileFaceNet(MobileFaceNetConfig {
                graph,
                norm: InputNorm {
                    mean: 127.5,
                    std: 127.5,
                },
                input_size: 1,
                embedding: 1,
                dim: 2,
                match_threshold: Some(0.42),
            }),
            precision: Precision::F32,
            source: SourceInfo {
                file: "tiny.onnx".into(),
                sha256: "00".repeat(32),
                calibration: None,
            },
            tensors,
            float_layers: Vec::new(),
        }
    }

    #[test]
    fn write_read_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let m = tiny();
        m.write(&path).unwrap();
        assert_eq!(ModelFile::read(&path).unwrap(), m);
        // Nothing but the model is left in the directory (the temporary file was renamed).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn int8_quantize_write_read_dequantize_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.safetensors");
        let m = tiny();
        let q = m.quantize_int8(&[1.0 / 127.0, 0.05]).unwrap();
        assert_eq!(q.precision, Precision::Int8);
        q.write(&path).unwrap();
        let r = ModelFile::read(&path).unwrap();
        assert_eq!(r, q, "int8 file round trip is exact");
        assert_eq!(r.act_scales().unwrap(), vec![1.0 / 127.0, 0.05]);
        match &r.tensors["body.0.weight"].values {
            TensorValues::I8(v) => assert_eq!(v.iter().map(|x| x.abs()).max(), Some(127)),
            other => panic!("weights not i8: {other:?}"),
        }
        // Dequantised weights are within half a step of the originals; the rest is exact.
        let d = r.dequantize();
        assert_eq!(d.precision, Precision::F32);
        let scales = r.tensor_f32("body.0.w_scale").unwrap();
        assert_eq!(scales, vec![2.0 / 127.0, 3.0 / 127.0]);
        let (w0, w1) = (
            m.tensor_f32("body.0.weight").unwrap(),
            d.tensor_f32("body.0.weight").unwrap(),
        );
        for (i, (a, b)) in w0.iter().zip(&w1).enumerate() {
            assert!(
                (a - b).abs() <= scales[i / 3] / 2.0 + 1e-7,
                "{i}: {a} vs {b}"
            );
        }
        assert_eq!(
            d.tensors.keys().collect::<Vec<_>>(),
            m.tensors.keys().collect::<Vec<_>>()
        );
        assert_eq!(d.tensors["body.0.bias"], m.tensors["body.0.bias"]);
        assert_eq!(d.tensors["body.0.alpha"], m.tensors["body.0.alpha"]);
        // f32 files keep reading as before; an int8 file without its scales is refused.
        assert!(m.act_scales().is_none());
        let mut bad = q.clone();
        bad.tensors.remove(ACT_SCALES);
        assert!(bad.write(&path).is_err(), "the writer refuses it too");
        bad.write_unvalidated(&path).unwrap();
        let e = ModelFile::read(&path).unwrap_err().to_string();
        assert!(e.contains(ACT_SCALES), "{e}");
        assert!(m.quantize_int8(&[1.0]).is_err(), "wrong number of scales");
    }

    /// The version a file was written with, from its header.
    fn version_of(path: &Path) -> String {
        let bytes = std::fs::read(path).unwrap();
        let (_, h) = SafeTensors::read_metadata(&bytes).unwrap();
        h.metadata().as_ref().unwrap()["format_version"].clone()
    }

    #[test]
    fn mixed_precision_round_trip_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.safetensors");
        let m = tiny();
        // Without float layers a file stays version 1, which older readers understand.
        m.quantize_int8(&[1.0 / 127.0, 0.05])
            .unwrap()
            .write(&path)
            .unwrap();
        assert_eq!(version_of(&path), "1");
        let q = m
            .quantize_int8_mixed(&[1.0 / 127.0, 0.05], &["body.0".into()])
            .unwrap();
        assert_eq!(q.float_layers, vec!["body.0".to_string()]);
        assert_eq!(q.tensors["body.0.weight"], m.tensors["body.0.weight"]);
        assert!(!q.tensors.contains_key("body.0.w_scale"));
        q.write(&path).unwrap();
        assert_eq!(version_of(&path), "2");
        let r = ModelFile::read(&path).unwrap();
        assert_eq!(r, q, "mixed int8 file round trip is exact");
        assert!(r.is_float_layer("body.0"));
        assert_eq!(r.dequantize().tensors, m.tensors);
        assert!(r.dequantize().float_layers.is_empty());
        // A float layer that is not a convolution, and a newer version, are refused.
        let mut bad = q.clone();
        bad.float_layers = vec!["body.7".into()];
        assert!(bad.write(&path).is_err(), "the writer refuses it too");
        bad.write_unvalidated(&path).unwrap();
        let e = ModelFile::read(&path).unwrap_err().to_string();
        assert!(e.contains("body.7"), "{e}");
        let mut bytes = std::fs::read(&path).unwrap();
        let key = b"\"format_version\":\"2\"";
        let at = bytes
            .windows(key.len())
            .position(|w| w == key)
            .expect("version in the header");
        bytes[at + key.len() - 2] = b'9';
        let e = ModelFile::from_bytes(&bytes, &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("newer facegate"), "{e}");
    }

    /// The bytes the writer before integrity digests produced: the same metadata without
    /// `digest_sha256`.
    fn legacy_bytes(m: &ModelFile) -> Vec<u8> {
        let mut meta = HashMap::new();
        meta.insert(MAGIC_KEY.to_string(), MAGIC.to_string());
        meta.insert("format_version".to_string(), "1".to_string());
        meta.insert("config".into(), serde_json::to_string(&m.config).unwrap());
        meta.insert("precision".into(), m.precision.to_string());
        meta.insert("source_file".into(), m.source.file.clone());
        meta.insert("source_sha256".into(), m.source.sha256.clone());
        let data: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = m
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.bytes(), t.dtype(), t.shape.clone()))
            .collect();
        let views: Vec<(String, TensorView)> = data
            .iter()
            .map(|(n, d, t, s)| (n.clone(), TensorView::new(*t, s.clone(), d).unwrap()))
            .collect();
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    #[test]
    fn digest_is_deterministic_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let m = tiny();
        // One model, one file: the metadata map's hash order does not leak into the bytes.
        let (a, da) = m.to_bytes().unwrap();
        for _ in 0..5 {
            assert_eq!(m.to_bytes().unwrap(), (a.clone(), da.clone()));
        }
        // The digest is the sha256 of the file with its own 64 digits zeroed, by hand.
        let text = String::from_utf8_lossy(&a).into_owned();
        let at = text.find(&da).expect("digest written into the file");
        let mut zeroed = a.clone();
        zeroed[at..at + 64].copy_from_slice(&[b'0'; 64]);
        assert_eq!(
            da,
            crate::onnx::hex(&<sha2::Sha256 as sha2::Digest>::digest(&zeroed))
        );
        m.write(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), a);
        let (r, dr) = ModelFile::read_with_digest(&path).unwrap();
        assert_eq!((r, dr), (m.clone(), da.clone()));
        // A one-value change gives another digest.
        let mut m2 = m.clone();
        if let TensorValues::F32(v) = &mut m2.tensors.get_mut("body.0.bias").unwrap().values {
            v[0] = 0.2;
        }
        assert_ne!(m2.digest().unwrap(), da);
    }

    #[test]
    fn every_byte_flip_is_refused_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let (good, _) = tiny().to_bytes().unwrap();
        // Every position of the (small) file, three different flips each: length prefix,
        // JSON header (metadata, tensor table, the digest itself, padding) and tensor data.
        for i in 0..good.len() {
            for flip in [0x01u8, 0x20, 0xFF] {
                let mut b = good.clone();
                b[i] ^= flip;
                let e = ModelFile::from_bytes(&b, &path)
                    .err()
                    .unwrap_or_else(|| panic!("byte {i} ^ {flip:#x} loaded"));
                let e = e.to_string();
                assert!(e.starts_with(&path.display().to_string()), "{e}");
                assert_eq!(e.lines().count(), 1, "{e}");
            }
        }
    }

    #[test]
    fn a_file_without_digest_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.safetensors");
        std::fs::write(&path, legacy_bytes(&tiny())).unwrap();
        let e = ModelFile::read(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(
            e.contains("no integrity digest") && e.contains("quantize"),
            "{e}"
        );
    }

    #[test]
    fn invalid_config_is_not_written_and_refused_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        let mut m = tiny();
        if let ModelConfig::MobileFaceNet(c) = &mut m.config {
            c.dim = 1 << 40;
        }
        let e = m.write(&path).unwrap_err().to_string();
        assert!(e.contains("not written") && e.contains("dim"), "{e}");
        assert!(!path.exists());
        // A writer that does not check: the reader refuses it (the digest is right).
        m.write_unvalidated(&path).unwrap();
        let e = ModelFile::read(&path).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains("invalid model config"), "{e}");
    }

    #[test]
    fn missing_tensor_and_flipped_header_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let mut m = tiny();
        m.tensors.remove("body.0.alpha");
        m.write_unvalidated(&path).unwrap();
        let e = ModelFile::read(&path).unwrap_err().to_string();
        assert!(e.contains("body.0.alpha is missing"), "{e}");
        tiny().write(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 0xFF; // inside the JSON header
        let e = ModelFile::from_bytes(&bytes, &path)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
    }
}
