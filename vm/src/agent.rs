//! Builds the guest agent (crate bpfmatrix-agent) as a static x86_64 binary, in a
//! target directory of its own so the host build's flags and caches never mix with
//! the guest's.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root (this crate lives in `<workspace>/vm`).
fn workspace_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the agent with `cargo build --release` and returns the binary's path.
/// Cargo's output is passed to `progress` (and put into the error) only when the
/// build fails; a successful build says one line.
pub fn build_agent(progress: &mut dyn FnMut(&str)) -> anyhow::Result<PathBuf> {
    if which::which("clang").is_err() {
        bail!("clang not found: the BPF probes are compiled with clang; install Debian's clang and libbpf-dev");
    }
    let workspace = workspace_dir();
    let target_dir = workspace.join("target").join("guest");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    progress("building the guest agent (cargo build --release -p bpfmatrix-agent)");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "-p",
            "bpfmatrix-agent",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        // Flags meant for the host build (or a test runner's) must not leak into the
        // guest's; the agent is PID 1 of an initramfs with no libc, so it is static.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot run {}: is cargo installed?",
            Path::new(&cargo).display()
        )
    })?;
    // Read stderr while cargo runs so a chatty build cannot fill the pipe and stall.
    let stderr = child.stderr.take().expect("stderr is piped");
    let lines: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    let status = child.wait()?;
    if !status.success() {
        for line in &lines {
            progress(line);
        }
        let tail = lines
            .iter()
            .rev()
            .take(40)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        bail!("building the guest agent failed ({status}):\n{tail}");
    }
    let binary = target_dir
        .join(TARGET)
        .join("release")
        .join("bpfmatrix-agent");
    if !binary.is_file() {
        bail!(
            "cargo reported success but {} does not exist",
            binary.display()
        );
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    #[test]
    fn workspace_dir_holds_the_agent_crate() {
        assert!(super::workspace_dir()
            .join("probes/agent/Cargo.toml")
            .is_file());
    }
}
