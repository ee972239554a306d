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

/// Bumped whenever the metadata or tensor conventions change incompatibly.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC_KEY: &str = "format";
const MAGIC: &str = "facegate";

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

/// The architecture of a model file, tagged by family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum ModelConfig {
    Scrfd(ScrfdConfig),
    MobileFaceNet(MobileFaceNetConfig),
}

impl ModelConfig {
    pub fn family(&self) -> &'static str {
        match self {
            ModelConfig::Scrfd(_) => "scrfd",
            ModelConfig::MobileFaceNet(_) => "mobilefacenet",
        }
    }

    pub fn graph(&self) -> &Graph {
        match self {
            ModelConfig::Scrfd(c) => &c.graph,
            ModelConfig::MobileFaceNet(c) => &c.graph,
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
}

impl ModelFile {
    /// Writes the file atomically (a temporary file in the same directory, then a rename), so
    /// that an interrupted conversion never leaves a half-written model behind.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut meta = HashMap::new();
        meta.insert(MAGIC_KEY.to_string(), MAGIC.to_string());
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
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
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}, this facegate reads version {FORMAT_VERSION}; convert the model again"
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
        };
        file.check_tensors().map_err(bad)?;
        Ok(file)
    }

    /// Every convolution of the layer program has its weight, bias (and PReLU slope) tensors
    /// with the shapes the program implies.
    fn check_tensors(&self) -> std::result::Result<(), String> {
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
        Ok(())
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
