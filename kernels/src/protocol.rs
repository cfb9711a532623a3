//! Decides how QEMU enters a kernel: through PVH (the vmlinux's
//! `XEN_ELFNOTE_PHYS32_ENTRY` note) only where that entry is the one made for any
//! loader, else through the bzImage.
//!
//! The note alone does not say which entry it is. Before Linux 5.0 it exists only
//! with CONFIG_XEN_PVH, an entry that sets the guest up as a Xen guest: a QEMU guest
//! that is not Xen dies at once booting through it (a 4.16.13 built with
//! CONFIG_XEN_PVH=y, as Ubuntu's 4.x configs are: `alloc_low_pages: ran out of
//! memory`). Linux 5.0 split the generic part out as CONFIG_PVH (which CONFIG_XEN_PVH
//! selects from then on). So PVH is chosen for 5.0 and newer, or when the kernel's
//! own config says CONFIG_PVH=y (a backport); anything else boots the bzImage, which
//! is slower under TCG but always works.

use crate::kernel::BootProtocol;

/// How a kernel boots, and why, in words for progress lines and error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Choice {
    pub protocol: BootProtocol,
    pub why: String,
}

/// The protocol for a kernel whose `uname -r` is `release` (when known) and whose
/// config text is `config` (when found). PVH means "its PVH note, if it has one, is
/// safe to enter"; the caller still checks that the note is there.
pub(crate) fn choose(release: Option<&str>, config: Option<&str>) -> Choice {
    let version = release.and_then(major_minor);
    let mut ignored = String::new();
    let config = config.filter(|text| match config_for_another(text, release) {
        Some(made_for) => {
            ignored = format!(
                " (the config beside it is for Linux {}.{}, so it was not used)",
                made_for.0, made_for.1
            );
            false
        }
        None => true,
    });
    let (protocol, why) = match (config.map(config_has_pvh), version) {
        (Some(true), _) => (BootProtocol::Pvh, "its config has CONFIG_PVH=y".to_owned()),
        (Some(false), _) => (
            BootProtocol::BzImage,
            "its config does not set CONFIG_PVH=y, so a PVH note in it can only be Xen's (CONFIG_XEN_PVH)".to_owned(),
        ),
        (None, Some((major, minor))) if (major, minor) >= (5, 0) => (
            BootProtocol::Pvh,
            format!("Linux {major}.{minor} is 5.0 or newer, where the PVH entry is CONFIG_PVH's, made for any loader"),
        ),
        (None, Some((major, minor))) => (
            BootProtocol::BzImage,
            format!("Linux {major}.{minor} is older than 5.0, where a PVH note can only be Xen's (CONFIG_XEN_PVH), and no config of it says CONFIG_PVH=y"),
        ),
        (None, None) => (
            BootProtocol::BzImage,
            "its version is unknown and no config of it says CONFIG_PVH=y".to_owned(),
        ),
    };
    Choice {
        protocol,
        why: why + &ignored,
    }
}

/// The version (major, minor) the config `text` was made for, if its header names
/// one and it is not the version of `release`: a config lying beside an image may
/// belong to another build, and is then not that kernel's. Major and minor only:
/// Debian's release "6.1.0-56-amd64" is built from 6.1.158, its config says so.
/// A config without the header, or a kernel of unknown version, gives `None`.
pub(crate) fn config_for_another(text: &str, release: Option<&str>) -> Option<(u32, u32)> {
    let made_for = config_version(text)?;
    let kernel = major_minor(release?)?;
    (made_for != kernel).then_some(made_for)
}

/// The major and minor version at the start of a release ("4.16.0-041600-generic"
/// → (4, 16)).
pub(crate) fn major_minor(release: &str) -> Option<(u32, u32)> {
    let (major, rest) = release.split_at(release.find(|c: char| !c.is_ascii_digit())?);
    let major = major.parse().ok()?;
    // The separator must be a dot: "4-16" is no version.
    let minor = rest.strip_prefix('.')?;
    let end = minor
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(minor.len());
    Some((major, minor[..end].parse().ok()?))
}

/// Whether a kernel config sets CONFIG_PVH=y. "# CONFIG_PVH is not set" and a config
/// without the symbol (every config before 5.0) both say no.
fn config_has_pvh(config: &str) -> bool {
    config.lines().any(|l| l.trim() == "CONFIG_PVH=y")
}

/// The version a config was made for, from its header
/// ("# Linux/x86 4.16.13 Kernel Configuration").
fn config_version(config: &str) -> Option<(u32, u32)> {
    config.lines().take(10).find_map(|line| {
        let rest = line.strip_prefix("# Linux/")?;
        let (_arch, rest) = rest.split_once(' ')?;
        let (version, tail) = rest.split_once(' ')?;
        tail.starts_with("Kernel Configuration")
            .then(|| major_minor(version))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const XEN_ONLY_416: &str = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 4.16.13 Kernel Configuration\n#\nCONFIG_XEN=y\nCONFIG_XEN_PVH=y\n";
    const PVH_54: &str = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 5.4.0 Kernel Configuration\n#\nCONFIG_PVH=y\nCONFIG_XEN_PVH=y\n";

    #[test]
    fn versions_are_read_from_releases() {
        assert_eq!(major_minor("4.16.0-041600-generic"), Some((4, 16)));
        assert_eq!(major_minor("5.4.220-0504220-generic"), Some((5, 4)));
        assert_eq!(major_minor("6.1.0-56-amd64"), Some((6, 1)));
        assert_eq!(major_minor("5.0.0-rc1"), Some((5, 0)));
        assert_eq!(major_minor("6.12"), Some((6, 12)));
        assert_eq!(major_minor("4-16"), None);
        assert_eq!(major_minor("vmlinuz"), None);
        assert_eq!(major_minor(""), None);
        assert_eq!(config_version(XEN_ONLY_416), Some((4, 16)));
        assert_eq!(config_version("CONFIG_PVH=y\n"), None);
        // Another kernel's config, by its header.
        assert_eq!(config_for_another(PVH_54, Some("4.16.13")), Some((5, 4)));
        assert_eq!(
            config_for_another(PVH_54, Some("5.4.0-050400-generic")),
            None
        );
        assert_eq!(config_for_another(PVH_54, Some("5.4.286")), None);
        assert_eq!(config_for_another(PVH_54, None), None);
        assert_eq!(config_for_another("CONFIG_PVH=y\n", Some("4.16.13")), None);
    }

    #[test]
    fn pvh_only_from_5_0_or_with_config_pvh() {
        let choose = |r, c| choose(r, c).protocol;
        use BootProtocol::{BzImage, Pvh};
        // The version alone.
        assert_eq!(choose(Some("4.16.0-041600-generic"), None), BzImage);
        assert_eq!(choose(Some("4.20.17-042017-generic"), None), BzImage);
        assert_eq!(choose(Some("5.0.0-050000-generic"), None), Pvh);
        assert_eq!(choose(Some("5.4.0-050400-generic"), None), Pvh);
        assert_eq!(choose(Some("6.1.0-56-amd64"), None), Pvh);
        assert_eq!(choose(None, None), BzImage);
        assert_eq!(choose(Some("weird"), None), BzImage);
        // The config decides when there is one: CONFIG_XEN_PVH alone is not enough,
        // a backported CONFIG_PVH is.
        assert_eq!(choose(Some("4.16.13"), Some(XEN_ONLY_416)), BzImage);
        let backport = XEN_ONLY_416.replace("CONFIG_XEN=y", "CONFIG_PVH=y");
        assert_eq!(choose(Some("4.16.13"), Some(&backport)), Pvh);
        assert_eq!(choose(None, Some(PVH_54)), Pvh);
        assert_eq!(choose(None, Some(XEN_ONLY_416)), BzImage);
        let off = PVH_54.replace("CONFIG_PVH=y", "# CONFIG_PVH is not set");
        assert_eq!(choose(Some("5.4.0"), Some(&off)), BzImage);
        // Another kernel's config is not used.
        assert_eq!(choose(Some("4.16.0-041600-generic"), Some(PVH_54)), BzImage);
        assert_eq!(
            choose(Some("5.4.0-050400-generic"), Some(XEN_ONLY_416)),
            Pvh
        );
    }

    #[test]
    fn the_reason_is_given() {
        let c = choose(Some("4.16.0-041600-generic"), None);
        assert!(
            c.why.contains("Linux 4.16 is older than 5.0") && c.why.contains("CONFIG_XEN_PVH"),
            "{}",
            c.why
        );
        let c = choose(Some("5.4.0-050400-generic"), None);
        assert!(c.why.starts_with("Linux 5.4 is 5.0 or newer"), "{}", c.why);
        let c = choose(Some("4.16.0-041600-generic"), Some(PVH_54));
        assert!(
            c.why
                .ends_with("(the config beside it is for Linux 5.4, so it was not used)"),
            "{}",
            c.why
        );
        assert_eq!(
            choose(None, None).why,
            "its version is unknown and no config of it says CONFIG_PVH=y"
        );
    }
}
