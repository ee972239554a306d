//! Model families and how their files are opened. Each family module cites its paper and
//! the source of its weights, builds the network from the file's layer program, and owns
//! what the outputs mean.

pub mod mobilefacenet;
pub mod scrfd;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::ModelFile;

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
    let is_onnx = path
        .extension()
        .map(|e| e.eq_ignore_ascii_case("onnx"))
        .unwrap_or(false);
    if !is_onnx {
        return ModelFile::read(path);
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sha = crate::onnx::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let cached = cache_dir().join(format!("{stem}-{}.safetensors", &sha[..12]));
    if let Ok(file) = ModelFile::read(&cached) {
        if file.source.sha256 == sha {
            return Ok(file);
        }
    }
    let file = crate::onnx::convert(path)?;
    if let Err(e) = std::fs::create_dir_all(cache_dir())
        .map_err(|e| Error::io(cache_dir(), e))
        .and_then(|_| file.write(&cached))
    {
        log::warn!("could not cache the converted model: {e}");
    }
    Ok(file)
}
