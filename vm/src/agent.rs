//! Builds the guest agent (crate bpfmatrix-agent) as a static x86_64 binary, in a
//! target directory of its own so the host build's flags and caches never mix with
//! the guest's.
//!
//! The agent's sources (the `probes` and `probes/agent` crates, the BPF C programs,
//! `Cargo.lock`) are compiled into bpfmatrix itself, so a binary needs no source
//! tree at run time (`cargo install`, or a binary copied anywhere) and always builds
//! the agent that speaks its own protocol, never whatever a folder holds today.
//! Cargo and clang are still needed at run time: the agent is built on first use
//! (the BPF programs are compiled by clang in the agent's build script, for the
//! clang and headers of the machine that runs them).
//!
//! Where: the agent's home is `<workspace>/target/guest` for a bpfmatrix that runs
//! from its own source tree's `target/` (`cargo run`, `cargo test`), else
//! `<cache>/agent` (see `bpfmatrix_kernels::cache_dir`). In it:
//!
//! - `src/`: the sources, with a workspace manifest of their own, unpacked through
//!   a temporary folder renamed into place (an interrupted unpack is never taken for
//!   a finished one); `src/.sources-hash`, written last, names the sources it holds,
//!   and other sources replace them. The folder keeps one path on purpose: cargo
//!   tells a path crate's changes by the mtimes of the files its last build read,
//!   so sources unpacked beside the old ones (a `src-<hash>` per version) were
//!   taken for up to date and the old agent was linked again (seen when the
//!   protocol crate gained cases).
//! - cargo's target directory is the home itself, so a new version of the agent
//!   rebuilds the agent, not its dependencies.
//! - `bin/bpfmatrix-agent-<hash>`: the built agent, copied there through a rename,
//!   so a second bpfmatrix building different sources never swaps the binary under
//!   a run that is still packing guests with it.
//! - `lock`: held from the unpack to the copy; a second bpfmatrix waits for it.

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// `(path in the workspace, content)` for every file of the agent's sources.
macro_rules! sources {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!("../../", $path)) as &[u8])),*]
    };
}

/// The agent's sources as compiled into bpfmatrix. A test checks that every file
/// under `probes/` is here.
const SOURCES: &[(&str, &[u8])] = sources![
    "Cargo.lock",
    "probes/Cargo.toml",
    "probes/src/lib.rs",
    "probes/src/verifier_log.rs",
    "probes/agent/src/check.rs",
    "probes/agent/src/elf.rs",
    "probes/agent/src/exec.rs",
    "probes/agent/src/verifier.rs",
    "probes/agent/Cargo.toml",
    "probes/agent/build.rs",
    "probes/agent/src/cases.rs",
    "probes/agent/src/hosted.rs",
    "probes/agent/src/kprobe_events.rs",
    "probes/agent/src/main.rs",
    "probes/agent/src/objects.rs",
    "probes/agent/src/prog_tracing.rs",
    "probes/agent/src/relocated.rs",
    "probes/agent/src/seeds.rs",
    "probes/agent/src/sys.rs",
    "probes/agent/src/waiting.rs",
    "probes/bpf/bpf2bpf_tail_mix.c",
    "probes/bpf/fentry_tc.c",
    "probes/bpf/legacy_maps.h",
    "probes/bpf/seed_fentry_fexit_tc.c",
    "probes/bpf/seed_seccomp.c",
    "probes/bpf/seed_tcpconn.c",
    "probes/bpf/tail_call.c",
    "probes/bpf/tc_pass.c",
];

/// The project's workspace manifest: [`workspace_manifest`] keeps what the agent's
/// crates inherit from it.
const ROOT_MANIFEST: &str = include_str!("../../Cargo.toml");

/// The crates of the agent's workspace.
const MEMBERS: [&str; 2] = ["probes", "probes/agent"];

/// The workspace manifest written beside the sources: the project's, reduced to the
/// agent's crates. Members, the inherited `[workspace.package]` and
/// `[workspace.dependencies]` (without path dependencies outside them), profiles and
/// patches are kept; the root package, its targets and dependencies are not.
fn workspace_manifest() -> anyhow::Result<String> {
    let root: toml::Table = toml::from_str(ROOT_MANIFEST).context("the root Cargo.toml")?;
    let mut workspace = root
        .get("workspace")
        .and_then(toml::Value::as_table)
        .cloned()
        .context("the root Cargo.toml has no [workspace]")?;
    workspace.insert(
        "members".into(),
        toml::Value::Array(MEMBERS.iter().map(|m| (*m).into()).collect()),
    );
    workspace.remove("default-members");
    workspace.remove("exclude");
    if let Some(deps) = workspace
        .get_mut("dependencies")
        .and_then(toml::Value::as_table_mut)
    {
        deps.retain(|_, dep| {
            let path = dep.get("path").and_then(toml::Value::as_str);
            path.is_none_or(|p| MEMBERS.contains(&p))
        });
    }
    let mut manifest = toml::Table::new();
    manifest.insert("workspace".into(), toml::Value::Table(workspace));
    for key in ["profile", "patch", "replace"] {
        if let Some(value) = root.get(key) {
            manifest.insert(key.into(), value.clone());
        }
    }
    Ok(format!(
        "# Written by bpfmatrix: the guest agent's workspace, from the sources compiled into it.\n{}",
        toml::to_string(&manifest)?
    ))
}

/// The first 16 hex digits of the SHA-256 of the sources and the manifest.
fn sources_hash(manifest: &str) -> String {
    let mut h = Sha256::new();
    for (path, content) in [("Cargo.toml", manifest.as_bytes())]
        .into_iter()
        .chain(SOURCES.iter().copied())
    {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((content.len() as u64).to_le_bytes());
        h.update(content);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The workspace this crate was compiled in.
fn compile_time_workspace() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

/// Where the agent is built: `<workspace>/target/guest` when `exe` (the running
/// binary) lies in `<workspace>/target`, else `<cache>/agent`.
fn home_for(exe: Option<&Path>, workspace: &Path, cache: &Path) -> PathBuf {
    let canonical = |p: &Path| p.canonicalize().ok();
    match (
        exe.and_then(canonical),
        canonical(&workspace.join("target")),
    ) {
        (Some(exe), Some(target)) if exe.starts_with(&target) => target.join("guest"),
        _ => cache.join("agent"),
    }
}

fn agent_home() -> PathBuf {
    home_for(
        std::env::current_exe().ok().as_deref(),
        &compile_time_workspace(),
        &bpfmatrix_kernels::cache_dir(),
    )
}

/// An exclusive lock on `home/lock`, held until dropped.
fn lock_home(
    home: &Path,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<bpfmatrix_kernels::DirLock> {
    bpfmatrix_kernels::lock_dir(home, &mut || {
        progress("waiting for another bpfmatrix building the guest agent")
    })
}

/// With `home` locked: the agent's workspace `home/src`, holding these sources
/// (unpacked unless it holds them already), and their hash. Temporary folders left
/// by a killed unpack are removed.
fn unpack(home: &Path, progress: &mut dyn FnMut(&str)) -> anyhow::Result<(PathBuf, String)> {
    let manifest = workspace_manifest()?;
    let hash = sources_hash(&manifest);
    let dir = home.join("src");
    let marker = dir.join(".sources-hash");
    for entry in std::fs::read_dir(home)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // A killed unpack's leftovers, and the per-version folders of older
        // bpfmatrix releases (src-<hash>), which nothing reads any more.
        if (name.starts_with("src") && name.contains(".tmp.")) || name.starts_with("src-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    if std::fs::read_to_string(&marker).is_ok_and(|h| h == hash) {
        return Ok((dir, hash));
    }
    progress(&format!(
        "unpacking the guest agent's sources into {}",
        dir.display()
    ));
    let tmp = home.join(format!("src.tmp.{}", std::process::id()));
    let files = [("Cargo.toml", manifest.as_bytes())]
        .into_iter()
        .chain(SOURCES.iter().copied());
    for (path, content) in files {
        let target = tmp.join(path);
        std::fs::create_dir_all(target.parent().expect("a file in a folder"))?;
        std::fs::write(&target, content)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the old sources in {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    std::fs::write(&marker, &hash).with_context(|| format!("cannot write {}", marker.display()))?;
    Ok((dir, hash))
}

/// Builds the agent with `cargo build --release` from the sources compiled into
/// bpfmatrix and returns the binary's path. Cargo's output is passed to `progress`
/// (and put into the error) only when the build fails; a successful build says one
/// line.
pub fn build_agent(progress: &mut dyn FnMut(&str)) -> anyhow::Result<PathBuf> {
    if which::which("clang").is_err() {
        bail!("clang not found: the BPF probes are compiled with clang; install Debian's clang and libbpf-dev");
    }
    build_agent_in(&agent_home(), progress)
}

fn build_agent_in(home: &Path, progress: &mut dyn FnMut(&str)) -> anyhow::Result<PathBuf> {
    // A binary of these very sources is only ever put in place whole (a rename,
    // below): cargo would find nothing to do, and asking it costs a warm run
    // about 50 ms.
    let built_before = agent_path(home, &sources_hash(&workspace_manifest()?));
    if built_before.is_file() {
        return Ok(built_before);
    }
    let _lock = lock_home(home, progress)?;
    let (workspace, hash) = unpack(home, progress)?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    progress(&format!(
        "building the guest agent (cargo build --release -p bpfmatrix-agent, in {})",
        home.display()
    ));
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "-p",
            "bpfmatrix-agent",
            "--target",
            TARGET,
        ])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(home)
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
            "cannot run {}: bpfmatrix builds its guest agent with cargo on first use; install Rust (rustup.rs) or put cargo on PATH",
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
    let built = home.join(TARGET).join("release").join("bpfmatrix-agent");
    if !built.is_file() {
        bail!(
            "cargo reported success but {} does not exist",
            built.display()
        );
    }
    let agent = agent_path(home, &hash);
    let bin = agent.parent().expect("bin/ holds the agent");
    std::fs::create_dir_all(bin)?;
    let tmp = bin.join(format!("bpfmatrix-agent-{hash}.tmp.{}", std::process::id()));
    std::fs::copy(&built, &tmp)
        .with_context(|| format!("cannot copy {} to {}", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, &agent)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), agent.display()))?;
    Ok(agent)
}

/// Where the agent built from the sources of hash `hash` is kept.
fn agent_path(home: &Path, hash: &str) -> PathBuf {
    home.join("bin").join(format!("bpfmatrix-agent-{hash}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_built_from_these_sources_is_taken_as_it_is() {
        let home = tempfile::tempdir().unwrap();
        let agent = agent_path(home.path(), &sources_hash(&workspace_manifest().unwrap()));
        std::fs::create_dir_all(agent.parent().unwrap()).unwrap();
        std::fs::write(&agent, b"built before").unwrap();
        let mut said = Vec::new();
        let got = build_agent_in(home.path(), &mut |l| said.push(l.to_string())).unwrap();
        assert_eq!(got, agent);
        // Nothing unpacked, nothing built, nothing said.
        assert!(!home.path().join("src").exists());
        assert_eq!(said, Vec::<String>::new());
    }

    /// Every file under probes/ (where the agent's crates live) is compiled in: a
    /// new source file must be added to SOURCES, or installed binaries would build
    /// an agent without it.
    #[test]
    fn every_file_of_the_agents_crates_is_compiled_in() {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n != "target") {
                        walk(&path, root, out);
                    }
                } else {
                    out.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let root = compile_time_workspace();
        let mut on_disk = Vec::new();
        walk(&root.join("probes"), &root, &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = SOURCES
            .iter()
            .map(|(p, _)| p.to_string())
            .filter(|p| p.starts_with("probes/"))
            .collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "vm/src/agent.rs's SOURCES must list exactly the files under probes/"
        );
        for (path, content) in SOURCES {
            assert_eq!(&std::fs::read(root.join(path)).unwrap(), content, "{path}");
        }
    }

    #[test]
    fn the_agents_workspace_holds_only_the_agents_crates() {
        let text = workspace_manifest().unwrap();
        let manifest: toml::Table = toml::from_str(&text).unwrap();
        assert!(manifest.get("package").is_none());
        assert!(manifest.get("dependencies").is_none());
        let workspace = manifest["workspace"].as_table().unwrap();
        assert_eq!(
            workspace["members"].as_array().unwrap(),
            &vec![toml::Value::from("probes"), "probes/agent".into()]
        );
        assert!(workspace.get("default-members").is_none());
        // What the agent's crates inherit is there; no path outside them is.
        for (name, dep) in workspace["dependencies"].as_table().unwrap() {
            if let Some(path) = dep.get("path") {
                assert_eq!(path.as_str(), Some("probes"), "{name}");
            }
        }
        for inherited in ["nix", "serde", "serde_json", "anyhow", "bpfmatrix-protocol"] {
            assert!(
                workspace["dependencies"].get(inherited).is_some(),
                "{inherited}"
            );
        }
        assert!(workspace["package"].get("edition").is_some());
        assert!(manifest["profile"]["release"].get("opt-level").is_some());
    }

    #[test]
    fn unpacking_is_done_once_and_never_leaves_a_partial_folder_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        let (src, hash) = unpack(home, &mut |_| {}).unwrap();
        assert_eq!(src, home.join("src"));
        assert_eq!(hash.len(), 16);
        assert!(src.join("probes/agent/build.rs").is_file());
        assert_eq!(
            std::fs::read(src.join("Cargo.lock")).unwrap(),
            include_bytes!("../../Cargo.lock")
        );
        // A second unpack finds it (and says nothing); a killed one's leftovers go.
        std::fs::write(src.join("probes/src/lib.rs"), b"changed by cargo").unwrap();
        let stale = home.join("src.tmp.999999999");
        std::fs::create_dir_all(stale.join("probes")).unwrap();
        let mut said = Vec::new();
        let (again, _) = unpack(home, &mut |m| said.push(m.to_owned())).unwrap();
        assert_eq!(again, src);
        assert!(said.is_empty(), "{said:?}");
        assert!(!stale.exists());
        assert_eq!(
            std::fs::read(src.join("probes/src/lib.rs")).unwrap(),
            b"changed by cargo"
        );
        // Other sources (another bpfmatrix) replace them in the same folder, so
        // cargo sees new mtimes at the paths its last build read.
        std::fs::write(src.join(".sources-hash"), b"another version").unwrap();
        std::fs::write(src.join("left-over.rs"), b"").unwrap();
        let mut said = Vec::new();
        let (again, _) = unpack(home, &mut |m| said.push(m.to_owned())).unwrap();
        assert_eq!(again, src);
        assert_eq!(said.len(), 1, "{said:?}");
        assert_ne!(
            std::fs::read(src.join("probes/src/lib.rs")).unwrap(),
            b"changed by cargo"
        );
        assert!(!src.join("left-over.rs").exists());
        assert_eq!(
            std::fs::read_to_string(src.join(".sources-hash")).unwrap(),
            hash
        );
    }

    #[test]
    fn concurrent_unpacks_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_path_buf();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let home = home.clone();
                std::thread::spawn(move || {
                    let _lock = lock_home(&home, &mut |_| {}).unwrap();
                    unpack(&home, &mut |_| {}).unwrap().0
                })
            })
            .collect();
        let dirs: Vec<PathBuf> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(dirs.windows(2).all(|w| w[0] == w[1]));
        let entries: Vec<String> = std::fs::read_dir(&home)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries.len(), 2, "{entries:?}"); // lock and src
    }

    #[test]
    fn a_binary_in_its_source_trees_target_builds_there_any_other_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(ws.join("target/release")).unwrap();
        let exe = ws.join("target/release/bpfmatrix");
        std::fs::write(&exe, b"").unwrap();
        assert_eq!(
            home_for(Some(&exe), &ws, &cache),
            ws.canonicalize().unwrap().join("target/guest")
        );
        let elsewhere = dir.path().join("bpfmatrix");
        std::fs::write(&elsewhere, b"").unwrap();
        assert_eq!(home_for(Some(&elsewhere), &ws, &cache), cache.join("agent"));
        // The source tree is gone: the cache.
        std::fs::remove_dir_all(&ws).unwrap();
        assert_eq!(home_for(Some(&exe), &ws, &cache), cache.join("agent"));
        assert_eq!(home_for(None, &ws, &cache), cache.join("agent"));
    }
}
