//! The agent's side of a guest that waits for its plan: bpfmatrix saves such a
//! guest once it is ready and starts later runs from that state, so everything
//! that does not depend on a plan (mounts, modules, the kernel's BTF) happens
//! before the agent says ready, and nothing that does happens before it reads
//! its plan from the result port. A restored guest wakes up inside
//! [`receive_plan`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read};

use anyhow::{bail, Context, Result};
use bpfmatrix_protocol::{BootConfig, Plan, PlanDelivery, BOOT_CONFIG_PATH, OBJECTS_DIR};

/// The boot config, when the guest was built to wait for its plan.
pub fn boot_config() -> Option<Result<BootConfig>> {
    let bytes = std::fs::read(BOOT_CONFIG_PATH).ok()?;
    Some(serde_json::from_slice(&bytes).with_context(|| format!("parse {BOOT_CONFIG_PATH}")))
}

/// Reads the [`PlanDelivery`] line from the result port, then each object's
/// bytes, written to where the plan says the object is.
pub fn receive_plan(port: &File) -> Result<Plan> {
    let mut reader = BufReader::new(port);
    let mut line = Vec::new();
    // The port is a UART in raw mode: a read may return any part of the line.
    while !line.ends_with(b"\n") {
        let n = reader
            .read_until(b'\n', &mut line)
            .context("read the plan from the result port")?;
        if n == 0 {
            bail!("the result port closed before a plan arrived");
        }
    }
    let delivery: PlanDelivery =
        serde_json::from_slice(&line).context("parse the plan from the result port")?;
    if delivery.object_bytes.len() != delivery.plan.objects.len() {
        bail!(
            "the plan names {} objects but {} sizes came with it",
            delivery.plan.objects.len(),
            delivery.object_bytes.len()
        );
    }
    for (object, &len) in delivery.plan.objects.iter().zip(&delivery.object_bytes) {
        if !object.path.starts_with(&format!("{OBJECTS_DIR}/")) {
            bail!("object {} is not under {OBJECTS_DIR}", object.path);
        }
        let mut bytes = vec![0u8; len as usize];
        reader
            .read_exact(&mut bytes)
            .with_context(|| format!("read object {} ({len} bytes)", object.name))?;
        std::fs::write(&object.path, &bytes).with_context(|| format!("write {}", object.path))?;
    }
    Ok(delivery.plan)
}
