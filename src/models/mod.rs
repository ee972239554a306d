//! Model families and how their files are opened. Each family module cites its paper and
//! the source of its weights, builds the network from the file's layer program, and owns
//! what the outputs mean.

pub mod mobilefacenet;
pub mod scrfd;

use std::path::{Path, PathBuf};

use std::sync::Mutex;

use candle_core::{Device, Tensor};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::{ModelFile, Precision};
use crate::graph::ValueId;
use crate::nn::Network;

/// Which executor runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The fast NHWC engine on the kernel table (`engine`).
    #[default]
    Fast,
    /// The candle f32 reference (`nn`): slower, the yardstick of the others.
    Reference,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fast" => Ok(Backend::Fast),
            "reference" | "candle" => Ok(Backend::Reference),
            other => Err(format!(
                "unknown backend `{other}` (expected fast or reference)"
            )),
        }
    }
}

/// How a model is loaded and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    pub backend: Backend,
    /// Threads of the fast engine; 0 means all cores.
    pub threads: usize,
    /// Convert the weights to this precision on load (`None`: as stored). f32 files can be
    /// narrowed to f16 on the fly; int8 needs a calibrated file from `quantize`.
    pub precision: Option<Precision>,
}

impl LoadOptions {
    pub fn reference() -> Self {
        LoadOptions {
            backend: Backend::Reference,
            ..Default::default()
        }
    }

    pub fn fast(threads: usize) -> Self {
        LoadOptions {
            backend: Backend::Fast,
            threads,
            precision: None,
        }
    }

    /// Opens the model file (see [`open`]) and applies the requested precision.
    pub fn open(&self, path: &Path) -> Result<ModelFile> {
        Ok(self.open_with_id(path)?.0)
    }

    /// [`LoadOptions::open`], also returning the identity of exactly what will run: the
    /// file's integrity digest (`sha256:<hex>`), with `+f16` when its f32 weights are narrowed
    /// on load (they give other embeddings than the file as stored).
    pub fn open_with_id(&self, path: &Path) -> Result<(ModelFile, String)> {
        let (file, digest) = open_with_digest(path)?;
        let id = format!("sha256:{digest}");
        match (self.precision, file.precision) {
            (None, _) => Ok((file, id)),
            (Some(want), have) if want == have => Ok((file, id)),
            (Some(Precision::F16), Precision::F32) => Ok((file.to_f16(), format!("{id}+f16"))),
            (Some(want), have) => Err(Error::Model {
                path: path.to_path_buf(),
                reason: format!(
                    "holds {have} weights; {want} needs a file converted with `quantize --precision {want}`"
                ),
            }),
        }
    }
}

/// Receives output `i` of a run as NHWC data with its `[h, w, c]`.
pub(crate) type Sink<'a> = dyn FnMut(usize, &[f32], [usize; 3]) + 'a;

/// A network behind one of the executors.
pub(crate) enum Runner {
    Reference(Network),
    Fast(Box<Mutex<Engine>>),
}

impl Runner {
    /// The executor for `file` (read from `path`, which a refusal names).
    pub fn new(
        file: &ModelFile,
        path: &Path,
        outputs: &[ValueId],
        opts: &LoadOptions,
    ) -> Result<Runner> {
        Self::build(file, outputs, opts).map_err(|e| match e {
            e @ Error::Model { .. } => e,
            e => Error::Model {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
        })
    }

    fn build(file: &ModelFile, outputs: &[ValueId], opts: &LoadOptions) -> Result<Runner> {
        Ok(match opts.backend {
            // The reference runs an int8 file's dequantised weights in f32.
            Backend::Reference if file.precision == Precision::Int8 => {
                Runner::Reference(Network::new(&file.dequantize())?)
            }
            Backend::Reference => Runner::Reference(Network::new(file)?),
            Backend::Fast => Runner::Fast(Box::new(Mutex::new(Engine::new(
                file,
                outputs,
                opts.threads,
            )?))),
        })
    }

    /// Runs on an NHWC input written by `fill` into a `h × w × c` buffer, then hands each of
    /// `outputs` to `sink` as NHWC data with its `[h, w, c]`. The fast engine allocates
    /// nothing here once it has run at this size.
    pub fn run_nhwc(
        &self,
        h: usize,
        w: usize,
        fill: &mut dyn FnMut(&mut [f32]),
        outputs: &[ValueId],
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        match self {
            Runner::Fast(engine) => {
                let mut e = engine.lock().unwrap_or_else(|p| p.into_inner());
                fill(e.input_mut(h, w)?);
                e.run()?;
                for (i, &v) in outputs.iter().enumerate() {
                    let (data, shape) = e.output(v)?;
                    sink(i, data, shape);
                }
                Ok(())
            }
            Runner::Reference(net) => {
                let c = net.graph().input_channels;
                let mut data = vec![0f32; h * w * c];
                fill(&mut data);
                let x = Tensor::from_vec(data, (1, h, w, c), &Device::Cpu)?
                    .permute((0, 3, 1, 2))?
                    .contiguous()?;
                let ys = net.forward(&x, outputs)?;
                for (i, y) in ys.iter().enumerate() {
                    let (_, c, h, w) = y.dims4()?;
                    let v = y.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()?;
                    sink(i, &v, [h, w, c]);
                }
                Ok(())
            }
        }
    }

    /// Runs on an NCHW tensor, converting it to the executor's layout.
    pub fn run_tensor(
        &self,
        input: &Tensor,
        outputs: &[ValueId],
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        let (_, _, h, w) = input.dims4()?;
        let nhwc = input
            .permute((0, 2, 3, 1))?
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.run_nhwc(h, w, &mut |dst| dst.copy_from_slice(&nhwc), outputs, sink)
    }

    /// The fast engine, for profiling (`None` on the reference).
    pub fn engine(&self) -> Option<&Mutex<Engine>> {
        match self {
            Runner::Fast(e) => Some(e),
            Runner::Reference(_) => None,
        }
    }
}

/// Directory where ONNX files given directly are converted and cached
/// (`FACEGATE_MODEL_CACHE`, default `models/cache` under the working directory).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("FACEGATE_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models").join("cache"))
}

/// Opens a model: a converted `.safetensors` file is read as is; an `.onnx` file is converted
/// on the fly and the result cached (keyed by the ONNX file's sha256, so a changed file is
/// converted again). A cache that cannot be written only costs a warning.
pub fn open(path: &Path) -> Result<ModelFile> {
    Ok(open_with_digest(path)?.0)
}

/// [`open`], also returning the integrity digest of the model file (for an ONNX file, of its
/// converted file as cached, see [`ModelFile::digest`]).
pub fn open_with_digest(path: &Path) -> Result<(ModelFile, String)> {
    let is_onnx = path
        .extension()
        .map(|e| e.eq_ignore_ascii_case("onnx"))
        .unwrap_or(false);
    if !is_onnx {
        return ModelFile::read_with_digest(path);
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sha = crate::onnx::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let cached = cache_dir().join(format!("{stem}-{}.safetensors", &sha[..12]));
    if let Ok((file, digest)) = ModelFile::read_with_digest(&cached) {
        if file.source.sha256 == sha {
            return Ok((file, digest));
        }
    }
    let file = crate::onnx::convert(path)?;
    let digest = file.digest()?;
    if let Err(e) = std::fs::create_dir_all(cache_dir())
        .map_err(|e| Error::io(cache_dir(), e))
        .and_then(|_| file.write(&cached))
    {
        log::warn!("could not cache the converted model: {e}");
    }
    Ok((file, digest))
}
