//! Compiles bpf/count.c with clang into OUT_DIR/count.o, which src/lib.rs embeds.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const MULTIARCH_INCLUDE: &str = "/usr/include/x86_64-linux-gnu";
const INSTALL_HINT: &str =
    "install Debian's clang and libbpf-dev (apt-get install clang libbpf-dev)";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let src = manifest.join("bpf/count.c");
    let obj = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("count.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed={}", src.display());

    match Command::new(&clang).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => fail(&format!("clang not found: {INSTALL_HINT}")),
    }
    for header in [
        "bpf/bpf_helpers.h",
        "bpf/bpf_endian.h",
        "linux/bpf.h",
        "asm/types.h",
    ] {
        let found = [Path::new("/usr/include"), Path::new(MULTIARCH_INCLUDE)]
            .iter()
            .any(|dir| dir.join(header).exists());
        if !found {
            fail(&format!("header <{header}> missing: {INSTALL_HINT}"));
        }
    }

    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf"])
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

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    println!("cargo:warning={msg}");
    std::process::exit(1);
}
