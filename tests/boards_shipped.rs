//! Every board profile as it ships (its int8 models, its committed threshold file, its policy
//! and liveness settings) on the recorded clips, through the real binary: the hamilton replay
//! unlocks for the owner enrolled from one photo, and the webcam stranger stays locked with
//! every example person enrolled. Under qemu (`scripts/test.sh aarch64`) only the Raspberry Pi
//! 4's profile runs: the emulated Cortex-A72 is that board's CPU.
//!
//! The int8 files are the ones `facegate demo` converts into `models/` (made here when missing,
//! see `common::model_int8`); the boards name them relative to the project root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

const LIVE_MODEL: &str = "antispoof_print_replay_1.5_128";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn boards() -> Vec<PathBuf> {
    if common::emulated() {
        return vec![root().join("boards/rpi4.toml")];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("boards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "{v:?}");
    v
}

fn facegate(args: &[&str]) -> Output {
    let out = common::bin_command(env!("CARGO_BIN_EXE_facegate"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    eprintln!(
        "$ facegate {}\n-> {:?}\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn enrol(board: &Path, store: &Path, user: &str, folder: &Path) {
    let src = format!("images:{}", folder.display());
    let o = facegate(&[
        "enroll",
        "--board",
        board.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--user",
        user,
        "--source",
        &src,
    ]);
    assert!(
        o.status.success(),
        "enrolling {user} with {}",
        board.display()
    );
}

fn unlock_once(board: &Path, store: &Path, clip: &str) -> Output {
    let src = format!(
        "mjpeg:{}",
        common::shared().join("data/video").join(clip).display()
    );
    facegate(&[
        "unlock",
        "--board",
        board.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--source",
        &src,
        "--once",
    ])
}

fn unlocks(o: &Output) -> usize {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("frame ") && l.contains("UNLOCK"))
        .count()
}

#[test]
fn every_board_with_its_shipped_models_opens_for_the_owner_only() {
    // The files the boards name, converted as the demo converts them.
    for name in ["det_500m", "mobilefacenet_512", LIVE_MODEL] {
        common::model_int8(name);
    }
    let examples = common::shared().join("data/faces/examples");
    for board in boards() {
        let text = std::fs::read_to_string(&board).unwrap();
        assert!(
            text.contains("\"models/det_500m_int8.safetensors\"")
                && text.contains("\"models/mobilefacenet_512_int8.safetensors\"")
                && text.contains(&format!("\"models/{LIVE_MODEL}_int8.safetensors\"")),
            "{} does not ship the int8 models",
            board.display()
        );
        let dir = tempfile::tempdir().unwrap();

        let owner = dir.path().join("owner/templates.fgt");
        enrol(&board, &owner, "lin", &examples.join("lin_manuel_miranda"));
        let o = unlock_once(&board, &owner, "hamilton_640x360.mjpeg");
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: the owner's replay did not unlock",
            board.display()
        );
        assert_eq!(unlocks(&o), 1);

        let all = dir.path().join("all/templates.fgt");
        for (user, folder) in facegate::unlock::app::example_people(&examples).unwrap() {
            enrol(&board, &all, &user, &folder);
        }
        let o = unlock_once(&board, &all, "webcam_talking_640x360.mjpeg");
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}: the stranger's replay unlocked",
            board.display()
        );
        assert_eq!(unlocks(&o), 0);
    }
}
