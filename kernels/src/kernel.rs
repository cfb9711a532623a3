//! What a fetch gives the rest of bpfmatrix: a [`Kernel`] ready to boot, and the
//! [`BootProtocol`] QEMU enters it by.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How QEMU enters the kernel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BootProtocol {
    /// An uncompressed ELF vmlinux with a PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`):
    /// QEMU jumps straight into it, no in-guest decompression. Chosen only for Linux
    /// 5.0 and newer or a config with CONFIG_PVH=y: before 5.0 the note is
    /// CONFIG_XEN_PVH's, an entry only a Xen guest survives.
    Pvh,
    /// A classic bzImage: the guest decompresses itself first (seconds under TCG).
    /// Every kernel older than 5.0 boots this way, and any whose vmlinux lacks the
    /// PVH note.
    BzImage,
}

/// A kernel ready to boot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The user's name for it (e.g. "debian-6.1").
    pub name: String,
    /// `uname -r` of the kernel when known, e.g. "6.1.0-56-amd64".
    pub release: Option<String>,
    /// The image the package or the user gave (usually a bzImage).
    pub image: PathBuf,
    /// The image QEMU boots (the extracted vmlinux for PVH, else `image`).
    pub boot_image: PathBuf,
    /// Why this one: a fetch says so in its progress lines ("booting the bzImage:
    /// Linux 4.16 is older than 5.0, ..."); the rule is in [`BootProtocol`].
    pub boot_protocol: BootProtocol,
    /// `.../lib/modules/<release>` when modules are available.
    pub modules_dir: Option<PathBuf>,
    /// Where it came from, for reports, e.g.
    /// "debian bookworm linux-image-6.1.0-56-amd64-unsigned 6.1.192-2".
    pub source: String,
}
