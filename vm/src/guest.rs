//! Packs one guest: the agent as /init, the plan at [`PLAN_PATH`], the kernel
//! modules the plan loads, and the few directories and device nodes PID 1 needs
//! before it can mount anything.

use crate::initramfs::Initramfs;
use anyhow::{bail, Context};
use bpfmatrix_kernels::ModuleFile;
use bpfmatrix_protocol::{BootConfig, Plan, BOOT_CONFIG_PATH, OBJECTS_DIR, PLAN_PATH};
use std::path::{Path, PathBuf};

/// Where a module goes inside the guest; the plan names modules by these paths.
pub fn plan_module_path(m: &ModuleFile) -> String {
    format!("/modules/{}.ko", m.name)
}

/// Writes the guest's initramfs to `out`. Every path in `plan.modules` must be the
/// [`plan_module_path`] of one of `modules`, and `object_files` are the host files
/// of `plan.objects`, in order, so the plan never names a file the guest does not
/// have.
pub fn build_guest_initramfs(
    agent: &Path,
    plan: &Plan,
    modules: &[ModuleFile],
    object_files: &[PathBuf],
    out: &Path,
) -> anyhow::Result<()> {
    let image = base(agent, modules, &plan.modules, "the plan")?;
    if object_files.len() != plan.objects.len() {
        bail!(
            "the plan names {} objects, but {} files were given for them",
            plan.objects.len(),
            object_files.len()
        );
    }
    let plan_json = serde_json::to_vec_pretty(plan).context("cannot serialise the plan")?;
    let mut image = image.file(PLAN_PATH, plan_json, 0o644);
    if !plan.objects.is_empty() {
        image = image.dir(OBJECTS_DIR, 0o755);
    }
    for (spec, file) in plan.objects.iter().zip(object_files) {
        if !spec.path.starts_with(&format!("{OBJECTS_DIR}/")) {
            bail!(
                "object {} must go under {OBJECTS_DIR}, not {}",
                spec.name,
                spec.path
            );
        }
        image = image.file(&spec.path, file.as_path(), 0o644);
    }
    image.write_to(out)
}

/// Writes the initramfs of a guest that waits for its plan on the result port:
/// the agent, the modules and `config`, nothing that depends on a plan, so one
/// saved state of it serves every plan.
pub fn build_waiting_initramfs(
    agent: &Path,
    config: &BootConfig,
    modules: &[ModuleFile],
    out: &Path,
) -> anyhow::Result<()> {
    let image = base(agent, modules, &config.modules, "the boot config")?;
    let json = serde_json::to_vec_pretty(config).context("cannot serialise the boot config")?;
    image
        .file(BOOT_CONFIG_PATH, json, 0o644)
        .dir(OBJECTS_DIR, 0o755)
        .write_to(out)
}

/// What every guest has: the agent as /init, its modules, and the few
/// directories and device nodes PID 1 needs before it can mount anything.
/// `loaded` are the module paths the guest will load (`who` names what lists
/// them): each must be the [`plan_module_path`] of one of `modules`.
fn base(
    agent: &Path,
    modules: &[ModuleFile],
    loaded: &[String],
    who: &str,
) -> anyhow::Result<Initramfs> {
    if !agent.is_file() {
        bail!(
            "guest agent {} does not exist: build it first (bpfmatrix_vm::agent::build_agent)",
            agent.display()
        );
    }
    for wanted in loaded {
        if !modules.iter().any(|m| &plan_module_path(m) == wanted) {
            bail!("{who} loads {wanted}, but no module file was given for it");
        }
    }
    let mut image = Initramfs::new()
        .dir("/dev", 0o755)
        // The kernel opens /dev/console for init's stdio before devtmpfs exists;
        // without it the agent starts with no console at all.
        .char_dev("/dev/console", 5, 1, 0o600)
        .char_dev("/dev/ttyS0", 4, 64, 0o600)
        .char_dev("/dev/ttyS1", 4, 65, 0o600)
        .char_dev("/dev/null", 1, 3, 0o666)
        // Rust's std seeds its hash maps at once. Before 5.6 getrandom has no
        // GRND_INSECURE and the CRNG is not ready this early, so std falls back
        // to /dev/urandom; without the node the agent panics (seen on 4.16).
        .char_dev("/dev/urandom", 1, 9, 0o666)
        .char_dev("/dev/random", 1, 8, 0o666)
        .dir("/proc", 0o555)
        .dir("/sys", 0o555)
        .dir("/tmp", 0o1777)
        .dir("/bpfmatrix", 0o755)
        .dir("/modules", 0o755)
        .file("/init", agent, 0o755);
    for m in modules {
        image = image.file(&plan_module_path(m), m.path.as_path(), 0o644);
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bpfmatrix_protocol::{CaseId, JitMode, PROTOCOL_VERSION};

    fn plan(modules: Vec<String>) -> Plan {
        Plan {
            protocol: PROTOCOL_VERSION,
            cases: vec![CaseId::TailCallChain],
            jit_modes: vec![JitMode::Jit],
            modules,
            result_port: "/dev/ttyS1".into(),
            fault: None,
            objects: vec![],
            exec: None,
        }
    }

    #[test]
    fn guest_has_init_plan_modules_and_console() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"agent").unwrap();
        let ko = dir.path().join("cls_bpf.ko");
        std::fs::write(&ko, b"module").unwrap();
        let module = ModuleFile {
            name: "cls_bpf".into(),
            path: ko,
        };
        assert_eq!(plan_module_path(&module), "/modules/cls_bpf.ko");
        let out = dir.path().join("guest.cpio");
        let plan = plan(vec![plan_module_path(&module)]);
        build_guest_initramfs(&agent, &plan, &[module], &[], &out).unwrap();

        let entries = crate::initramfs::tests::list(&out);
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| e.name == name)
                .unwrap_or_else(|| panic!("{name} missing: {entries:?}"))
        };
        assert_eq!(find("dev/console").mode & 0o170000, 0o020000);
        assert_eq!(find("dev/urandom").rdev, (1, 9));
        assert_eq!(find("init").mode, 0o100755);
        assert_eq!(find("init").data, b"agent");
        find(PLAN_PATH.trim_start_matches('/'));
        assert_eq!(find("modules/cls_bpf.ko").data, b"module");
    }

    #[test]
    fn a_plan_naming_a_missing_module_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::write(&agent, b"agent").unwrap();
        let err = build_guest_initramfs(
            &agent,
            &plan(vec!["/modules/sch_ingress.ko".into()]),
            &[],
            &[],
            &dir.path().join("x"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/modules/sch_ingress.ko"), "{err}");
    }
}
