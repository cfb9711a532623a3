//! Compiles the BPF C probes in probes/bpf/ with clang into OUT_DIR, where the
//! agent embeds them with include_bytes!.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const OBJECTS: [&str; 7] = [
    "tail_call",
    "bpf2bpf_tail_mix",
    "fentry_tc",
    "seed_tcpconn",
    "seed_fentry_fexit_tc",
    "seed_seccomp",
    "tc_pass",
];
const MULTIARCH_INCLUDE: &str = "/usr/include/x86_64-linux-gnu";
const INSTALL_HINT: &str =
    "install Debian's clang and libbpf-dev (apt-get install clang libbpf-dev)";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest.join("../bpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = env::var("BPFMATRIX_CLANG").unwrap_or_else(|_| "clang".to_string());

    println!("cargo:rerun-if-env-changed=BPFMATRIX_CLANG");
    for name in OBJECTS {
        println!(
            "cargo:rerun-if-changed={}",
            bpf_dir.join(format!("{name}.c")).display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        bpf_dir.join("legacy_maps.h").display()
    );

    match Command::new(&clang).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => fail(&format!("clang not found: {INSTALL_HINT}")),
    }
    for header in [
        "bpf/bpf_helpers.h",
        "bpf/bpf_core_read.h",
        "bpf/bpf_tracing.h",
        "bpf/bpf_endian.h",
        "linux/bpf.h",
        "asm/ptrace.h",
    ] {
        let found = [Path::new("/usr/include"), Path::new(MULTIARCH_INCLUDE)]
            .iter()
            .any(|dir| dir.join(header).exists());
        if !found {
            fail(&format!("header <{header}> missing: {INSTALL_HINT}"));
        }
    }

    for name in OBJECTS {
        let src = bpf_dir.join(format!("{name}.c"));
        let obj = out_dir.join(format!("{name}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86"])
            .arg(format!("-I{MULTIARCH_INCLUDE}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => fail(&format!("clang failed ({s}) compiling {}", src.display())),
            Err(e) => fail(&format!("clang not found ({e}): {INSTALL_HINT}")),
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    println!("cargo:warning={msg}");
    std::process::exit(1);
}
