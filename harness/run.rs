//! Runs the cases on one kernel: builds the guest for it (agent, plan, modules),
//! boots it, and judges what it sent home. Progress goes out as typed events; the
//! caller decides how to show them.

use crate::collect::{self, Line};
use crate::matrix::{HostFacts, KernelRun};
use crate::modes::{missing_without_modules, ConfigFacts};
use crate::objects::UserObject;
use crate::programs::ProgramRules;
use anyhow::{Context, Result};
use bpfmatrix_kernels::Kernel;
use bpfmatrix_protocol::ObjectSpec;
use bpfmatrix_protocol::{
    BootConfig, CaseId, Fault, JitMode, Plan, PlanDelivery, PROTOCOL_VERSION,
};
use bpfmatrix_vm::qemu::Handshake;
use bpfmatrix_vm::qemu::{self, Accel, AccelUsed, BootEnd, BootSpec, VmEvent};
use bpfmatrix_vm::snapshot::{self, Store};
use bpfmatrix_vm::vng;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Modules the guest loads before any case: clsact needs them on kernels whose
/// Debian config builds them as modules (all before TCX, 6.6).
pub const GUEST_MODULES: &[&str] = &["sch_ingress", "cls_bpf"];

/// Which virtual machine runner boots the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// bpfmatrix's own QEMU microVM: the agent is the initramfs's init.
    Qemu,
    /// virtme-ng (`vng --run KERNEL --exec AGENT`), for users who live in it.
    Vng,
}

/// virtme-ng boots through systemd-less but module-loading userspace over 9p: a
/// minute under TCG here is normal (measured up to 55 s to reach the agent).
const VNG_MIN_TIMEOUT: Duration = Duration::from_secs(300);

/// What to run and how.
#[derive(Clone, Debug)]
pub struct Settings {
    pub backend: Backend,
    pub cases: Vec<CaseId>,
    pub jit_modes: Vec<JitMode>,
    pub accel: Accel,
    /// The whole boot, QEMU start to exit.
    pub timeout: Duration,
    pub memory_mib: u32,
    /// Test-only misbehaviour of the agent (the fault suite).
    pub fault: Option<Fault>,
    /// The most a guest may send home before its run is ended as a failure.
    pub max_result_bytes: u64,
    /// The user's objects (`bpfmatrix check`), loaded after the cases.
    pub objects: Vec<UserObject>,
    /// What the user's programs are judged by (`--expect`).
    pub program_rules: ProgramRules,
    /// Start guests from saved states where there are good ones, and save them
    /// (QEMU backend); off, every guest boots.
    pub snapshots: bool,
    /// Where saved states live; None: the cache's `snapshots` folder.
    pub snapshot_dir: Option<PathBuf>,
}

impl Settings {
    /// The objects as the plan names them.
    pub fn object_specs(&self) -> Vec<ObjectSpec> {
        self.objects.iter().map(|o| o.spec.clone()).collect()
    }

    /// Gives a run that has no guest records (unavailable, failed before the
    /// guest answered) its program cells, each saying why it has no answer.
    pub fn without_programs_answered(&self, mut run: KernelRun) -> KernelRun {
        run.judge_programs(
            &self.object_specs(),
            &self.jit_modes,
            Default::default(),
            &self.program_rules,
        );
        run
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            backend: Backend::Qemu,
            cases: CaseId::ALL.to_vec(),
            jit_modes: JitMode::ALL.to_vec(),
            accel: Accel::Auto,
            timeout: Duration::from_secs(120),
            memory_mib: 512,
            fault: None,
            max_result_bytes: qemu::MAX_RESULT_BYTES,
            objects: vec![],
            program_rules: ProgramRules::default(),
            snapshots: true,
            snapshot_dir: None,
        }
    }
}

/// What a run reports while it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    Step { kernel: &'a str, what: String },
    Vm { kernel: &'a str, event: &'a VmEvent },
}

/// Boots `kernel` with the agent at `agent` and returns the judged run. Failures
/// to build or boot the guest become a failed run, never an error that hides the
/// kernel from the report.
pub fn run_kernel(
    kernel: &Kernel,
    agent: &Path,
    settings: &Settings,
    progress: &mut dyn FnMut(Progress),
) -> KernelRun {
    match try_run(kernel, agent, settings, progress) {
        Ok(run) => run,
        Err(e) => settings.without_programs_answered(KernelRun::failed(
            &kernel.name,
            &kernel.source,
            format!("{e:#}"),
            &settings.cases,
            &settings.jit_modes,
        )),
    }
}

fn try_run(
    kernel: &Kernel,
    agent: &Path,
    settings: &Settings,
    progress: &mut dyn FnMut(Progress),
) -> Result<KernelRun> {
    let name = kernel.name.as_str();
    let modules = bpfmatrix_kernels::resolve_modules(kernel, GUEST_MODULES)
        .with_context(|| format!("cannot prepare the guest modules of kernel {name}"))?;
    let host = host_facts(kernel, progress);
    if !host.missing_modules.is_empty() {
        let names: Vec<&str> = host
            .missing_modules
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        progress(Progress::Step {
            kernel: name,
            what: format!(
                "no modules directory: the guest will lack {}, so the cases that need clsact on lo are errors before 6.6 ({})",
                names.join(", "),
                host.missing_modules[0].remedy
            ),
        });
    }
    let plan = Plan {
        protocol: PROTOCOL_VERSION,
        cases: settings.cases.clone(),
        jit_modes: settings.jit_modes.clone(),
        modules: modules
            .iter()
            .map(bpfmatrix_vm::guest::plan_module_path)
            .collect(),
        result_port: "/dev/ttyS1".to_string(),
        fault: settings.fault,
        objects: settings.object_specs(),
        exec: None,
    };
    let object_files: Vec<PathBuf> = settings.objects.iter().map(|o| o.file.clone()).collect();
    progress(Progress::Step {
        kernel: name,
        what: format!(
            "starting {} with {} ({} cases{} x {} JIT modes)",
            // virtme-ng gets the image as packaged (beside its modules), QEMU the
            // one it boots fastest.
            match settings.backend {
                Backend::Qemu => kernel.boot_image.display(),
                Backend::Vng => kernel.image.display(),
            },
            match settings.backend {
                Backend::Qemu => "QEMU",
                Backend::Vng => "virtme-ng",
            },
            plan.cases.len(),
            match plan.objects.iter().map(|o| o.programs.len()).sum::<usize>() {
                0 => String::new(),
                n => format!(" and {n} programs of {} objects", plan.objects.len()),
            },
            plan.jit_modes.len()
        ),
    });
    let on_event = &mut |event: &VmEvent| {
        progress(Progress::Vm {
            kernel: name,
            event,
        })
    };
    let guest = Guest {
        plan: &plan,
        modules: &modules,
        object_files: &object_files,
        host_share: None,
    };
    let (outcome, restored) = boot_guest(kernel, agent, settings, &guest, on_event)?;
    let mut collected = collect::collect(
        &plan,
        outcome.lines.iter().map(|l| Line {
            text: &l.text,
            truncated: l.truncated,
        }),
    );
    let boot_failure = boot_failure(&outcome.end, settings.backend);
    let program_records = std::mem::take(&mut collected.programs);
    let mut run = KernelRun::judge(
        name,
        &kernel.source,
        &settings.cases,
        &settings.jit_modes,
        collected,
        boot_failure,
        host,
    );
    run.judge_programs(
        &plan.objects,
        &settings.jit_modes,
        program_records,
        &settings.program_rules,
    );
    run.accel = Some(outcome.accel.to_string());
    run.kvm_fallback = outcome.kvm_fallback.clone();
    run.boot_wall_ms = Some(outcome.wall.as_millis() as u64);
    run.restored = restored;
    Ok(run)
}

/// What a guest is built with: its plan, the modules it loads, the objects it
/// carries, and the host directory it may mount (`bpfmatrix exec`).
pub struct Guest<'a> {
    pub plan: &'a Plan,
    pub modules: &'a [bpfmatrix_kernels::ModuleFile],
    pub object_files: &'a [PathBuf],
    pub host_share: Option<PathBuf>,
}

/// Boots (or restores) `kernel`'s guest for `guest` and returns how it went and
/// whether it started from a saved state.
pub fn boot_guest(
    kernel: &Kernel,
    agent: &Path,
    settings: &Settings,
    guest: &Guest,
    on_event: &mut dyn FnMut(&VmEvent),
) -> Result<(qemu::BootOutcome, bool)> {
    let (plan, modules, object_files) = (guest.plan, guest.modules, guest.object_files);
    let mut restored = false;
    let outcome = match settings.backend {
        Backend::Qemu => {
            let dir = tempfile::Builder::new()
                .prefix("bpfmatrix-guest-")
                .tempdir()
                .context("cannot create a temporary directory for the guest")?;
            let initramfs = dir.path().join("initramfs.cpio");
            let mut spec = BootSpec {
                accel: settings.accel,
                memory_mib: settings.memory_mib,
                timeout: settings.timeout,
                max_result_bytes: settings.max_result_bytes,
                host_share: guest.host_share.clone(),
                ..BootSpec::new(kernel.clone(), initramfs.clone())
            };
            let object_bytes: u64 = object_files
                .iter()
                .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
                .sum();
            // Fault runs keep the plan in the initramfs: several faults act before
            // the agent could have read a plan from the port. HangBeforeHello is
            // the one made for guests that wait for theirs.
            let waits = settings.snapshots
                && settings.fault.is_none_or(|f| f == Fault::HangBeforeHello)
                && object_bytes <= MAX_DELIVERED_BYTES;
            if waits {
                let agent_id = agent_id(agent);
                let config = BootConfig {
                    protocol: PROTOCOL_VERSION,
                    agent_id: agent_id.clone(),
                    modules: plan.modules.clone(),
                    result_port: plan.result_port.clone(),
                    exec_root: guest.host_share.is_some(),
                };
                bpfmatrix_vm::guest::build_waiting_initramfs(agent, &config, modules, &initramfs)?;
                spec.handshake = Some(Handshake {
                    delivery: delivery(plan, object_files)?,
                    save: None,
                    restore: None,
                });
                let store = settings
                    .snapshot_dir
                    .clone()
                    .map_or_else(Store::in_cache, Store::new);
                let (outcome, start) =
                    snapshot::boot_or_restore(&spec, &store, &agent_id, on_event)?;
                restored = start == snapshot::Start::Restored;
                outcome
            } else {
                bpfmatrix_vm::guest::build_guest_initramfs(
                    agent,
                    plan,
                    modules,
                    object_files,
                    &initramfs,
                )?;
                qemu::boot(&spec, on_event)?
            }
        }
        Backend::Vng => {
            if guest.host_share.is_some() {
                anyhow::bail!("bpfmatrix exec runs on the QEMU backend only (virtme-ng has its own: vng --exec)");
            }
            let spec = vng::VngSpec {
                kernel: kernel.clone(),
                agent: agent.to_path_buf(),
                plan: plan.clone(),
                modules: modules.to_vec(),
                object_files: object_files.to_vec(),
                // vng's own KVM choice would hang where KVM is broken; Auto means TCG.
                accel: match settings.accel {
                    Accel::Kvm => AccelUsed::Kvm,
                    Accel::Auto | Accel::Tcg => AccelUsed::Tcg,
                },
                memory_mib: settings.memory_mib,
                timeout: settings.timeout.max(VNG_MIN_TIMEOUT),
                max_result_bytes: settings.max_result_bytes,
                extra_append: String::new(),
                vng: None,
            };
            vng::boot_vng(&spec, on_event)?
        }
    };
    Ok((outcome, restored))
}

/// Why a guest's boot did not end cleanly, in words; none when it powered off
/// or said it was done.
pub fn boot_failure(end: &BootEnd, backend: Backend) -> Option<String> {
    let killed = match backend {
        Backend::Qemu => "QEMU killed",
        Backend::Vng => "vng and its QEMU killed",
    };
    match end {
        BootEnd::PoweredOff | BootEnd::Finished => None,
        BootEnd::Panicked { lines } => Some(format!(
            "the guest kernel panicked: {}",
            lines
                .iter()
                .take(6)
                .cloned()
                .collect::<Vec<_>>()
                .join(" | ")
        )),
        BootEnd::Silent {
            after,
            last_console,
        } => Some(format!(
            "the guest died early: its console went silent before the agent spoke ({:.0} s after QEMU started, QEMU killed); last console line: {}",
            after.as_secs_f64(),
            last_console.as_deref().unwrap_or("none at all")
        )),
        BootEnd::TimedOut { after } => Some(format!(
            "the guest timed out after {:.0} s ({killed})",
            after.as_secs_f64()
        )),
        BootEnd::TooMuchOutput { limit_bytes } => Some(format!(
            "the guest sent more than {limit_bytes} bytes of results ({killed})"
        )),
        // boot_or_restore boots when a restore fails; this is a boot that did.
        BootEnd::RestoreFailed { reason } => {
            Some(format!("the guest could not be handed its plan: {reason}"))
        }
        BootEnd::QemuFailed { status, stderr } => Some(match backend {
            Backend::Qemu => format!("QEMU failed ({status}): {}", stderr.trim()),
            Backend::Vng => format!("vng failed ({status}): {}", vng::last_words(stderr.lines())),
        }),
    }
}

/// What the host knows of `kernel` before booting it: its config (the lines that
/// decide its JIT modes and modules) and the modules its guest will lack.
pub fn host_facts(kernel: &Kernel, progress: &mut dyn FnMut(Progress)) -> HostFacts {
    let config = kernel.config.as_ref().and_then(|c| match c.read() {
        Ok(text) => {
            let facts = ConfigFacts::from_text(&c.describe(), &text);
            progress(Progress::Step {
                kernel: &kernel.name,
                what: format!("config from {}: {}", facts.source, facts.lines.join(", ")),
            });
            Some(facts)
        }
        Err(e) => {
            progress(Progress::Step {
                kernel: &kernel.name,
                what: format!("{e:#}: the guest's evidence alone decides its JIT modes"),
            });
            None
        }
    });
    let missing_modules = match kernel.modules_dir {
        Some(_) => vec![],
        None => missing_without_modules(GUEST_MODULES, config.as_ref(), kernel.release.as_deref()),
    };
    HostFacts {
        config,
        missing_modules,
    }
}

/// The most object bytes handed to a waiting guest over its result port (a UART,
/// about 300 KB/s under TCG, though they go compressed); past it the guest is
/// booted with them in its initramfs instead.
pub const MAX_DELIVERED_BYTES: u64 = 1 << 20;

/// The agent build's name, as a waiting guest repeats it: the binary's file name,
/// which carries the hash of its sources.
pub fn agent_id(agent: &Path) -> String {
    agent.file_name().map_or_else(
        || agent.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// What a waiting guest is handed: the `PlanDelivery` line, then each object's
/// bytes, compressed.
pub fn delivery(plan: &Plan, object_files: &[PathBuf]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut sizes = Vec::new();
    let mut blobs = Vec::new();
    for file in object_files {
        let object =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut z, &object)?;
        sizes.push(object.len() as u64);
        blobs.push(z.finish()?);
    }
    serde_json::to_writer(
        &mut bytes,
        &PlanDelivery {
            plan: plan.clone(),
            object_bytes: blobs.iter().map(|b| b.len() as u64).collect(),
            object_sizes: sizes,
        },
    )?;
    bytes.push(b'\n');
    for blob in blobs {
        bytes.extend_from_slice(&blob);
    }
    Ok(bytes)
}

/// Runs every kernel, at most `parallel` guests at once (a TCG guest keeps one
/// core busy), and returns the runs in the order of `kernels`.
pub fn run_kernels(
    kernels: &[Kernel],
    agent: &Path,
    settings: &Settings,
    parallel: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<KernelRun> {
    each_kernel(kernels, parallel, &|kernel| {
        run_kernel(kernel, agent, settings, &mut |p| progress(p))
    })
}

/// `job` on every kernel, at most `parallel` at once, the results in the order
/// of `kernels`.
pub fn each_kernel<T: Send>(
    kernels: &[Kernel],
    parallel: usize,
    job: &(dyn Fn(&Kernel) -> T + Sync),
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<T>>> = Mutex::new(kernels.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, kernels.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(kernel) = kernels.get(i) else { break };
                let result = job(kernel);
                done.lock().unwrap()[i] = Some(result);
            });
        }
    });
    done.into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every kernel was run"))
        .collect()
}

/// How many guests to boot at once by default: one per core.
pub fn default_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_delivery_is_the_plan_line_then_each_object_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let objects: Vec<Vec<u8>> = vec![
            b"\x7fELF"
                .iter()
                .chain([0u8; 4000].iter())
                .copied()
                .collect(),
            (0..3000u32).flat_map(|i| i.to_le_bytes()).collect(),
        ];
        let files: Vec<PathBuf> = objects
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let f = dir.path().join(format!("{i}.o"));
                std::fs::write(&f, o).unwrap();
                f
            })
            .collect();
        let plan = crate::collect::tests::plan();
        let bytes = delivery(&plan, &files).unwrap();
        let newline = bytes.iter().position(|b| *b == b'\n').unwrap();
        let head: PlanDelivery = serde_json::from_slice(&bytes[..newline]).unwrap();
        assert_eq!(head.plan, plan);
        assert_eq!(head.object_sizes, [4004, 12000]);
        let mut rest = &bytes[newline + 1..];
        for (object, &len) in objects.iter().zip(&head.object_bytes) {
            assert!(len < object.len() as u64, "{len}");
            let (blob, tail) = rest.split_at(len as usize);
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(blob)
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(&back, object);
            rest = tail;
        }
        assert!(rest.is_empty());
    }
}
