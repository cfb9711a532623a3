//! Boots a real kernel with a tiny static C init to check the runner end to end:
//! KVM fallback, power-off, panic, hang, and an over-long result line. Needs gcc, QEMU
//! and a kernel, so every test is ignored by default; run by hand with
//! `BPFMATRIX_TEST_KERNEL=/path/to/vmlinux-or-bzImage cargo test -p bpfmatrix-vm --test boot -- --ignored --test-threads 1 --nocapture`.

use bpfmatrix_vm::qemu::{boot, Accel, BootEnd, BootOutcome, BootSpec, VmEvent};
use bpfmatrix_vm::Initramfs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const INIT_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <termios.h>
#include <unistd.h>

int main(void) {
    const char *mode = getenv("testmode");
    if (!mode) mode = "ok";
    printf("test init: mode %s\n", mode);
    fflush(stdout);
    if (strcmp(mode, "panic") == 0) return 1; /* init exits: the kernel panics */
    int fd = open("/dev/ttyS1", O_WRONLY | O_NOCTTY);
    if (fd < 0) { perror("open /dev/ttyS1"); return 1; }
    if (strcmp(mode, "long") == 0) {
        static char big[300 * 1024];
        memset(big, 'x', sizeof big);
        write(fd, big, sizeof big);
        write(fd, "\n", 1);
    }
    write(fd, "hello\n", 6);
    tcdrain(fd);
    if (strcmp(mode, "hang") == 0) for (;;) pause();
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
"#;

fn kernel() -> Option<bpfmatrix_kernels::Kernel> {
    let Some(path) = std::env::var_os("BPFMATRIX_TEST_KERNEL") else {
        eprintln!("skipped: set BPFMATRIX_TEST_KERNEL to a vmlinux or bzImage");
        return None;
    };
    Some(bpfmatrix_kernels::from_image("test", Path::new(&path), None).unwrap())
}

fn initramfs(dir: &Path) -> PathBuf {
    let src = dir.join("init.c");
    std::fs::write(&src, INIT_C).unwrap();
    let bin = dir.join("init");
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap();
    assert!(status.success(), "gcc -static failed");
    let out = dir.join("initramfs.cpio");
    Initramfs::new()
        .dir("/dev", 0o755)
        .char_dev("/dev/console", 5, 1, 0o600)
        .char_dev("/dev/ttyS1", 4, 65, 0o600)
        .file("/init", bin.as_path(), 0o755)
        .write_to(&out)
        .unwrap();
    out
}

/// QEMU processes that are children of this test process.
fn qemu_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, rest) = stat.split_once(") ")?;
            let ppid = rest.split_whitespace().nth(1)?;
            (comm.contains("qemu") && ppid == me)
                .then(|| e.file_name().to_string_lossy().parse().ok())?
        })
        .collect()
}

fn run(mode: &str, timeout: Duration) -> Option<BootOutcome> {
    let kernel = kernel()?;
    let dir = tempfile::tempdir().unwrap();
    let mut spec = BootSpec::new(kernel, initramfs(dir.path()));
    spec.extra_append = format!("testmode={mode}");
    spec.accel = Accel::Auto;
    spec.timeout = timeout;
    let outcome = boot(&spec, &mut |event| match event {
        VmEvent::Console(_) => {}
        VmEvent::GuestLine(line) => {
            eprintln!("guest: {:.80} (truncated: {})", line.text, line.truncated)
        }
        other => eprintln!("{other:?}"),
    })
    .unwrap();
    eprintln!(
        "{mode}: accel {:?}, fallback {:?}, end {:?}, wall {:?}, first line after {:?}",
        outcome.accel,
        outcome.kvm_fallback,
        match &outcome.end {
            BootEnd::Panicked { lines } => format!("panicked ({} lines)", lines.len()),
            other => format!("{other:?}"),
        },
        outcome.wall,
        outcome.first_line_after
    );
    assert_eq!(qemu_children(), Vec::<u32>::new(), "QEMU left running");
    Some(outcome)
}

#[test]
#[ignore = "boots a real kernel: needs BPFMATRIX_TEST_KERNEL, gcc and QEMU"]
fn powers_off_after_a_result_line() {
    let Some(outcome) = run("ok", Duration::from_secs(60)) else {
        return;
    };
    assert_eq!(
        outcome.end,
        BootEnd::PoweredOff,
        "{:#?}",
        outcome.console_tail
    );
    assert_eq!(outcome.lines.len(), 1);
    assert_eq!(outcome.lines[0].text, "hello");
    assert!(outcome
        .console_tail
        .iter()
        .any(|l| l.contains("test init: mode ok")));
}

#[test]
#[ignore = "boots a real kernel: needs BPFMATRIX_TEST_KERNEL, gcc and QEMU"]
fn init_exiting_is_a_panic() {
    let Some(outcome) = run("panic", Duration::from_secs(60)) else {
        return;
    };
    let BootEnd::Panicked { lines } = &outcome.end else {
        panic!(
            "expected a panic, got {:?}\n{:#?}",
            outcome.end, outcome.console_tail
        )
    };
    assert!(lines[0].contains("Attempted to kill init"), "{lines:#?}");
}

#[test]
#[ignore = "boots a real kernel: needs BPFMATRIX_TEST_KERNEL, gcc and QEMU"]
fn a_hanging_guest_times_out() {
    let Some(outcome) = run("hang", Duration::from_secs(12)) else {
        return;
    };
    assert!(
        matches!(outcome.end, BootEnd::TimedOut { .. }),
        "{:?}",
        outcome.end
    );
    assert_eq!(
        outcome.lines.len(),
        1,
        "the line before the hang still arrives"
    );
}

#[test]
#[ignore = "boots a real kernel: needs BPFMATRIX_TEST_KERNEL, gcc and QEMU"]
fn an_over_long_line_is_cut_and_marked() {
    let Some(outcome) = run("long", Duration::from_secs(60)) else {
        return;
    };
    assert_eq!(outcome.end, BootEnd::PoweredOff);
    assert_eq!(outcome.lines.len(), 2);
    assert!(outcome.lines[0].truncated);
    assert_eq!(
        outcome.lines[0].text.len(),
        bpfmatrix_probes::MAX_LINE_BYTES
    );
    assert_eq!(outcome.lines[1].text, "hello");
}

/// The real agent on a real kernel: builds the agent, packs the guest with the
/// modules the plan needs, boots, and expects the agent's Hello first and Done last.
/// `BPFMATRIX_TEST_MODULES` may name the kernel's lib/modules/<release> directory.
#[test]
#[ignore = "builds the agent and boots a real kernel: needs BPFMATRIX_TEST_KERNEL, clang and QEMU"]
fn the_agent_says_hello_and_done() {
    use bpfmatrix_probes::{CaseId, GuestMessage, JitMode, Plan, PROTOCOL_VERSION};
    let Some(path) = std::env::var_os("BPFMATRIX_TEST_KERNEL") else {
        eprintln!("skipped: set BPFMATRIX_TEST_KERNEL");
        return;
    };
    let modules_dir = std::env::var_os("BPFMATRIX_TEST_MODULES").map(PathBuf::from);
    let kernel =
        bpfmatrix_kernels::from_image("test", Path::new(&path), modules_dir.as_deref()).unwrap();
    let modules = bpfmatrix_kernels::resolve_modules(&kernel, &["sch_ingress", "cls_bpf"]).unwrap();
    let agent = bpfmatrix_vm::agent::build_agent(&mut |l| eprintln!("{l}")).unwrap();
    let plan = Plan {
        protocol: PROTOCOL_VERSION,
        cases: CaseId::ALL.to_vec(),
        jit_modes: JitMode::ALL.to_vec(),
        modules: modules.iter().map(bpfmatrix_vm::plan_module_path).collect(),
        result_port: "/dev/ttyS1".into(),
        fault: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let initramfs = dir.path().join("guest.cpio");
    bpfmatrix_vm::build_guest_initramfs(&agent, &plan, &modules, &initramfs).unwrap();
    let mut spec = BootSpec::new(kernel, initramfs);
    spec.timeout = Duration::from_secs(180);
    let outcome = boot(&spec, &mut |event| match event {
        VmEvent::GuestLine(line) => eprintln!("guest: {:.200}", line.text),
        VmEvent::Console(_) => {}
        other => eprintln!("{other:?}"),
    })
    .unwrap();
    eprintln!(
        "end {:?}, wall {:?}, first line after {:?}",
        outcome.end, outcome.wall, outcome.first_line_after
    );
    assert_eq!(qemu_children(), Vec::<u32>::new(), "QEMU left running");
    let parsed: Vec<GuestMessage> = outcome
        .lines
        .iter()
        .map(|l| serde_json::from_str(&l.text).unwrap())
        .collect();
    assert!(
        matches!(parsed.first(), Some(GuestMessage::Hello { .. })),
        "{:#?}",
        outcome.console_tail
    );
    assert!(
        matches!(parsed.last(), Some(GuestMessage::Done { .. })),
        "{:#?}",
        outcome.console_tail
    );
    assert_eq!(outcome.end, BootEnd::PoweredOff);
}
