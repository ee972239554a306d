//! Compiles tools/onnx-proto/onnx.proto3 into Rust types with protox + prost-build and writes
//! them to the path given (src/onnx_proto.rs). Usage: onnx-proto PROTO OUT_FILE

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, proto, out] = &args[..] else {
        eprintln!("usage: onnx-proto PROTO OUT_FILE");
        std::process::exit(2);
    };
    let proto = std::path::Path::new(proto);
    let dir = proto.parent().expect("proto file has a folder");
    let fds = protox::compile([proto], [dir]).unwrap_or_else(|e| panic!("{e}"));
    let tmp = std::env::temp_dir().join(format!("onnx-proto-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    prost_build::Config::new()
        .out_dir(&tmp)
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("prost-build: {e}"));
    std::fs::copy(tmp.join("onnx.rs"), out).unwrap_or_else(|e| panic!("{out}: {e}"));
    let _ = std::fs::remove_dir_all(&tmp);
    println!("wrote {out}");
}
