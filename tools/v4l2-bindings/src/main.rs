//! Writes the bindgen output of `<linux/videodev2.h>` for each target facegate ships, exactly as
//! v4l2-sys-mit 0.3.0's build script would, so the vendored crate needs no libclang at build time.
//! Usage: v4l2-bindings WRAPPER_H OUT_DIR

use std::path::PathBuf;

/// (target arch as in `cfg(target_arch)`, clang target triple, extra include directory)
const TARGETS: &[(&str, &str, Option<&str>)] = &[
    ("x86_64", "x86_64-linux-gnu", None),
    // The cross sysroot of Debian's gcc-aarch64-linux-gnu / linux-libc-dev-arm64-cross.
    ("aarch64", "aarch64-linux-gnu", Some("/usr/aarch64-linux-gnu/include")),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, wrapper, out] = &args[..] else {
        eprintln!("usage: v4l2-bindings WRAPPER_H OUT_DIR");
        std::process::exit(2);
    };
    for (arch, triple, include) in TARGETS {
        let mut b = bindgen::Builder::default()
            .header(wrapper.as_str())
            .clang_arg(format!("--target={triple}"));
        if let Some(inc) = include {
            b = b.clang_arg(format!("-isystem{inc}"));
        }
        let path = PathBuf::from(out).join(format!("bindings_{arch}.rs"));
        b.generate()
            .unwrap_or_else(|e| panic!("bindgen for {triple}: {e}"))
            .write_to_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        println!("wrote {}", path.display());
    }
}
