//! What a fetch gives the rest of bpfmatrix: a [`Kernel`] ready to boot, the
//! [`BootProtocol`] QEMU enters it by, and where its build configuration is
//! ([`KernelConfig`]), with [`config_value`] to read a symbol out of it.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

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
    /// Its build configuration, when one was found. `None` in cache markers written
    /// before the field existed.
    #[serde(default)]
    pub config: Option<KernelConfig>,
}

/// Where a kernel's build configuration (its `.config`) is, so readers can tell
/// what it was built with (CONFIG_BPF_JIT_ALWAYS_ON, ...): [`KernelConfig::read`]
/// gives the text, [`config_value`] one symbol of it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    pub path: PathBuf,
    pub source: ConfigSource,
}

/// Where a [`KernelConfig`] came from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// `boot/config-<release>` of the kernel's packages (a catalog kernel, or
    /// packages given by path).
    Package,
    /// A file beside an image given by path: `config-<release>` (as in /boot) or a
    /// build tree's `.config`, whose header names the image's version (or none).
    Beside,
    /// Extracted from the image itself (CONFIG_IKCONFIG=y) into the cache.
    Embedded,
}

impl ConfigSource {
    /// Where the config at `path` came from, in words for reports: "boot/config-5.4.286
    /// of the package", "config-5.4.286 beside the image", "the image's embedded
    /// config (CONFIG_IKCONFIG)".
    pub fn describe(&self, path: &Path) -> String {
        let name = path
            .file_name()
            .unwrap_or(path.as_os_str())
            .to_string_lossy();
        match self {
            ConfigSource::Package => format!("boot/{name} of the package"),
            ConfigSource::Beside => format!("{name} beside the image"),
            ConfigSource::Embedded => "the image's embedded config (CONFIG_IKCONFIG)".to_owned(),
        }
    }
}

impl KernelConfig {
    /// The largest config read: real ones are a few hundred kB.
    const MAX_LEN: u64 = 16 << 20;

    /// Where it came from, in words for reports ([`ConfigSource::describe`]).
    pub fn describe(&self) -> String {
        self.source.describe(&self.path)
    }

    /// The config's text. An error names the file if it cannot be read, is not
    /// UTF-8, or is larger than 16 MB (no kernel config is; reading on would only
    /// hide that it is something else).
    pub fn read(&self) -> anyhow::Result<String> {
        let path = &self.path;
        let what = || format!("the kernel config {} ({})", path.display(), self.describe());
        let file = File::open(path).with_context(|| format!("cannot open {}", what()))?;
        let mut text = String::new();
        file.take(Self::MAX_LEN + 1)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", what()))?;
        if text.len() as u64 > Self::MAX_LEN {
            bail!("{} is larger than 16 MB: not a kernel config", what());
        }
        Ok(text)
    }
}

/// What a kernel config says about one symbol ([`config_value`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigValue {
    /// `CONFIG_X=y`: built in.
    Yes,
    /// `CONFIG_X=m`: built as a module.
    Module,
    /// `# CONFIG_X is not set`, `CONFIG_X=n`, or no line for it at all (a symbol
    /// the kernel's version does not have, or whose dependencies are off).
    NotSet,
    /// Any other value, e.g. `CONFIG_HZ=250` -> "250"; a string's quotes and
    /// escapes are removed (`CONFIG_LOCALVERSION="-x"` -> "-x").
    Value(String),
}

/// What the config `text` says about `symbol` ("CONFIG_BPF_JIT_ALWAYS_ON"; the
/// "CONFIG_" may be left out). Where it is set twice the last line wins, as when
/// Kconfig reads it.
pub fn config_value(text: &str, symbol: &str) -> ConfigValue {
    let name = match symbol.strip_prefix("CONFIG_") {
        Some(_) => symbol.to_owned(),
        None => format!("CONFIG_{symbol}"),
    };
    let mut found = ConfigValue::NotSet;
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix(&name).and_then(|r| r.strip_prefix('=')) {
            found = match value {
                "y" => ConfigValue::Yes,
                "m" => ConfigValue::Module,
                "n" => ConfigValue::NotSet,
                _ => ConfigValue::Value(unquote(value)),
            };
        } else if line
            .strip_prefix("# ")
            .and_then(|r| r.strip_prefix(&name))
            .is_some_and(|r| r == " is not set")
        {
            found = ConfigValue::NotSet;
        }
    }
    found
}

/// A Kconfig string value without its quotes and backslash escapes; anything else
/// as it is.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 5.4.286 Kernel Configuration\n#\nCONFIG_BPF=y\nCONFIG_BPF_JIT=y\n# CONFIG_BPF_JIT_ALWAYS_ON is not set\nCONFIG_NET_CLS_BPF=m\nCONFIG_HZ=250\nCONFIG_LOCALVERSION=\"-bpf \\\"x\\\"\"\nCONFIG_DEFAULT_HOSTNAME=\"(none)\"\nCONFIG_EMPTY=\"\"\nCONFIG_PHYSICAL_START=0x1000000\n";

    #[test]
    fn config_values_are_read_symbol_by_symbol() {
        use ConfigValue::*;
        let v = |s| config_value(CONFIG, s);
        assert_eq!(v("CONFIG_BPF"), Yes);
        // Not confused with its longer neighbours, nor they with it.
        assert_eq!(v("CONFIG_BPF_JIT"), Yes);
        assert_eq!(v("CONFIG_BPF_JIT_ALWAYS_ON"), NotSet);
        assert_eq!(v("BPF_JIT_ALWAYS_ON"), NotSet);
        assert_eq!(v("CONFIG_BPF_J"), NotSet);
        assert_eq!(v("CONFIG_NET_CLS_BPF"), Module);
        assert_eq!(v("NET_CLS_BPF"), Module);
        assert_eq!(v("CONFIG_HZ"), Value("250".into()));
        assert_eq!(v("CONFIG_PHYSICAL_START"), Value("0x1000000".into()));
        assert_eq!(v("CONFIG_LOCALVERSION"), Value("-bpf \"x\"".into()));
        assert_eq!(v("CONFIG_DEFAULT_HOSTNAME"), Value("(none)".into()));
        assert_eq!(v("CONFIG_EMPTY"), Value(String::new()));
        assert_eq!(v("CONFIG_NOT_IN_THIS_KERNEL"), NotSet);
        assert_eq!(config_value("", "CONFIG_BPF"), NotSet);
        // The last line wins; "=n" and CRLF lines are understood.
        assert_eq!(
            config_value(
                "CONFIG_BPF_JIT_ALWAYS_ON=y\r\n# CONFIG_BPF_JIT_ALWAYS_ON is not set\r\n",
                "CONFIG_BPF_JIT_ALWAYS_ON"
            ),
            NotSet
        );
        assert_eq!(
            config_value(
                "# CONFIG_BPF_JIT_ALWAYS_ON is not set\nCONFIG_BPF_JIT_ALWAYS_ON=y\n",
                "CONFIG_BPF_JIT_ALWAYS_ON"
            ),
            Yes
        );
        assert_eq!(config_value("CONFIG_X=n\n", "CONFIG_X"), NotSet);
        // A comment mentioning it is no setting.
        assert_eq!(config_value("# CONFIG_X=y is wrong\n", "CONFIG_X"), NotSet);
    }

    #[test]
    fn sources_are_described_for_reports() {
        let p = Path::new("/c/kernels/5.4/root/boot/config-5.4.286");
        assert_eq!(
            ConfigSource::Package.describe(p),
            "boot/config-5.4.286 of the package"
        );
        assert_eq!(
            ConfigSource::Beside.describe(Path::new("/src/linux/.config")),
            ".config beside the image"
        );
        assert_eq!(
            ConfigSource::Beside.describe(Path::new("/boot/config-6.1.0-56-amd64")),
            "config-6.1.0-56-amd64 beside the image"
        );
        assert_eq!(
            ConfigSource::Embedded.describe(Path::new("/c/images/ab/config")),
            "the image's embedded config (CONFIG_IKCONFIG)"
        );
        assert_eq!(
            serde_json::to_string(&ConfigSource::Embedded).unwrap(),
            "\"embedded\""
        );
    }

    #[test]
    fn a_config_is_read_whole_and_a_huge_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = KernelConfig {
            path: dir.path().join("config-5.4.286"),
            source: ConfigSource::Beside,
        };
        let err = format!("{:#}", config.read().unwrap_err());
        assert!(
            err.starts_with(&format!(
                "cannot open the kernel config {} (config-5.4.286 beside the image)",
                config.path.display()
            )),
            "{err}"
        );
        std::fs::write(&config.path, CONFIG).unwrap();
        let text = config.read().unwrap();
        assert_eq!(text, CONFIG);
        assert_eq!(
            config_value(&text, "CONFIG_HZ"),
            ConfigValue::Value("250".into())
        );
        std::fs::write(&config.path, vec![b'#'; (16 << 20) + 1]).unwrap();
        let err = config.read().unwrap_err().to_string();
        assert!(
            err.ends_with("is larger than 16 MB: not a kernel config"),
            "{err}"
        );
    }

    /// A marker written before `config` existed still reads.
    #[test]
    fn a_kernel_without_a_config_field_reads_as_none() {
        let old = r#"{"name":"k","release":null,"image":"/k/bzImage","boot_image":"/k/bzImage","boot_protocol":"bz_image","modules_dir":null,"source":"s"}"#;
        let kernel: Kernel = serde_json::from_str(old).unwrap();
        assert_eq!(kernel.config, None);
        assert_eq!(kernel.boot_protocol, BootProtocol::BzImage);
        let with = Kernel {
            config: Some(KernelConfig {
                path: "/c/config".into(),
                source: ConfigSource::Package,
            }),
            ..kernel
        };
        let json = serde_json::to_string(&with).unwrap();
        assert!(
            json.contains(r#""config":{"path":"/c/config","source":"package"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Kernel>(&json).unwrap(), with);
    }
}
