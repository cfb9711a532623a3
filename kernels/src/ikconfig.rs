//! The config a kernel built with CONFIG_IKCONFIG=y carries inside itself, read the
//! way the kernel's `scripts/extract-ikconfig` reads it: the marker "IKCFG_ST",
//! then a gzip member holding the config text (then "IKCFG_ED", which the gzip
//! member's own end makes needless). An ELF vmlinux holds it as it is; a bzImage
//! inside its compressed payload, so that is searched decompressed.
//! (CONFIG_IKCONFIG=m puts it into configs.ko instead: no config in the image.)

use crate::bzimage::{self, BzImageHeader};
use crate::kernel::{ConfigSource, KernelConfig};
use anyhow::{bail, Context};
use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

/// "IKCFG_ST" and the start of a gzip member with deflate (1f 8b 08), as
/// extract-ikconfig looks for it.
const MARKER: &[u8] = b"IKCFG_ST\x1f\x8b\x08";
/// The gzip member starts after "IKCFG_ST".
const GZIP_AT: u64 = 8;
/// The largest config taken: real ones are a few hundred kB.
const MAX_LEN: u64 = 16 << 20;
/// What is searched at a time; consecutive chunks overlap by a marker's length.
const CHUNK: u64 = 8 << 20;

/// The name of the extracted config in the image's cache folder.
pub(crate) const FILE: &str = "config";

/// The config embedded in the kernel at `image`, written into `dir/config` (once: an
/// existing one is reused, `dir` being this image's own folder in the cache).
/// `None` if the image holds none (built without CONFIG_IKCONFIG=y, or a bzImage
/// whose payload is compressed in a way this crate does not read). See
/// [`find_embedded`] for where it looks and what is an error.
pub(crate) fn embedded_config(image: &Path, dir: &Path) -> anyhow::Result<Option<KernelConfig>> {
    let path = dir.join(FILE);
    if !path.is_file() {
        let Some(text) = find_embedded(image, dir)? else {
            return Ok(None);
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        crate::util::write_atomically(&path, text.as_bytes())?;
    }
    Ok(Some(KernelConfig {
        path,
        source: ConfigSource::Embedded,
    }))
}

/// The text of the config embedded in the kernel at `image`: searched for in the
/// file as it is (an ELF vmlinux), then, for a bzImage, in its vmlinux: the one
/// already extracted into `dir/vmlinux` if there is one, else the payload
/// decompressed in memory. `None` where neither holds the marker. A marker whose
/// gzip stream does not decode is an error naming the image only if no other
/// marker gives a config; a payload that does not decompress is one too.
pub(crate) fn find_embedded(image: &Path, dir: &Path) -> anyhow::Result<Option<String>> {
    let open = || File::open(image).with_context(|| format!("cannot open {}", image.display()));
    let corrupt = |e: anyhow::Error| {
        e.context(format!(
            "the embedded config (CONFIG_IKCONFIG) of kernel image {} is corrupt",
            image.display()
        ))
    };
    let raw = match find_in(open()?) {
        Ok(Some(text)) => return Ok(Some(text)),
        Ok(None) => None,
        Err(e) => Some(e),
    };
    let mut head = Vec::with_capacity(BzImageHeader::READ_LEN);
    open()?
        .take(BzImageHeader::READ_LEN as u64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {}", image.display()))?;
    // Not a bzImage, or one with an unusable header: the raw search is all there is.
    let header = BzImageHeader::parse(&head).ok().flatten();
    let inner = match header {
        None => Ok(None),
        Some(header) => {
            let vmlinux = dir.join("vmlinux");
            if vmlinux.is_file() {
                let file = File::open(&vmlinux)
                    .with_context(|| format!("cannot open {}", vmlinux.display()))?;
                find_in(file)
            } else {
                let mut bytes = Vec::new();
                match bzimage::decompress_payload(image, &header, &mut bytes)? {
                    Some(_) => find_in(Cursor::new(bytes)),
                    None => Ok(None),
                }
            }
        }
    };
    match (inner, raw) {
        (Ok(Some(text)), _) => Ok(Some(text)),
        (Ok(None), None) => Ok(None),
        (Err(e), _) | (Ok(None), Some(e)) => Err(corrupt(e)),
    }
}

/// The config embedded in `data` (a kernel image's bytes): the first marker whose
/// gzip member decodes. `None` if there is no marker; an error (the first marker's)
/// if there are markers and none decodes.
fn find_in(mut data: impl Read + Seek) -> anyhow::Result<Option<String>> {
    let mut from = 0;
    let mut failure = None;
    while let Some(at) = next_marker(&mut data, from)? {
        data.seek(SeekFrom::Start(at + GZIP_AT))?;
        match gunzip(&mut data) {
            Ok(text) => return Ok(Some(text)),
            Err(e) => {
                failure.get_or_insert(e.context(format!("its gzip stream at byte {at}")));
            }
        }
        from = at + 1;
    }
    failure.map_or(Ok(None), Err)
}

/// The offset of the first [`MARKER`] at or after `from`.
fn next_marker(data: &mut (impl Read + Seek), from: u64) -> anyhow::Result<Option<u64>> {
    // regex finds its literal with memchr's fast search; a vmlinux with debug
    // information is hundreds of MB.
    static FINDER: std::sync::LazyLock<regex::bytes::Regex> = std::sync::LazyLock::new(|| {
        regex::bytes::Regex::new(r"(?-u)IKCFG_ST\x1f\x8b\x08").expect("a valid pattern")
    });
    data.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    // The offset of buf[0] in `data`.
    let mut base = from;
    loop {
        let read = data.by_ref().take(CHUNK).read_to_end(&mut buf)?;
        if let Some(found) = FINDER.find(&buf) {
            return Ok(Some(base + found.start() as u64));
        }
        if read == 0 {
            return Ok(None);
        }
        // Keep what could be the start of a marker cut by the chunk's end.
        let done = buf.len().saturating_sub(MARKER.len() - 1);
        buf.drain(..done);
        base += done as u64;
    }
}

/// The text of the gzip member `data` is at: at most 16 MB, UTF-8, its CRC checked.
fn gunzip(data: impl Read) -> anyhow::Result<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(data.take(MAX_LEN))
        .take(MAX_LEN + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_LEN {
        bail!("it holds more than 16 MB: no kernel config is that large");
    }
    Ok(text)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bzimage::tests::{synthetic_bzimage_of, synthetic_vmlinux, xz};
    use std::io::Write;

    pub(crate) const CONFIG_54: &str = "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 5.4.286 Kernel Configuration\n#\nCONFIG_BPF=y\nCONFIG_BPF_SYSCALL=y\nCONFIG_BPF_JIT=y\nCONFIG_BPF_JIT_ALWAYS_ON=y\nCONFIG_IKCONFIG=y\n";

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// `config` as kernel/configs.c lays it out: "IKCFG_ST", its gzip, "IKCFG_ED".
    pub(crate) fn ikconfig_blob(config: &str) -> Vec<u8> {
        [
            b"IKCFG_ST".as_slice(),
            &gzip(config.as_bytes()),
            b"IKCFG_ED",
        ]
        .concat()
    }

    /// A synthetic vmlinux of `release` with `config` embedded after its sections.
    pub(crate) fn vmlinux_with_config(release: &str, config: &str) -> Vec<u8> {
        let mut vmlinux = synthetic_vmlinux(Some(release), true, true);
        vmlinux.extend_from_slice(b"\0rodata before it\0");
        vmlinux.extend_from_slice(&ikconfig_blob(config));
        vmlinux.extend_from_slice(b"\0rodata after it\0");
        vmlinux
    }

    fn find(bytes: &[u8]) -> anyhow::Result<Option<String>> {
        find_in(Cursor::new(bytes))
    }

    #[test]
    fn the_config_between_the_markers_is_extracted() {
        let mut image = vec![0x90u8; 3000];
        image.extend_from_slice(&ikconfig_blob(CONFIG_54));
        image.extend_from_slice(&[0xccu8; 500]);
        let text = find(&image).unwrap().unwrap();
        assert_eq!(text, CONFIG_54);
        assert_eq!(
            crate::kernel::config_value(&text, "CONFIG_BPF_JIT_ALWAYS_ON"),
            crate::kernel::ConfigValue::Yes
        );
        // At the very start and the very end of the data too.
        assert_eq!(
            find(&ikconfig_blob("CONFIG_A=y\n")).unwrap().as_deref(),
            Some("CONFIG_A=y\n")
        );
        let mut no_end = vec![0u8; 10];
        no_end.extend_from_slice(b"IKCFG_ST");
        no_end.extend_from_slice(&gzip(b"CONFIG_B=m\n"));
        assert_eq!(find(&no_end).unwrap().as_deref(), Some("CONFIG_B=m\n"));
    }

    #[test]
    fn no_marker_is_no_config() {
        assert_eq!(find(b"").unwrap(), None);
        assert_eq!(find(&[0u8; 100_000]).unwrap(), None);
        // The marker's text without a gzip member after it (a string in .rodata).
        assert_eq!(find(b"xx IKCFG_ST and IKCFG_ED yy").unwrap(), None);
    }

    #[test]
    fn a_marker_cut_by_a_chunk_boundary_is_found() {
        let blob = ikconfig_blob(CONFIG_54);
        for cut in [1usize, 5, 8, 10] {
            // The first chunk ends `cut` bytes into the marker.
            let mut bytes = vec![0u8; CHUNK as usize - cut];
            bytes.extend_from_slice(&blob);
            assert_eq!(
                find(&bytes).unwrap().as_deref(),
                Some(CONFIG_54),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn a_corrupt_stream_is_an_error_unless_another_marker_decodes() {
        let blob = ikconfig_blob(CONFIG_54);
        let mut corrupt = blob.clone();
        // Flip bytes of the deflate data: the CRC (or the inflater) catches it.
        let mid = 8 + 10 + (blob.len() - 8 - 10 - 8 - 8) / 2;
        for b in &mut corrupt[mid..mid + 4] {
            *b ^= 0x55;
        }
        let mut bytes = vec![0u8; 64];
        bytes.extend_from_slice(&corrupt);
        let msg = format!("{:#}", find(&bytes).unwrap_err());
        assert!(msg.starts_with("its gzip stream at byte 64: "), "{msg}");
        // Cut short.
        let msg = format!("{:#}", find(&blob[..blob.len() / 2]).unwrap_err());
        assert!(msg.starts_with("its gzip stream at byte 0: "), "{msg}");
        // A good one after a corrupt one is taken.
        bytes.extend_from_slice(&blob);
        assert_eq!(find(&bytes).unwrap().as_deref(), Some(CONFIG_54));
    }

    #[test]
    fn a_vmlinux_config_is_found_in_place_and_a_bzimage_s_in_its_payload() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cache = d.join("cache");
        // An ELF vmlinux: searched as it is.
        let vmlinux = d.join("vmlinux");
        std::fs::write(&vmlinux, vmlinux_with_config("5.4.286", CONFIG_54)).unwrap();
        let config = embedded_config(&vmlinux, &cache).unwrap().unwrap();
        assert_eq!(config.path, cache.join("config"));
        assert_eq!(config.source, ConfigSource::Embedded);
        assert_eq!(config.read().unwrap(), CONFIG_54);

        // A bzImage: the config is only in its xz payload.
        let payload_config = format!("{CONFIG_54}CONFIG_HZ=250\n");
        let inner = vmlinux_with_config("5.4.286", &payload_config);
        let image = d.join("bzImage");
        let bytes = synthetic_bzimage_of("5.4.286 (b@h) #1 SMP", &xz(&inner), 0, None);
        assert!(!bytes.windows(8).any(|w| w == b"IKCFG_ST"));
        std::fs::write(&image, &bytes).unwrap();
        let other = d.join("other");
        let text = find_embedded(&image, &other).unwrap().unwrap();
        assert_eq!(text, payload_config);
        let config = embedded_config(&image, &other).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(&config.path).unwrap(), text);
        assert!(
            !other.join("vmlinux").exists(),
            "decompressed in memory only"
        );
        // Written once: the file in the cache is what is used from then on.
        std::fs::write(&config.path, "CONFIG_CACHED=y\n").unwrap();
        let again = embedded_config(&image, &other).unwrap().unwrap();
        assert_eq!(again.read().unwrap(), "CONFIG_CACHED=y\n");

        // A vmlinux already extracted beside it is searched instead.
        let third = d.join("third");
        std::fs::create_dir_all(&third).unwrap();
        std::fs::write(
            third.join("vmlinux"),
            vmlinux_with_config("5.4.286", "CONFIG_FROM_VMLINUX=y\n"),
        )
        .unwrap();
        assert_eq!(
            find_embedded(&image, &third).unwrap().as_deref(),
            Some("CONFIG_FROM_VMLINUX=y\n")
        );
    }

    #[test]
    fn an_image_without_ikconfig_has_none_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let image = d.join("bzImage");
        let vmlinux = synthetic_vmlinux(Some("5.4.286"), true, true);
        std::fs::write(
            &image,
            synthetic_bzimage_of("5.4.286 (b@h) #1 SMP", &xz(&vmlinux), 0, None),
        )
        .unwrap();
        let cache = d.join("cache");
        assert_eq!(embedded_config(&image, &cache).unwrap(), None);
        assert!(!cache.exists());
        // A payload compressed with what this crate does not read (bzip2): no
        // config found, no error.
        let mut bzip2 = b"BZh91AY&SY".to_vec();
        bzip2.extend_from_slice(&[0u8; 100]);
        std::fs::write(
            &image,
            synthetic_bzimage_of("4.4.0 (b@h) #1 SMP", &bzip2, 0, None),
        )
        .unwrap();
        assert_eq!(embedded_config(&image, &cache).unwrap(), None);
    }

    #[test]
    fn a_corrupt_embedded_config_is_an_error_naming_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut blob = ikconfig_blob(CONFIG_54);
        let len = blob.len();
        blob.truncate(len - 20);
        let mut vmlinux = synthetic_vmlinux(Some("5.4.286"), true, true);
        vmlinux.extend_from_slice(&blob);
        let path = d.join("vmlinux");
        std::fs::write(&path, &vmlinux).unwrap();
        let msg = format!(
            "{:#}",
            embedded_config(&path, &d.join("cache")).unwrap_err()
        );
        assert!(
            msg.starts_with(&format!(
                "the embedded config (CONFIG_IKCONFIG) of kernel image {} is corrupt: its gzip stream at byte ",
                path.display()
            )),
            "{msg}"
        );
        assert!(!d.join("cache").exists());

        // A corrupt stream in the bzImage's own bytes does not matter when its
        // payload holds a good one.
        let good = vmlinux_with_config("5.4.286", CONFIG_54);
        let mut image = synthetic_bzimage_of("5.4.286 (b@h) #1 SMP", &xz(&good), 0, None);
        image[0x800..0x800 + blob.len().min(0x200)].copy_from_slice(&blob[..blob.len().min(0x200)]);
        let path = d.join("bzImage");
        std::fs::write(&path, &image).unwrap();
        assert!(
            find_in(File::open(&path).unwrap()).is_err(),
            "the raw bytes hold a corrupt one"
        );
        assert_eq!(
            find_embedded(&path, &d.join("x")).unwrap().as_deref(),
            Some(CONFIG_54)
        );
        // A payload that does not decompress is an error naming the image.
        let mut broken = xz(&good);
        let n = broken.len();
        broken[n / 2..n / 2 + 8].copy_from_slice(&[0xff; 8]);
        std::fs::write(
            &path,
            synthetic_bzimage_of("5.4.286 (b@h) #1 SMP", &broken, 0, None),
        )
        .unwrap();
        let msg = format!("{:#}", find_embedded(&path, &d.join("y")).unwrap_err());
        assert!(
            msg.contains(&format!("payload of kernel image {}", path.display())),
            "{msg}"
        );
    }
}
