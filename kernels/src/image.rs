//! How a kernel image file boots: a bzImage as it is, or its vmlinux, extracted into
//! the cache, through PVH where that is safe ([`crate::protocol`]); and reading the
//! files around it (its config, its first bytes).

use crate::bzimage::{self, BzImageHeader};
use crate::kernel::BootProtocol;
use crate::protocol::{self, Choice};
use anyhow::Context;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How a bzImage boots: the image QEMU gets and the choice behind it.
pub(crate) struct Boot {
    pub image: PathBuf,
    pub choice: Choice,
}

/// Decides how the bzImage `image` of `release` (with its config text, if found)
/// boots. Where PVH is safe its vmlinux is extracted into `dir/vmlinux` (once: an
/// existing one is reused) and booted if it carries the PVH note; otherwise the
/// bzImage boots and nothing is extracted.
pub(crate) fn boot_bzimage(
    image: &Path,
    release: Option<&str>,
    config: Option<&str>,
    dir: &Path,
) -> anyhow::Result<Boot> {
    let choice = protocol::choose(release, config);
    if choice.protocol != BootProtocol::Pvh {
        return Ok(Boot {
            image: image.to_path_buf(),
            choice,
        });
    }
    let header = BzImageHeader::parse(&read_head(image)?)?
        .with_context(|| format!("{} has no bzImage header", image.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let vmlinux = dir.join("vmlinux");
    if !vmlinux.exists() {
        bzimage::extract_vmlinux(image, &header, &vmlinux)?;
    }
    Ok(match bzimage::elf_info(&vmlinux)? {
        Some(info) if info.x86_64 && info.pvh => Boot {
            image: vmlinux,
            choice,
        },
        // Built without CONFIG_PVH: the guest decompresses the bzImage itself.
        _ => Boot {
            image: image.to_path_buf(),
            choice: Choice {
                protocol: BootProtocol::BzImage,
                why: "its vmlinux has no PVH entry note (built without CONFIG_PVH)".to_owned(),
            },
        },
    })
}

/// The text of the kernel config at `path`, if it is there and readable.
pub(crate) fn read_config(path: &Path) -> Option<String> {
    let mut text = String::new();
    File::open(path)
        .ok()?
        .take(16 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The first bytes of the image at `path`, as many as a bzImage header needs.
pub(crate) fn read_head(path: &Path) -> anyhow::Result<Vec<u8>> {
    let file =
        File::open(path).with_context(|| format!("cannot open kernel image {}", path.display()))?;
    let mut head = Vec::with_capacity(BzImageHeader::READ_LEN);
    file.take(BzImageHeader::READ_LEN as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read kernel image {}", path.display()))?;
    Ok(head)
}
