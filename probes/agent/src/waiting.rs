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
    let objects = delivery.plan.objects.len();
    if delivery.object_bytes.len() != objects || delivery.object_sizes.len() != objects {
        bail!(
            "the plan names {objects} objects but {} lengths and {} sizes came with it",
            delivery.object_bytes.len(),
            delivery.object_sizes.len()
        );
    }
    let lengths = delivery.object_bytes.iter().zip(&delivery.object_sizes);
    for (object, (&len, &size)) in delivery.plan.objects.iter().zip(lengths) {
        if !object.path.starts_with(&format!("{OBJECTS_DIR}/")) {
            bail!("object {} is not under {OBJECTS_DIR}", object.path);
        }
        let mut compressed = vec![0u8; len as usize];
        reader
            .read_exact(&mut compressed)
            .with_context(|| format!("read object {} ({len} bytes)", object.name))?;
        let bytes = inflate(&compressed, size)
            .with_context(|| format!("decompress object {}", object.name))?;
        std::fs::write(&object.path, &bytes).with_context(|| format!("write {}", object.path))?;
    }
    Ok(delivery.plan)
}

/// The zlib stream `compressed` inflated, which must come to `size` bytes (read
/// no further: garbage cannot fill the guest's memory).
fn inflate(compressed: &[u8], size: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    flate2::read::ZlibDecoder::new(compressed)
        .take(size.saturating_add(1))
        .read_to_end(&mut bytes)?;
    let got = bytes.len() as u64;
    if got > size {
        bail!("it inflates to more than the {size} bytes the host announced");
    }
    if got < size {
        bail!("it inflates to {got} bytes, not the {size} the host announced");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn deflate(bytes: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(bytes).unwrap();
        z.finish().unwrap()
    }

    #[test]
    fn an_object_comes_back_as_sent_and_nothing_else_does() {
        let object = crate::objects::FENTRY_TC;
        let compressed = deflate(object);
        assert!(compressed.len() < object.len() / 2, "{}", compressed.len());
        assert_eq!(inflate(&compressed, object.len() as u64).unwrap(), object);

        let short = object.len() as u64 - 1;
        let err = inflate(&compressed, short).unwrap_err().to_string();
        assert!(err.contains("more than the"), "{err}");
        let err = inflate(&compressed, object.len() as u64 + 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("to {} bytes", object.len())), "{err}");
        assert!(inflate(b"not zlib at all", 15).is_err());
    }
}
