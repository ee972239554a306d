//! Which table the CPU gets: the choice against the CPU's features read independently of
//! std's detection (/proc/cpuinfo, the aarch64 auxiliary vector).

use super::*;

/// Which table was chosen, and does it agree with the CPU's features read independently
/// (from /proc/cpuinfo on aarch64)?
#[test]
fn dispatch_matches_cpu() {
    let k = kernels();
    eprintln!("kernel table: {}", k.describe());
    let auto = Kernels::select(Mode::Auto);
    assert_eq!(
        Kernels::select(Mode::Generic).names.pw_i8,
        "generic_pw_i8_1x8"
    );
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        assert_eq!(
            auto.names.pw_f32.starts_with("avx2_") || auto.names.pw_f32.starts_with("avx512_"),
            avx2,
            "{}",
            auto.describe()
        );
        if !avx2 {
            eprintln!("SKIPPED: AVX2+FMA not on this CPU, generic table in use");
        }
        // VNNI read independently of std's detection, from the kernel's flags: AVX-512 VNNI
        // is preferred to AVX-VNNI.
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let has = |f: &str| flags.contains(&f);
        assert_eq!(
            auto.names.pw_f32.starts_with("avx512_"),
            avx2 && has("avx512f") && has("avx512dq"),
            "AVX-512 f32 GEMM vs /proc/cpuinfo: {}",
            auto.describe()
        );
        let want = if !avx2 {
            "generic_"
        } else if has("avx512f") && has("avx512_vnni") {
            "avx512vnni_"
        } else if has("avx_vnni") {
            "vnni_"
        } else {
            "avx2_"
        };
        assert!(
            auto.names.pw_i8.starts_with(want),
            "VNNI table vs /proc/cpuinfo (want {want}...): {}",
            auto.describe()
        );
        assert!(
            !Kernels::select(Mode::NoDotprod)
                .names
                .pw_i8
                .contains("vnni"),
            "nodotprod must not use VNNI"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        // Independent of std's detection: AT_HWCAP (16) from /proc/self/auxv, bit 20 =
        // HWCAP_ASIMDDP (qemu-user emulates auxv but shows the host's /proc/cpuinfo).
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        let hwcap = auxv.chunks_exact(16).find_map(|e| {
            let t = u64::from_ne_bytes(e[..8].try_into().unwrap());
            (t == 16).then(|| u64::from_ne_bytes(e[8..].try_into().unwrap()))
        });
        let has_dot = match hwcap {
            Some(h) => h & (1 << 20) != 0,
            None => {
                let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
                cpuinfo
                    .lines()
                    .filter(|l| l.starts_with("Features"))
                    .any(|l| l.split_whitespace().any(|f| f == "asimddp"))
            }
        };
        eprintln!(
            "AT_HWCAP = {:?}: asimddp = {has_dot}; is_aarch64_feature_detected!(dotprod) = {}",
            hwcap.map(|h| format!("{h:#x}")),
            std::arch::is_aarch64_feature_detected!("dotprod")
        );
        assert!(
            auto.names.pw_f32.starts_with("neon_"),
            "{}",
            auto.describe()
        );
        assert_eq!(
            auto.names.pw_i8.starts_with("neon_dot_"),
            has_dot,
            "dotprod table vs cpuinfo: {}",
            auto.describe()
        );
        let nodot = Kernels::select(Mode::NoDotprod);
        assert!(
            !nodot.names.pw_i8.starts_with("neon_dot_"),
            "{}",
            nodot.describe()
        );
        // f16 arithmetic: AT_HWCAP bit 10 = HWCAP_ASIMDHP (half-precision NEON).
        let has_fp16 = hwcap.map(|h| h & (1 << 10) != 0).unwrap_or_else(|| {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            cpuinfo
                .lines()
                .filter(|l| l.starts_with("Features"))
                .any(|l| l.split_whitespace().any(|f| f == "asimdhp"))
        });
        eprintln!(
            "asimdhp = {has_fp16}; is_aarch64_feature_detected!(fp16) = {}",
            std::arch::is_aarch64_feature_detected!("fp16")
        );
        assert_eq!(
            auto.f16.is_some(),
            has_fp16,
            "f16 kernels vs AT_HWCAP: {}",
            auto.describe()
        );
        assert!(nodot.f16.is_none(), "nodotprod: {}", nodot.describe());
    }
    let _ = auto;
}
