//! Issue 12, findings 1 and 5: a model file changed after conversion never loads, a template
//! store is bound to the exact recogniser file it was enrolled with, metadata that would make
//! a later stage panic or allocate gigabytes is refused at load (and never written), and a
//! recogniser that produces a NaN, infinite or zero embedding gives an error, not a template.

mod common;

use std::path::{Path, PathBuf};

use facegate::format::{ModelConfig, ModelFile, TensorValues};
use facegate::graph::{Act, Op};
use facegate::models::mobilefacenet::MobileFaceNet;
use facegate::models::scrfd::Scrfd;
use facegate::models::LoadOptions;
use facegate::unlock::app::{load_models, load_unlock_store};
use facegate::unlock::store::TemplateStore;
use facegate::Embedder;

/// xorshift64*: reproducible positions without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Length of the safetensors header (after the 8-byte length prefix).
fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

fn assert_refused_by_path(r: facegate::Result<impl Sized>, path: &Path, what: &str) -> String {
    let e = match r {
        Ok(_) => panic!("{what}: loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.starts_with(&path.display().to_string()),
        "{what}: names the file: {e}"
    );
    assert_eq!(e.lines().count(), 1, "{what}: one line: {e}");
    e
}

#[test]
fn flipped_bytes_anywhere_in_a_converted_model_are_refused() {
    for (name, seed) in [("mobilefacenet_512", 1u64), ("det_500m", 2)] {
        let path = common::model(name);
        let good = std::fs::read(&path).unwrap();
        ModelFile::from_bytes(&good, &path).expect("the untouched file loads");
        let n = header_len(&good);
        let text = String::from_utf8_lossy(&good[8..8 + n]).into_owned();
        let config_at = 8 + text.find("\"config\"").unwrap();
        let digest_at = 8 + text.find("\"digest_sha256\"").unwrap();
        let mut rng = Rng(seed);
        // Fixed places (length prefix, first header byte, the config, the digest, header
        // padding, first and last data bytes), then 200 random ones: a quarter in the
        // header, the rest in the tensor data.
        let mut positions = vec![
            0,
            7,
            8,
            config_at + 20,
            digest_at + 20,
            8 + n - 1,
            8 + n,
            good.len() - 1,
        ];
        for i in 0..200 {
            positions.push(if i % 4 == 0 {
                8 + rng.below(n)
            } else {
                8 + n + rng.below(good.len() - 8 - n)
            });
        }
        let mut digest_errors = 0;
        for &p in &positions {
            let mut b = good.clone();
            b[p] ^= 1 + (rng.next() % 255) as u8;
            let e = assert_refused_by_path(
                ModelFile::from_bytes(&b, &path),
                &path,
                &format!("{name} byte {p}"),
            );
            digest_errors += usize::from(e.contains("integrity digest"));
        }
        // Every change in the tensor data is caught by the digest (nothing else looks there).
        assert!(
            digest_errors >= 150,
            "{name}: {digest_errors} digest refusals"
        );
        eprintln!(
            "{name}: {} flips refused ({digest_errors} by the digest)",
            positions.len()
        );
    }
}

#[test]
fn a_tampered_recogniser_file_is_refused_by_the_loaders() {
    // The attack: the high byte of one bias of the embedding layer.
    let dir = tempfile::tempdir().unwrap();
    let good = common::model("mobilefacenet_512");
    let file = ModelFile::read(&good).unwrap();
    let bias = file.tensors["embedding.bias"].clone();
    let bytes = std::fs::read(&good).unwrap();
    let bias_bytes: Vec<u8> = bias.to_f32().iter().flat_map(|x| x.to_le_bytes()).collect();
    let at = bytes
        .windows(bias_bytes.len())
        .position(|w| w == bias_bytes.as_slice())
        .expect("the bias in the file");
    let mut b = bytes.clone();
    b[at + 3] ^= 0x40;
    let bad = dir.path().join("tampered.safetensors");
    std::fs::write(&bad, &b).unwrap();
    let e = assert_refused_by_path(MobileFaceNet::load(&bad), &bad, "tampered");
    assert!(e.contains("integrity digest mismatch"), "{e}");
    let det = common::model("det_500m");
    let e = assert_refused_by_path(
        load_models(&det, &bad, (320, 320), &LoadOptions::default()),
        &bad,
        "tampered",
    );
    assert!(e.contains("quantize"), "says how to fix it: {e}");
}

/// Writes `file` to `dir/name` with the format's own writer (digest recomputed).
fn write(dir: &Path, name: &str, file: &ModelFile) -> PathBuf {
    let p = dir.join(name);
    file.write(&p).unwrap();
    p
}

#[test]
fn a_store_enrolled_with_one_recogniser_file_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let det = common::model("det_500m");
    let a = dir.path().join("a.safetensors");
    std::fs::copy(common::model("mobilefacenet_512"), &a).unwrap();
    let file_a = ModelFile::read(&a).unwrap();
    // Converted from the same ONNX file, different bytes: the f16 file, and the f32 file with
    // one bias changed and a correct digest (what an attacker who can write models makes).
    let b_f16 = write(dir.path(), "b_f16.safetensors", &file_a.to_f16());
    let mut changed = file_a.clone();
    match &mut changed.tensors.get_mut("embedding.bias").unwrap().values {
        TensorValues::F32(v) => v[0] += 0.5,
        other => panic!("{other:?}"),
    }
    let b_bias = write(dir.path(), "b_bias.safetensors", &changed);

    let opts = LoadOptions::default();
    let models_a = load_models(&det, &a, (320, 320), &opts).unwrap();
    // The id is the file's verified digest, stable across loads.
    let (_, digest_a) = ModelFile::read_with_digest(&a).unwrap();
    assert_eq!(models_a.recognizer_id, format!("sha256:{digest_a}"));
    assert_eq!(
        load_models(&det, &a, (320, 320), &opts)
            .unwrap()
            .recognizer_id,
        models_a.recognizer_id
    );
    let store_path = dir.path().join("templates.fgt");
    let mut store = TemplateStore::new(models_a.recognizer_id.clone(), models_a.dim).unwrap();
    let mut t = vec![0f32; models_a.dim];
    t[0] = 1.0;
    store.add_templates("owner", vec![t]).unwrap();
    let key = facegate::unlock::seal::DeviceKey::generate().unwrap();
    store.save(&store_path, &key).unwrap();
    load_unlock_store(&store_path, &key, &models_a.recognizer_id, models_a.dim)
        .expect("the store loads for its own recogniser file");

    for b in [&b_f16, &b_bias] {
        let file_b = ModelFile::read(b).unwrap();
        // What the store was bound to before: the same for both files.
        assert_eq!(file_b.source.sha256, file_a.source.sha256);
        let models_b = load_models(&det, b, (320, 320), &opts).unwrap();
        assert_ne!(models_b.recognizer_id, models_a.recognizer_id);
        let e = load_unlock_store(&store_path, &key, &models_b.recognizer_id, models_b.dim)
            .err()
            .unwrap_or_else(|| panic!("{} matched a store of another file", b.display()))
            .to_string();
        assert!(e.contains("re-enrol"), "{e}");
        assert!(e.contains(&store_path.display().to_string()), "{e}");
    }
    // Narrowing the f32 file to f16 on load is another recogniser too.
    let f16_opts = LoadOptions {
        precision: Some(facegate::format::Precision::F16),
        ..LoadOptions::default()
    };
    let narrowed = load_models(&det, &a, (320, 320), &f16_opts).unwrap();
    assert_eq!(
        narrowed.recognizer_id,
        format!("{}+f16", models_a.recognizer_id)
    );
    assert!(load_unlock_store(&store_path, &key, &narrowed.recognizer_id, narrowed.dim).is_err());
}

type Mutation = (&'static str, fn(&mut ModelFile));

fn mfn(m: &mut ModelFile) -> &mut facegate::format::MobileFaceNetConfig {
    match &mut m.config {
        ModelConfig::MobileFaceNet(c) => c,
        _ => panic!("not a recogniser"),
    }
}

fn scrfd(m: &mut ModelFile) -> &mut facegate::format::ScrfdConfig {
    match &mut m.config {
        ModelConfig::Scrfd(c) => c,
        _ => panic!("not a detector"),
    }
}

/// The first convolution's fields.
fn first_conv(m: &mut ModelFile) -> &mut Op {
    let g = match &mut m.config {
        ModelConfig::Scrfd(c) => &mut c.graph,
        ModelConfig::MobileFaceNet(c) => &mut c.graph,
        ModelConfig::Liveness(c) => &mut c.graph,
    };
    g.ops
        .iter_mut()
        .find(|op| matches!(op, Op::Conv { .. }))
        .unwrap()
}

fn set_conv(m: &mut ModelFile, f: impl FnOnce(&mut usize, &mut usize, &mut usize, &mut usize)) {
    if let Op::Conv {
        kernel,
        stride,
        pad,
        cin,
        ..
    } = first_conv(m)
    {
        f(kernel, stride, pad, cin)
    }
}

const RECOGNISER_CASES: &[Mutation] = &[
    ("clip min > max", |m| {
        let g = &mut mfn(m).graph;
        let act = g
            .ops
            .iter_mut()
            .find_map(|op| match op {
                Op::Conv { act, .. } if matches!(act, Act::Clip { .. }) => Some(act),
                _ => None,
            })
            .expect("a ReLU6");
        *act = Act::Clip { min: 6.0, max: 0.0 };
    }),
    ("clip NaN", |m| {
        if let Op::Conv { act, .. } = first_conv(m) {
            *act = Act::Clip {
                min: f32::NAN,
                max: 6.0,
            };
        }
    }),
    ("input_size 100000", |m| mfn(m).input_size = 100_000),
    ("input_size 0", |m| mfn(m).input_size = 0),
    ("dim 2^40", |m| mfn(m).dim = 1 << 40),
    ("embedding value out of range", |m| {
        mfn(m).embedding = 1_000_000
    }),
    ("embedding is the input", |m| mfn(m).embedding = 0),
    // (A NaN threshold is written as JSON null, which reads as "no threshold".)
    ("match threshold 1.5", |m| {
        mfn(m).match_threshold = Some(1.5)
    }),
    ("match threshold -1", |m| {
        mfn(m).match_threshold = Some(-1.0)
    }),
    ("std 0", |m| mfn(m).norm.std = 0.0),
    ("mean inf", |m| mfn(m).norm.mean = f32::INFINITY),
    ("kernel 2^40", |m| set_conv(m, |k, _, _, _| *k = 1 << 40)),
    ("stride 2^40", |m| set_conv(m, |_, s, _, _| *s = 1 << 40)),
    ("stride 0", |m| set_conv(m, |_, s, _, _| *s = 0)),
    ("pad 100000", |m| set_conv(m, |_, _, p, _| *p = 100_000)),
    ("pad 2^64-5", |m| {
        set_conv(m, |_, _, p, _| *p = usize::MAX - 4)
    }),
    ("input channels 0", |m| mfn(m).graph.input_channels = 0),
    ("op reads a later value", |m| {
        if let Op::Conv { input, .. } = first_conv(m) {
            *input = 1_000_000_000
        }
    }),
];

const DETECTOR_CASES: &[Mutation] = &[
    ("anchors_per_cell 0", |m| scrfd(m).anchors_per_cell = 0),
    ("anchors_per_cell 2^40", |m| {
        scrfd(m).anchors_per_cell = 1 << 40
    }),
    ("score output is the bbox output", |m| {
        let l = &mut scrfd(m).levels[0];
        l.score = l.bbox;
    }),
    ("kps output out of range", |m| {
        scrfd(m).levels[0].kps = Some(usize::MAX)
    }),
    ("level stride 0", |m| scrfd(m).levels[0].stride = 0),
    ("no level", |m| scrfd(m).levels.clear()),
    ("export_size [0,0]", |m| scrfd(m).export_size = Some([0, 0])),
    ("export_size [100000,100000]", |m| {
        scrfd(m).export_size = Some([100_000, 100_000])
    }),
    ("export_size not a multiple of the stride", |m| {
        scrfd(m).export_size = Some([33, 33])
    }),
    ("std NaN", |m| scrfd(m).norm.std = f32::NAN),
    ("std -1", |m| scrfd(m).norm.std = -1.0),
    ("mean 1e9", |m| scrfd(m).norm.mean = 1e9),
    ("input channels 4", |m| {
        scrfd(m).graph.input_channels = 4;
    }),
    ("upsample chain past the input", |m| {
        let g = &mut scrfd(m).graph;
        for _ in 0..70 {
            let last = g.ops.len();
            g.ops.push(Op::Upsample2x { input: last });
        }
    }),
];

#[test]
fn bad_metadata_is_a_one_line_error_at_load_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    for (model, cases) in [
        ("mobilefacenet_128_relu6", RECOGNISER_CASES),
        ("det_500m", DETECTOR_CASES),
    ] {
        let good = ModelFile::read(&common::model(model)).unwrap();
        for (i, (what, mutate)) in cases.iter().enumerate() {
            let mut m = good.clone();
            mutate(&mut m);
            let path = dir.path().join(format!("{model}-{i}.safetensors"));
            // The converter's side: refused, nothing written.
            let e = m
                .write(&path)
                .err()
                .unwrap_or_else(|| panic!("{what}: written"));
            assert!(e.to_string().contains("not written"), "{what}: {e}");
            assert!(!path.exists(), "{what}: a file was left");
            // A writer that does not check (digest recomputed): refused at load, one line.
            m.write_unvalidated(&path).unwrap();
            let e = if model.starts_with("det") {
                assert_refused_by_path(Scrfd::load(&path), &path, what)
            } else {
                assert_refused_by_path(Embedder::load(&path), &path, what)
            };
            assert!(!e.contains("integrity"), "{what}: reached the checks: {e}");
            eprintln!("{model} {what}: {e}");
        }
    }
}

/// A recogniser whose embedding layer is replaced: weights and bias as given.
fn recogniser_with_embedding(dir: &Path, name: &str, weight: f32, bias: f32) -> PathBuf {
    let mut m = ModelFile::read(&common::model("mobilefacenet_512")).unwrap();
    for (t, v) in [("embedding.weight", weight), ("embedding.bias", bias)] {
        match &mut m.tensors.get_mut(t).unwrap().values {
            TensorValues::F32(x) => x.iter_mut().for_each(|x| *x = v),
            other => panic!("{other:?}"),
        }
    }
    write(dir, name, &m)
}

#[test]
fn zero_and_infinite_embeddings_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let crop = image::RgbImage::from_fn(112, 112, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 2) as u8, ((x + y) % 256) as u8])
    });
    let good = Embedder::load(&common::model("mobilefacenet_512")).unwrap();
    let e = good.embed_crop(&crop).unwrap();
    let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "a real embedding: norm {norm}");
    for (name, w, b, what) in [
        ("zero.safetensors", 0.0, 0.0, "norm 0e0"),
        ("huge.safetensors", 0.0, 3.0e38, "norm inf"),
    ] {
        let p = recogniser_with_embedding(dir.path(), name, w, b);
        for opts in [LoadOptions::default(), LoadOptions::reference()] {
            let emb = Embedder::load_with(&p, &opts).unwrap();
            let e = emb
                .embed_crop(&crop)
                .err()
                .unwrap_or_else(|| panic!("{name}: an embedding came out"))
                .to_string();
            assert!(e.contains(what), "{name}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }
    // NaN values, whatever produced them.
    let mut v = vec![0.5f32; 512];
    v[7] = f32::NAN;
    let e = facegate::pipeline::check_embedding(&v)
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-finite") && e.contains("value 7"), "{e}");
    assert!(facegate::pipeline::check_embedding(&[0.0, 0.6, 0.8]).is_ok());
}

/// `path`'s model as the writer before digests wrote it: the same metadata and tensors,
/// without `digest_sha256`.
fn without_digest(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    assert!(meta.remove(facegate::format::DIGEST_KEY).is_some());
    safetensors::serialize(st.tensors(), Some(meta)).unwrap()
}

#[test]
fn a_file_from_before_digests_is_refused_and_the_demo_converts_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mobilefacenet_512.safetensors");
    std::fs::write(&out, without_digest(&common::model("mobilefacenet_512"))).unwrap();
    let e = assert_refused_by_path(MobileFaceNet::load(&out), &out, "no digest");
    assert!(
        e.contains("no integrity digest") && e.contains("quantize"),
        "{e}"
    );
    // The demo's converter sees a stale file and converts again rather than failing.
    let onnx = common::shared().join("models/onnx/mobilefacenet_512.onnx");
    assert!(facegate::unlock::app::ensure_converted(&onnx, &out).unwrap());
    MobileFaceNet::load(&out).expect("the new conversion loads");
    assert!(!facegate::unlock::app::ensure_converted(&onnx, &out).unwrap());
}

/// A cached int8 file is reused only when it was calibrated as it would be now: the same
/// file with another calibration stamp (an older recipe, another list) is converted again,
/// and f32 files carry no stamp.
#[test]
fn an_int8_file_calibrated_otherwise_is_not_reused() {
    use facegate::format::Precision;
    use facegate::unlock::app::Conversion;
    let shared = common::shared();
    let onnx = shared.join("models/onnx/mobilefacenet_512.onnx");
    let list = shared.join("data/faces/celeba_wild/calibration.txt");
    let int8 = common::model_int8("mobilefacenet_512");
    let how = Conversion::new(&onnx, Precision::Int8, Some(&list)).unwrap();
    assert!(how.is_done(&int8).unwrap());
    let mut file = ModelFile::read(&int8).unwrap();
    let stamp = file.source.calibration.clone().unwrap();
    assert!(
        stamp.contains(&format!("recipe {}", facegate::quant::RECIPE)),
        "{stamp}"
    );
    let dir = tempfile::tempdir().unwrap();
    for other in [
        Some(stamp.replace("recipe ", "recipe 0")),
        Some(stamp.replace("list sha256:", "list sha256:0")),
        None,
    ] {
        file.source.calibration = other.clone();
        let p = dir.path().join("rec_int8.safetensors");
        file.write(&p).unwrap();
        assert!(!how.is_done(&p).unwrap(), "{other:?} reused");
    }
    let f32_file = ModelFile::read(&common::model("mobilefacenet_512")).unwrap();
    assert_eq!(f32_file.source.calibration, None);
}
