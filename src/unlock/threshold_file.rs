//! The measured match threshold as a file bound to the recogniser FILE it was measured for.
//!
//! Why: a cosine threshold only means "FAR 1e-5" for the embeddings of one recogniser file
//! (an int8 conversion scores differently from the f32 file it came from). So
//! `facegate threshold` writes its result with the integrity digest of the recogniser file
//! (and of the detector, with the detector size, that found and aligned the faces), and
//! `unlock`/`enroll` refuse to start when the file was measured for another recogniser than
//! the one they loaded: no threshold is ever copied by hand into a profile or a constant.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest threshold file read (a report is well under 2 KB).
const MAX_BYTES: u64 = 64 * 1024;

/// What `facegate threshold` measured, as written to the threshold file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredThreshold {
    /// Identity of the recogniser file the embeddings came from: its integrity digest
    /// (`sha256:<hex>`, see `format.rs`), as [`crate::models::LoadOptions::open_with_id`]
    /// gives it.
    pub recognizer_digest: String,
    /// Identity of the detector file that found and aligned the faces.
    pub detector_digest: String,
    /// The detector input size used (`[width, height]`).
    pub det_size: [u32; 2],
    /// The cosine score: accept when `score >= threshold`.
    pub threshold: f32,
    pub far_target: f64,
    /// FAR actually reached at `threshold`.
    pub far: f64,
    /// Fraction of genuine pairs rejected at `threshold`.
    pub frr: f64,
    pub impostor_pairs: u64,
    pub genuine_pairs: u64,
    pub images: usize,
    pub embedded: usize,
    pub identities: usize,
    /// The files as named on the command line (for people; the digests are what count).
    pub recognizer: String,
    pub detector: String,
    /// The photos measured over.
    pub data: String,
    /// The command that measured it.
    pub command: String,
}

/// Where `facegate threshold` writes by default and where a board without
/// `[match].threshold_file` looks: `threshold-<recogniser file stem>.json` beside the
/// recogniser file.
pub fn default_path(recognizer: &Path) -> PathBuf {
    let stem = recognizer
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    recognizer.with_file_name(format!("threshold-{stem}.json"))
}

/// The command that measures the threshold file `path` for these models, for messages.
pub fn measure_command(det: &Path, rec: &Path, det_size: (u32, u32), path: &Path) -> String {
    format!(
        "facegate threshold --det {} --rec {} --det-size {}x{} --out-json {}",
        det.display(),
        rec.display(),
        det_size.0,
        det_size.1,
        path.display()
    )
}

impl MeasuredThreshold {
    /// Parses and range-checks a threshold file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<MeasuredThreshold> {
        let bad = |reason: String| Error::Msg(format!("{}: {reason}", path.display()));
        let m: MeasuredThreshold = serde_json::from_str(text).map_err(|e| {
            bad(format!(
                "not a threshold file of `facegate threshold` ({e})"
            ))
        })?;
        if !(m.threshold.is_finite() && m.threshold > 0.0 && m.threshold < 1.0) {
            return Err(bad(format!("threshold {} is not in (0, 1)", m.threshold)));
        }
        if !(m.far_target.is_finite() && m.far_target > 0.0 && m.far_target < 1.0) {
            return Err(bad(format!("far_target {} is not in (0, 1)", m.far_target)));
        }
        if !is_digest(&m.recognizer_digest) {
            return Err(bad(format!(
                "recognizer_digest {:?} is not sha256:<64 hex digits>",
                m.recognizer_digest
            )));
        }
        Ok(m)
    }

    /// Reads the threshold file at `path` and checks that it was measured for the recogniser
    /// whose identity is `recognizer_id`. Every refusal is one line naming the file and
    /// ending with `fix`, the command that measures it.
    pub fn load_for(path: &Path, recognizer_id: &str, fix: &str) -> Result<MeasuredThreshold> {
        let read = || -> Result<String> {
            let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let mut text = String::new();
            use std::io::Read;
            f.take(MAX_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|e| Error::io(path, e))?;
            if text.len() as u64 > MAX_BYTES {
                return Err(Error::Msg(format!(
                    "{}: larger than {MAX_BYTES} bytes",
                    path.display()
                )));
            }
            Ok(text)
        };
        let m = read()
            .and_then(|t| Self::parse(&t, path))
            .map_err(|e| Error::Msg(format!("match threshold: {e}; measure it with `{fix}`")))?;
        if m.recognizer_digest != recognizer_id {
            return Err(Error::Msg(format!(
                "match threshold: {} was measured for the recogniser {}, not for the loaded one ({recognizer_id}); measure it with `{fix}`",
                path.display(),
                m.recognizer_digest
            )));
        }
        Ok(m)
    }

    /// The threshold the loop uses: the measured one, or a board's `[match].threshold` if it is
    /// at least as strict (a higher cosine accepts fewer strangers). A looser value is refused:
    /// it would open for more strangers than the measurement allows.
    pub fn select(&self, board_value: Option<f32>, path: &Path) -> Result<f32> {
        match board_value {
            None => Ok(self.threshold),
            Some(t) if t >= self.threshold => Ok(t),
            Some(t) => Err(Error::Msg(format!(
                "match threshold: the board's [match].threshold {t} is looser than {} measured in {} (FAR {:e}); remove it or raise it",
                self.threshold,
                path.display(),
                self.far_target
            ))),
        }
    }
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .map(|h| h.split_once('+').map_or(h, |(h, _)| h))
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn sample(digest: &str, threshold: f32) -> MeasuredThreshold {
        MeasuredThreshold {
            recognizer_digest: digest.into(),
            detector_digest: D2.into(),
            det_size: [320, 256],
            threshold,
            far_target: 1e-5,
            far: 9.9e-6,
            frr: 0.1,
            impostor_pairs: 100,
            genuine_pairs: 10,
            images: 20,
            embedded: 20,
            identities: 5,
            recognizer: "r".into(),
            detector: "d".into(),
            data: "x".into(),
            command: "c".into(),
        }
    }

    fn write(dir: &Path, m: &MeasuredThreshold) -> PathBuf {
        let p = dir.join("threshold-r.json");
        std::fs::write(&p, serde_json::to_string(m).unwrap()).unwrap();
        p
    }

    #[test]
    fn default_path_is_beside_the_recogniser() {
        assert_eq!(
            default_path(Path::new("/m/mobilefacenet_512_int8.safetensors")),
            Path::new("/m/threshold-mobilefacenet_512_int8.json")
        );
    }

    #[test]
    fn a_file_measured_for_another_recogniser_is_refused_with_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), &sample(D1, 0.5));
        assert_eq!(
            MeasuredThreshold::load_for(&p, D1, "FIX")
                .unwrap()
                .threshold,
            0.5
        );
        let e = MeasuredThreshold::load_for(&p, D2, "FIX")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("measured for the recogniser") && e.ends_with("`FIX`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        // Missing, malformed, out of range: refused, naming the file and the command.
        let missing = dir.path().join("none.json");
        let e = MeasuredThreshold::load_for(&missing, D1, "FIX")
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.json") && e.ends_with("`FIX`"), "{e}");
        for bad in [
            "{}".to_string(),
            serde_json::to_string(&sample(D1, 1.5)).unwrap(),
            serde_json::to_string(&sample(D1, f32::NAN)).unwrap(),
            serde_json::to_string(&sample("sha256:abc", 0.5)).unwrap(),
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(MeasuredThreshold::load_for(&p, D1, "FIX").is_err());
        }
    }

    #[test]
    fn a_board_value_may_be_stricter_never_looser() {
        let m = sample(D1, 0.5);
        let p = Path::new("t.json");
        assert_eq!(m.select(None, p).unwrap(), 0.5);
        assert_eq!(m.select(Some(0.6), p).unwrap(), 0.6);
        assert!(m.select(Some(0.45), p).is_err());
    }
}
