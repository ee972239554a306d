//! The model file format, read AND written here so that the converter (`quantize/`) and the
//! runtime can never drift apart: a safetensors file whose tensors carry canonical names
//! (`body.12.weight`, `head.s8.cls.bias`) and whose metadata holds a format version, the
//! architecture config (the layer program and what its outputs mean), the input
//! normalisation, the precision and the sha256 of the ONNX file it came from.

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
const MAGIC_KEY: &str = "format";
const MAGIC: &str = "facegate";
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
    /// Writes the file atomically (a temporary file in the same directory, then a rename), so
    /// that an interrupted conversion never leaves a half-written model behind.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut meta = HashMap::new();
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
                serde_json::to_string(&self.float_layers).map_err(|e| Error::Msg(e.to_string()))?,
            );
        }
        meta.insert(
            "config".to_string(),
            serde_json::to_string(&self.config).map_err(|e| Error::Msg(e.to_string()))?,
        );
        meta.insert("precision".to_string(), self.precision.to_string());
        meta.insert("source_file".to_string(), self.source.file.clone());
        meta.insert("source_sha256".to_string(), self.source.sha256.clone());
        let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.bytes(), t.dtype(), t.shape.clone()))
            .collect();
        let mut views = Vec::with_capacity(bytes.len());
        for (name, data, dtype, shape) in &bytes {
            let view = TensorView::new(*dtype, shape.clone(), data).map_err(|e| Error::Model {
                path: path.to_path_buf(),
                reason: format!("tensor {name}: {e}"),
            })?;
            views.push((name.clone(), view));
        }
        let buf = safetensors::serialize(views, Some(meta)).map_err(|e| Error::Model {
            path: path.to_path_buf(),
            reason: format!("cannot serialise: {e}"),
        })?;
        write_atomically(path, &buf)
    }

    /// Reads and checks a model file: magic, version, config, and that every tensor the
    /// layer program needs is present with the right shape.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
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
        let get = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("missing metadata `{k}`")))
        };
        let config: ModelConfig = serde_json::from_str(&get("config")?)
            .map_err(|e| bad(format!("invalid config metadata: {e}")))?;
        config
            .graph()
            .validate()
            .map_err(|e| bad(format!("invalid layer program: {e}")))?;
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
        Ok(file)
    }

    /// Every convolution of the layer program has its weight, bias (and PReLU slope) tensors
    /// with the shapes the program implies.
    fn check_tensors(&self) -> std::result::Result<(), String> {
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
        bad.write(&path).unwrap();
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
        bad.write(&path).unwrap();
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

    #[test]
    fn missing_tensor_and_flipped_header_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let mut m = tiny();
        m.tensors.remove("body.0.alpha");
        m.write(&path).unwrap();
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
