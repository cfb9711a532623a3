//! Saves a guest's whole state once its agent is up and waiting for its plan, and
//! starts later guests of the same kind from that state instead of booting them.
//!
//! The state is QEMU's migration stream written to a file (`migrate
//! "exec:cat > FILE"`; Debian 12's QEMU 7.2 has no `file:` URI, which came in
//! 8.2) and read back with `-incoming "exec:cat FILE"`. The guest stops in the
//! middle of reading its plan from the result port, so a restored guest goes on
//! reading: the host hands it the plan and reads its results as after a boot.
//!
//! A snapshot is only as good as its key ([`Key`]): everything that shapes the
//! guest goes into it (the kernel image, the initramfs's bytes with the agent and
//! modules in it, QEMU's binary, memory, accelerator, the command line). Snapshots
//! live in `<cache>/snapshots/` as `KEY.state` with `KEY.json` beside it (its
//! length and what it was taken of); the state is written under a name of its
//! own and renamed into place after its sidecar, so two runs sharing a cache
//! never read a half-written one and a file whose length is not the sidecar's is
//! thrown away before QEMU sees it.

use crate::qemu::{Accel, BootSpec, Handshake};
use crate::supervisor::{AccelUsed, BootEnd, BootOutcome, VmEvent};
use anyhow::{bail, Context, Result};
use bpfmatrix_protocol::GuestMessage;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bumped when what a snapshot holds or how it is keyed changes.
const FORMAT: &str = "bpfmatrix-snapshot/1";

/// What a snapshot is of: its key names every input; the parts are kept in its
/// sidecar for whoever wonders what a file in the cache is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub hex: String,
    pub kernel: String,
    pub accel: AccelUsed,
    /// The kind of guest ([`KeyParts::kind`]): a new state replaces the old ones
    /// of its kernel, accelerator and kind only.
    pub kind: String,
}

/// The inputs of a [`Key`].
pub struct KeyParts<'a> {
    /// The kernel's name (for the file's sidecar) and the image QEMU boots.
    pub kernel_name: &'a str,
    pub boot_image: &'a Path,
    /// The initramfs, hashed by content (it is rebuilt for every run).
    pub initramfs: &'a Path,
    pub qemu: &'a Path,
    pub accel: AccelUsed,
    /// The kind of guest: "cases" (run, check), "exec" (a guest with the host's
    /// root shared). Each kind keeps its own state, so alternating `run` and
    /// `exec` does not make each boot in turn.
    pub kind: &'a str,
    /// QEMU's arguments with every per-run path (sockets, the initramfs's temporary
    /// name) left out: memory, CPU, devices, kernel command line.
    pub args: &'a [OsString],
}

impl Key {
    pub fn new(parts: &KeyParts<'_>) -> Result<Key> {
        let mut h = Sha256::new();
        h.update(FORMAT);
        // Cached kernels and installed QEMUs are never rewritten in place, so a
        // path, a length and a time name their content without reading 60 MB.
        for file in [parts.boot_image, parts.qemu] {
            let meta = std::fs::metadata(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            h.update(file.as_os_str().as_encoded_bytes());
            h.update(meta.len().to_le_bytes());
            h.update(meta.mtime().to_le_bytes());
            h.update(meta.mtime_nsec().to_le_bytes());
            h.update([0]);
        }
        let initramfs = std::fs::read(parts.initramfs)
            .with_context(|| format!("cannot read {}", parts.initramfs.display()))?;
        h.update(Sha256::digest(&initramfs));
        h.update(parts.accel.to_string());
        for arg in parts.args {
            h.update(arg.as_encoded_bytes());
            h.update([0]);
        }
        let hex: String = h
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Key {
            hex,
            kernel: parts.kernel_name.to_string(),
            accel: parts.accel,
            kind: parts.kind.to_string(),
        })
    }
}

/// A snapshot's sidecar.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Sidecar {
    format: String,
    kernel: String,
    accel: String,
    /// Absent in sidecars written before guests had kinds: those were "cases".
    #[serde(default = "cases")]
    kind: String,
    bytes: u64,
}

fn cases() -> String {
    "cases".into()
}

/// The snapshots of one cache.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    /// `<cache>/snapshots`.
    pub fn in_cache() -> Store {
        Store::new(bpfmatrix_kernels::cache_dir().join("snapshots"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.state", key.hex))
    }

    fn sidecar_path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex))
    }

    /// The snapshot for `key`, if there is a whole one. One whose length is not
    /// its sidecar's (cut short by a full disk, a crash, a hand) is discarded, and
    /// why is returned instead.
    pub fn find(&self, key: &Key) -> Result<Option<PathBuf>, String> {
        let state = self.state_path(key);
        let Ok(meta) = std::fs::metadata(&state) else {
            return Ok(None);
        };
        let sidecar: Option<Sidecar> = std::fs::read(self.sidecar_path(key))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match sidecar {
            Some(s) if s.format == FORMAT && s.bytes == meta.len() => Ok(Some(state)),
            Some(s) => {
                self.discard(key);
                Err(format!(
                    "the saved state {} is {} bytes, its sidecar says {}: discarded",
                    state.display(),
                    meta.len(),
                    s.bytes
                ))
            }
            None => {
                self.discard(key);
                Err(format!(
                    "the saved state {} has no readable sidecar: discarded",
                    state.display()
                ))
            }
        }
    }

    /// Removes a snapshot (a missing one is no error).
    pub fn discard(&self, key: &Key) {
        let _ = std::fs::remove_file(self.state_path(key));
        let _ = std::fs::remove_file(self.sidecar_path(key));
    }

    /// A file to save a new snapshot into, under a name no other run uses.
    pub fn begin(&self, key: &Key) -> Result<Pending> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let file = tempfile::Builder::new()
            .prefix(&format!(".{}-", key.hex))
            .suffix(".partial")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot create a file in {}", self.dir.display()))?;
        Ok(Pending {
            store: self.clone(),
            key: key.clone(),
            file: file.into_temp_path(),
        })
    }
}

/// A snapshot being written; dropped without [`Pending::commit`], its file goes.
pub struct Pending {
    store: Store,
    key: Key,
    file: tempfile::TempPath,
}

impl Pending {
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Puts the written state in place: sidecar first, then the state renamed
    /// over whatever another run put there (each is whole). Returns its length.
    pub fn commit(self) -> Result<u64> {
        let bytes = std::fs::metadata(&self.file)
            .with_context(|| format!("cannot read {}", self.file.display()))?
            .len();
        if bytes == 0 {
            bail!("QEMU wrote an empty state");
        }
        let sidecar = Sidecar {
            format: FORMAT.to_string(),
            kernel: self.key.kernel.clone(),
            accel: self.key.accel.to_string(),
            kind: self.key.kind.clone(),
            bytes,
        };
        let side_tmp = tempfile::NamedTempFile::new_in(&self.store.dir)?;
        std::fs::write(side_tmp.path(), serde_json::to_vec_pretty(&sidecar)?)?;
        side_tmp
            .persist(self.store.sidecar_path(&self.key))
            .context("cannot put the snapshot's sidecar in place")?;
        self.file
            .persist(self.store.state_path(&self.key))
            .context("cannot put the snapshot in place")?;
        self.store.prune(&self.key);
        Ok(bytes)
    }
}

impl Store {
    /// Removes the other states of `key`'s kernel, accelerator and kind: saved by an
    /// older agent, QEMU or kernel build, they would only fill the disk (70 MB
    /// each). A run still reading one keeps its open file.
    fn prune(&self, key: &Key) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(hex) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if hex == key.hex {
                continue;
            }
            let sidecar: Option<Sidecar> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if sidecar.is_some_and(|s| {
                s.kernel == key.kernel && s.accel == key.accel.to_string() && s.kind == key.kind
            }) {
                let _ = std::fs::remove_file(self.dir.join(format!("{hex}.state")));
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// How long a restored guest has to speak: it answers at once (0.1 to 0.3 s here
/// under TCG) or never; a loaded CI machine gets some slack.
pub const RESTORE_DEADLINE: Duration = Duration::from_secs(5);

/// How a guest was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// From a saved state.
    Restored,
    /// Booted (and its state saved, when that worked).
    Booted,
}

/// Runs `spec`'s guest (one that waits for its plan: its handshake set, with
/// neither `save` nor `restore`) from a saved state in `store` when there is a
/// good one, else boots it and saves its state for next time. A state that is
/// cut short, that QEMU refuses, whose guest does not answer within
/// [`RESTORE_DEADLINE`], does not end cleanly, or names an agent build other than
/// `agent_id` is discarded and the guest booted: a restore never gives an answer
/// a boot would not. Except for a guest running the user's command
/// (`bpfmatrix exec`) that said its hello: it has started the command, which
/// must not run twice, so how it ended stands.
pub fn boot_or_restore(
    spec: &BootSpec,
    store: &Store,
    agent_id: &str,
    on_event: &mut dyn FnMut(&VmEvent),
) -> Result<(BootOutcome, Start)> {
    let handshake = spec
        .handshake
        .clone()
        .context("a guest that waits for its plan needs a handshake")?;
    let qemu = crate::qemu::find_qemu()?;
    let accels: &[AccelUsed] = match spec.accel {
        Accel::Tcg => &[AccelUsed::Tcg],
        Accel::Kvm => &[AccelUsed::Kvm],
        Accel::Auto => &[AccelUsed::Kvm, AccelUsed::Tcg],
    };
    for &accel in accels {
        let key = crate::qemu::snapshot_key(&qemu, spec, accel)?;
        let state = match store.find(&key) {
            Ok(Some(state)) => state,
            Ok(None) => continue,
            Err(reason) => {
                on_event(&VmEvent::StateDiscarded { reason });
                continue;
            }
        };
        let mut restoring = spec.clone();
        restoring.handshake = Some(Handshake {
            restore: Some(state.clone()),
            save: None,
            ..handshake.clone()
        });
        let outcome = crate::qemu::restore(&restoring, accel, RESTORE_DEADLINE, on_event)?;
        // A guest that runs the user's command (it has the host's root) and got
        // as far as its hello has started that command: booting again would run
        // it a second time, side effects and output twice. Its end, a panic or a
        // timeout included, is the command's.
        let started = spec.host_share.is_some() && said_hello_as(&outcome, agent_id);
        match restored_cleanly(&outcome, agent_id) {
            Ok(()) => return Ok((outcome, Start::Restored)),
            Err(_) if started => return Ok((outcome, Start::Restored)),
            Err(why) => {
                store.discard(&key);
                on_event(&VmEvent::StateDiscarded {
                    reason: format!("the guest restored from {}: {why}", state.display()),
                });
            }
        }
    }
    let mut booting = spec.clone();
    booting.handshake = Some(Handshake {
        save: Some(store.clone()),
        restore: None,
        ..handshake
    });
    Ok((crate::qemu::boot(&booting, on_event)?, Start::Booted))
}

/// Whether the guest said hello naming the agent build `agent_id`.
fn said_hello_as(outcome: &BootOutcome, agent_id: &str) -> bool {
    outcome.lines.iter().any(|line| {
        matches!(
            serde_json::from_str::<GuestMessage>(&line.text),
            Ok(GuestMessage::Hello { agent_id: Some(id), .. }) if id == agent_id
        )
    })
}

/// Whether a restored guest did all a booted one does: spoke, named the agent
/// build it should, finished and powered off.
fn restored_cleanly(outcome: &BootOutcome, agent_id: &str) -> Result<(), String> {
    if !outcome.end.is_clean() {
        return Err(match &outcome.end {
            BootEnd::TimedOut { after } => {
                format!("it did not answer within {:.1} s", after.as_secs_f64())
            }
            BootEnd::RestoreFailed { reason } => reason.clone(),
            BootEnd::QemuFailed { stderr, .. } => format!(
                "QEMU refused it: {}",
                stderr.lines().last().unwrap_or("").trim()
            ),
            other => format!("it ended {other:?}"),
        });
    }
    let mut named = None;
    let mut done = false;
    for line in &outcome.lines {
        match serde_json::from_str::<GuestMessage>(&line.text) {
            Ok(GuestMessage::Hello { agent_id, .. }) => named = Some(agent_id),
            Ok(GuestMessage::Done { .. }) => done = true,
            _ => {}
        }
    }
    match named {
        None => Err("it never said hello".into()),
        Some(Some(id)) if id == agent_id => {
            if done {
                Ok(())
            } else {
                Err("it never said it was done".into())
            }
        }
        Some(id) => Err(format!(
            "it runs agent build {}, not {agent_id}",
            id.as_deref().unwrap_or("(unnamed)")
        )),
    }
}

/// A QEMU Machine Protocol connection: enough of it to stop, save, and go on.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to QEMU's QMP socket (`-qmp unix:PATH,server=on,wait=off`), which
    /// appears as QEMU starts, and leaves capabilities negotiation done.
    pub fn connect(path: &Path, within: Duration) -> Result<Qmp> {
        let until = Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= until => {
                    return Err(e).with_context(|| {
                        format!("QEMU's monitor {} did not open in time", path.display())
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            bail!("QEMU's monitor did not greet: {greeting}");
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QEMU closed its monitor");
        }
        serde_json::from_str(&line).with_context(|| format!("QEMU's monitor said {line:?}"))
    }

    /// Runs one command and returns its `return` (events on the way are skipped).
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            msg["arguments"] = arguments;
        }
        writeln!(self.writer, "{msg}")?;
        loop {
            let reply = self.read()?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                bail!("QEMU refused {command}: {e}");
            }
        }
    }

    /// Stops the guest and writes its state to `to`; the guest stays stopped.
    pub fn save(&mut self, to: &Path, within: Duration) -> Result<()> {
        self.execute("stop", json!({}))?;
        let uri = format!(
            "exec:cat > {}",
            crate::supervisor::shell_quote(&to.to_string_lossy())
        );
        self.execute("migrate", json!({ "uri": uri }))?;
        let until = Instant::now() + within;
        loop {
            let status = self.execute("query-migrate", json!({}))?;
            match status.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some("failed") | Some("cancelled") => bail!(
                    "QEMU could not save the guest: {}",
                    status
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given")
                ),
                _ if Instant::now() >= until => {
                    let _ = self.execute("migrate_cancel", json!({}));
                    bail!(
                        "QEMU took more than {} s to save the guest",
                        within.as_secs()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Waits until QEMU has read the incoming state (a saved guest stays stopped
    /// after it), then lets the guest run.
    pub fn resume_incoming(&mut self, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        loop {
            let status = self.execute("query-status", json!({}))?;
            match status.get("status").and_then(Value::as_str) {
                Some("inmigrate") if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Some("inmigrate") => bail!(
                    "QEMU took more than {} s to read the saved state",
                    within.as_secs()
                ),
                Some("running") => return Ok(()),
                Some(_) => return self.execute("cont", json!({})).map(drop),
                None => bail!("QEMU's query-status said {status}"),
            }
        }
    }

    /// Lets a stopped guest run again.
    pub fn cont(&mut self) -> Result<()> {
        self.execute("cont", json!({})).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hex: &str) -> Key {
        Key {
            hex: hex.into(),
            kernel: "6.1".into(),
            accel: AccelUsed::Tcg,
            kind: "cases".into(),
        }
    }

    #[test]
    fn a_committed_snapshot_is_found_and_a_cut_one_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("snapshots"));
        let k = key("00aa");
        assert_eq!(store.find(&k), Ok(None));
        let pending = store.begin(&k).unwrap();
        std::fs::write(pending.path(), vec![7u8; 4096]).unwrap();
        // Not in place before the commit: a run looking now finds nothing.
        assert_eq!(store.find(&k), Ok(None));
        assert_eq!(pending.commit().unwrap(), 4096);
        assert_eq!(store.find(&k), Ok(Some(store.state_path(&k))));

        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(store.state_path(&k))
            .unwrap();
        f.set_len(1000).unwrap();
        let why = store.find(&k).unwrap_err();
        assert!(why.contains("1000 bytes, its sidecar says 4096"), "{why}");
        assert!(!store.state_path(&k).exists(), "discarded");
        assert_eq!(store.find(&k), Ok(None));
    }

    #[test]
    fn a_new_state_replaces_the_old_ones_of_its_kernel_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_path_buf());
        let save = |k: &Key| {
            let p = store.begin(k).unwrap();
            std::fs::write(p.path(), b"state").unwrap();
            p.commit().unwrap();
        };
        let old = key("0001");
        let other_kernel = Key {
            kernel: "5.10".into(),
            ..key("0002")
        };
        let other_accel = Key {
            accel: AccelUsed::Kvm,
            ..key("0003")
        };
        let other_kind = Key {
            kind: "exec".into(),
            ..key("0005")
        };
        for k in [&old, &other_kernel, &other_accel, &other_kind] {
            save(k);
        }
        save(&key("0004"));
        assert_eq!(store.find(&old), Ok(None), "replaced");
        for k in [&other_kernel, &other_accel, &other_kind, &key("0004")] {
            assert_eq!(store.find(k), Ok(Some(store.state_path(k))));
        }
    }

    #[test]
    fn an_abandoned_save_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_path_buf());
        let pending = store.begin(&key("00bb")).unwrap();
        std::fs::write(pending.path(), b"half").unwrap();
        drop(pending);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn keys_follow_every_input() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let (image, qemu) = (file("vmlinux", b"kernel"), file("qemu", b"qemu"));
        let (a, b) = (file("a.cpio", b"agent one"), file("b.cpio", b"agent two"));
        let args: Vec<OsString> = vec!["-m".into(), "512".into()];
        let k = |initramfs: &Path, accel, args: &[OsString]| {
            Key::new(&KeyParts {
                kernel_name: "6.1",
                boot_image: &image,
                initramfs,
                qemu: &qemu,
                accel,
                kind: "cases",
                args,
            })
            .unwrap()
            .hex
        };
        let base = k(&a, AccelUsed::Tcg, &args);
        assert_eq!(base, k(&a, AccelUsed::Tcg, &args), "stable");
        assert_ne!(base, k(&b, AccelUsed::Tcg, &args), "initramfs content");
        assert_ne!(base, k(&a, AccelUsed::Kvm, &args), "accelerator");
        assert_ne!(
            base,
            k(&a, AccelUsed::Tcg, &["-m".into(), "256".into()]),
            "memory"
        );
    }
}
