//! Reads what kernel image files say about themselves: a bzImage's x86 boot header
//! (and the uncompressed vmlinux in its payload, so QEMU can boot the kernel through
//! PVH instead of making the guest decompress itself under TCG), and a vmlinux's ELF
//! notes and version banner.

use anyhow::{bail, Context};
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// How a bzImage's payload is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Zstd,
    Gzip,
    /// LZ4's legacy format, which Ubuntu's kernels use from 19.10 (5.3) on.
    Lz4,
}

impl Compression {
    fn from_magic(bytes: &[u8]) -> Option<Compression> {
        if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if bytes.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if bytes.starts_with(&LZ4_LEGACY_MAGIC) {
            Some(Compression::Lz4)
        } else {
            None
        }
    }
}

/// The parts of the x86 boot protocol header (Documentation/arch/x86/boot.rst)
/// this crate needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BzImageHeader {
    /// Boot protocol version, e.g. 0x020f.
    pub protocol: u16,
    /// File offset of the compressed payload.
    pub payload_start: u64,
    pub payload_length: u32,
    /// The start of the kernel's version string ("6.1.0-56-amd64 (debian...) #1 ..."),
    /// when the header points at one.
    pub version: Option<String>,
}

impl BzImageHeader {
    /// Offset of the "HdrS" magic.
    const MAGIC_AT: usize = 0x202;
    /// Enough of the file to hold the setup header and, usually, the version string.
    pub const READ_LEN: usize = 0x10000;

    /// True if `head` (the file's first bytes) carries the boot header magic.
    pub fn is_bzimage(head: &[u8]) -> bool {
        head.get(Self::MAGIC_AT..Self::MAGIC_AT + 4) == Some(b"HdrS")
    }

    /// Parses the header from the file's first bytes. `None` if there is no "HdrS"
    /// magic; an error if the header is there but unusable.
    pub fn parse(head: &[u8]) -> anyhow::Result<Option<BzImageHeader>> {
        if !Self::is_bzimage(head) {
            return Ok(None);
        }
        let u16_at = |at: usize| u16::from_le_bytes([head[at], head[at + 1]]);
        let u32_at = |at: usize| {
            head.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        };
        let protocol = u16_at(0x206);
        // payload_offset exists from boot protocol 2.08 (kernel 2.6.26) on.
        if protocol < 0x0208 {
            bail!("boot protocol {protocol:#06x} is older than 2.08: no payload_offset field");
        }
        // 0 means 4 for historical reasons.
        let setup_sects = match head[0x1f1] {
            0 => 4,
            n => u64::from(n),
        };
        let (Some(payload_offset), Some(payload_length)) = (u32_at(0x248), u32_at(0x24c)) else {
            bail!("the setup header is cut short");
        };
        let payload_start = (setup_sects + 1) * 512 + u64::from(payload_offset);
        // kernel_version points at a NUL-terminated string, relative to 0x200.
        let version_at = usize::from(u16_at(0x20e)) + 0x200;
        let version = (u16_at(0x20e) != 0)
            .then(|| head.get(version_at..))
            .flatten()
            .and_then(|rest| {
                let end = rest.iter().position(|&b| b == 0)?;
                std::str::from_utf8(&rest[..end]).ok().map(str::to_owned)
            });
        Ok(Some(BzImageHeader {
            protocol,
            payload_start,
            payload_length,
            version,
        }))
    }

    /// The kernel release (`uname -r`): the version string's first word.
    pub fn release(&self) -> Option<String> {
        self.version
            .as_deref()
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_owned)
    }
}

/// Decompresses the payload of the bzImage at `image` into the file `out` (through
/// a temporary sibling, so no half-written file is left), returning the
/// compression used. The decoder reads from the payload start to the end of the
/// file and stops at the end of the compressed stream: decoding exactly
/// `payload_length` bytes fails for some kernels (the kernel appends the
/// decompressed size inside the payload), and a streaming decoder does not care.
pub fn extract_vmlinux(
    image: &Path,
    header: &BzImageHeader,
    out: &Path,
) -> anyhow::Result<Compression> {
    let Payload { input, compression } = open_payload(image, header)?;
    let compression = compression.map_err(|magic| {
        anyhow::anyhow!(
            "kernel image {}: unknown payload compression (magic {magic:02x?}); only xz, zstd, gzip and lz4 are supported",
            image.display()
        )
    })?;
    let tmp = crate::util::tmp_sibling(out);
    let result = (|| -> anyhow::Result<()> {
        let mut writer = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        decode(compression, header, input, &mut writer)?;
        writer.flush()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| cannot_decompress(compression, image));
    }
    std::fs::rename(&tmp, out)?;
    Ok(compression)
}

/// [`extract_vmlinux`] into `out` in memory (or any writer): the compression used,
/// or `None`, with nothing written, when the payload is compressed in a way this
/// crate does not read (bzip2, lzma, lzo).
pub(crate) fn decompress_payload(
    image: &Path,
    header: &BzImageHeader,
    out: &mut dyn Write,
) -> anyhow::Result<Option<Compression>> {
    let Payload { input, compression } = open_payload(image, header)?;
    let Ok(compression) = compression else {
        return Ok(None);
    };
    decode(compression, header, input, out)
        .with_context(|| cannot_decompress(compression, image))?;
    Ok(Some(compression))
}

fn cannot_decompress(compression: Compression, image: &Path) -> String {
    format!(
        "cannot decompress the {compression:?} payload of kernel image {} (is the file truncated or corrupt?)",
        image.display()
    )
}

/// A bzImage's payload, opened.
struct Payload {
    /// Reads from the payload's start.
    input: BufReader<File>,
    /// Its compression, or its first bytes when that is not one this crate reads.
    compression: Result<Compression, [u8; 6]>,
}

/// The bzImage's payload; an error names the image if it is cut short.
fn open_payload(image: &Path, header: &BzImageHeader) -> anyhow::Result<Payload> {
    let mut file = File::open(image).with_context(|| format!("cannot open {}", image.display()))?;
    let len = file.metadata()?.len();
    if header.payload_start + u64::from(header.payload_length) > len {
        bail!(
            "kernel image {} is truncated: its header says the payload ends at byte {}, the file has {len} bytes",
            image.display(),
            header.payload_start + u64::from(header.payload_length)
        );
    }
    file.seek(SeekFrom::Start(header.payload_start))?;
    let mut magic = [0u8; 6];
    file.read_exact(&mut magic)
        .with_context(|| format!("kernel image {} is truncated", image.display()))?;
    file.seek(SeekFrom::Start(header.payload_start))?;
    Ok(Payload {
        input: BufReader::with_capacity(1 << 20, file),
        compression: Compression::from_magic(&magic).ok_or(magic),
    })
}

/// Decodes the payload read from `input` (from its start) into `out`.
fn decode(
    compression: Compression,
    header: &BzImageHeader,
    input: BufReader<File>,
    mut out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut decoder: Box<dyn Read> = match compression {
        Compression::Xz => return xz_single_stream(input, &mut out),
        Compression::Lz4 => {
            return lz4_legacy(input.take(u64::from(header.payload_length)), &mut out)
        }
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(input)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?,
        ),
    };
    io::copy(&mut decoder, &mut out)?;
    Ok(())
}

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];

/// Decodes LZ4's legacy format as the kernel writes it (`lz4 -l`): the magic, then
/// blocks of at most 8 MiB decompressed, each after its little-endian compressed
/// length; the kernel's build appends the decompressed size (4 bytes), which is
/// told apart from a block by being longer than what is left. `input` ends where
/// the payload ends.
fn lz4_legacy(mut input: impl Read, out: &mut impl Write) -> anyhow::Result<()> {
    const BLOCK: usize = 8 << 20;
    let mut data = Vec::new();
    input.read_to_end(&mut data)?;
    let mut rest = data
        .strip_prefix(&LZ4_LEGACY_MAGIC)
        .context("no LZ4 legacy magic")?;
    let mut buf = vec![0u8; BLOCK];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap());
        if len.to_le_bytes() == LZ4_LEGACY_MAGIC {
            rest = &rest[4..];
            continue;
        }
        let len = len as usize;
        if len > rest.len() - 4 {
            break; // the appended decompressed size
        }
        let block = &rest[4..4 + len];
        let n = lz4_flex::block::decompress_into(block, &mut buf)
            .map_err(|e| anyhow::anyhow!("corrupt LZ4 block: {e}"))?;
        out.write_all(&buf[..n])?;
        rest = &rest[4 + len..];
    }
    Ok(())
}

/// Decodes one xz stream and stops at its end. xz2's reader would go on to parse
/// whatever follows (the kernel appends the decompressed size) as a second stream
/// and call it corrupt.
fn xz_single_stream(mut input: impl BufRead, out: &mut impl Write) -> anyhow::Result<()> {
    use xz2::stream::{Action, Status, Stream};
    let mut stream = Stream::new_stream_decoder(u64::MAX, 0)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let chunk = input.fill_buf()?;
        let eof = chunk.is_empty();
        let (in_before, out_before) = (stream.total_in(), stream.total_out());
        let status = stream.process(
            chunk,
            &mut buf,
            if eof { Action::Finish } else { Action::Run },
        )?;
        let consumed = (stream.total_in() - in_before) as usize;
        let produced = (stream.total_out() - out_before) as usize;
        input.consume(consumed);
        out.write_all(&buf[..produced])?;
        if status == Status::StreamEnd {
            return Ok(());
        }
        if eof && produced == 0 {
            bail!("the xz stream ends early");
        }
    }
}

/// What an ELF file says about itself, as far as booting it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    pub x86_64: bool,
    /// Carries a `XEN_ELFNOTE_PHYS32_ENTRY` note: QEMU can boot it through PVH.
    pub pvh: bool,
}

/// `XEN_ELFNOTE_PHYS32_ENTRY`, the note QEMU looks for to boot an ELF through PVH.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Reads the ELF header and notes of `path`; `None` if it is not a 64-bit ELF.
pub fn elf_info(path: &Path) -> anyhow::Result<Option<ElfInfo>> {
    use object::elf::FileHeader64;
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::Endianness;

    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let data = object::ReadCache::new(file);
    let Ok(header) = FileHeader64::<Endianness>::parse(&data) else {
        return Ok(None);
    };
    let endian = header.endian()?;
    let x86_64 = header.e_machine(endian) == object::elf::EM_X86_64;
    let truncated = || format!("kernel image {} is truncated", path.display());
    let headers = header
        .program_headers(endian, &data)
        .with_context(|| format!("{}: its program header table is cut off", truncated()))?;
    // A vmlinux cut short still parses; QEMU would then fail to load it without
    // naming the file, so the segments are checked against the file's length here.
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let end = headers
        .iter()
        .map(|ph| ph.p_offset(endian).saturating_add(ph.p_filesz(endian)))
        .max()
        .unwrap_or(0);
    if end > len {
        bail!(
            "{}: its program headers say it ends at byte {end}, the file has {len} bytes",
            truncated()
        );
    }
    let mut pvh = false;
    for ph in headers {
        let Ok(Some(mut notes)) = ph.notes(endian, &data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == b"Xen" && note.n_type(endian) == XEN_ELFNOTE_PHYS32_ENTRY {
                pvh = true;
            }
        }
    }
    Ok(Some(ElfInfo { x86_64, pvh }))
}

/// The release in a vmlinux's `linux_banner` ("Linux version 4.16.13 (user@host)
/// (gcc ...) #1 SMP ..." → "4.16.13"), `None` if there is none. The banner lives in
/// .rodata, which is read alone when the section headers say where it is; a file
/// without them is searched whole.
pub fn vmlinux_release(path: &Path) -> anyhow::Result<Option<String>> {
    use object::elf::FileHeader64;
    use object::read::elf::FileHeader;
    use object::Endianness;

    let banner = regex::bytes::Regex::new(r"Linux version ([0-9]+\.[0-9]+[^\s\x00]*)").unwrap();
    let first = |bytes: &[u8]| {
        banner
            .captures(bytes)
            .map(|c| String::from_utf8_lossy(&c[1]).into_owned())
    };
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let data = object::ReadCache::new(file);
    if let Ok(header) = FileHeader64::<Endianness>::parse(&data) {
        let rodata = header.endian().ok().and_then(|endian| {
            let sections = header.sections(endian, &data).ok()?;
            let (_, section) = sections.section_by_name(endian, b".rodata")?;
            object::read::elf::SectionHeader::data(section, endian, &data).ok()
        });
        if let Some(found) = rodata.and_then(first) {
            return Ok(Some(found));
        }
    }
    // Whole-file search, in chunks that overlap by more than a banner's length.
    const CHUNK: usize = 8 << 20;
    const OVERLAP: usize = 512;
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = Vec::with_capacity(CHUNK + OVERLAP);
    loop {
        let keep = buf.len().min(OVERLAP);
        buf.drain(..buf.len() - keep);
        let read = (&mut file)
            .take(CHUNK as u64)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if let Some(found) = first(&buf) {
            // A match running into the chunk's end may be cut short: read on.
            let whole = banner
                .captures(&buf)
                .is_some_and(|c| c.get(0).unwrap().end() < buf.len());
            if whole || read == 0 {
                return Ok(Some(found));
            }
        }
        if read == 0 {
            return Ok(None);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal bzImage: a setup header pointing at `payload` right after the setup
    /// sectors, and the version string "6.1.0-99-test ...".
    pub(crate) fn synthetic_bzimage(
        payload: &[u8],
        setup_sects: u8,
        claimed_len: Option<u32>,
    ) -> Vec<u8> {
        synthetic_bzimage_of(
            "6.1.0-99-test (builder@example) #1 SMP",
            payload,
            setup_sects,
            claimed_len,
        )
    }

    /// [`synthetic_bzimage`] with the version string `version`.
    pub(crate) fn synthetic_bzimage_of(
        version: &str,
        payload: &[u8],
        setup_sects: u8,
        claimed_len: Option<u32>,
    ) -> Vec<u8> {
        let sects = if setup_sects == 0 {
            4
        } else {
            usize::from(setup_sects)
        };
        let mut image = vec![0u8; (sects + 1) * 512];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        let version = format!("{version}\0");
        image[0x400..0x400 + version.len()].copy_from_slice(version.as_bytes());
        image[0x20e..0x210].copy_from_slice(&(0x400u16 - 0x200).to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        let len = claimed_len.unwrap_or(payload.len() as u32);
        image[0x24c..0x250].copy_from_slice(&len.to_le_bytes());
        image.extend_from_slice(payload);
        image
    }

    /// A minimal x86_64 ELF vmlinux: a PT_NOTE segment holding the PVH entry note
    /// (if `pvh`), `linux_banner` for `release` (if given) in .rodata, and section
    /// headers naming .rodata (if `sections`; without them the banner is found by
    /// searching the file).
    pub(crate) fn synthetic_vmlinux(release: Option<&str>, pvh: bool, sections: bool) -> Vec<u8> {
        let put16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
        let put32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
        let put64 = |v: &mut Vec<u8>, x: u64| v.extend_from_slice(&x.to_le_bytes());
        let phnum: u16 = pvh.into();
        let note_at = 64 + 56 * u64::from(phnum);
        let mut note = Vec::new();
        put32(&mut note, 4); // namesz
        put32(&mut note, 4); // descsz
        put32(&mut note, XEN_ELFNOTE_PHYS32_ENTRY);
        note.extend_from_slice(b"Xen\0");
        put32(&mut note, 0x0100_0000);
        let rodata_at = note_at + note.len() as u64 + 64;
        let mut rodata = b"\0other strings\0%s version %s (builder@example)\0".to_vec();
        if let Some(release) = release {
            rodata.extend_from_slice(
                format!("Linux version {release} (builder@example) (gcc version 12.2.0) #1 SMP PREEMPT_DYNAMIC\n\0")
                    .as_bytes(),
            );
        }
        rodata.extend_from_slice(b"more\0");
        let shstrtab = b"\0.rodata\0.shstrtab\0";
        let shstrtab_at = rodata_at + rodata.len() as u64;
        let shoff = shstrtab_at + shstrtab.len() as u64;
        let shnum: u16 = if sections { 3 } else { 0 };

        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0".to_vec();
        put16(&mut elf, 2); // ET_EXEC
        put16(&mut elf, object::elf::EM_X86_64);
        put32(&mut elf, 1);
        put64(&mut elf, 0x0100_0000); // e_entry
        put64(&mut elf, if pvh { 64 } else { 0 }); // e_phoff
        put64(&mut elf, if sections { shoff } else { 0 });
        put32(&mut elf, 0); // e_flags
        put16(&mut elf, 64);
        put16(&mut elf, 56);
        put16(&mut elf, phnum);
        put16(&mut elf, 64);
        put16(&mut elf, shnum);
        put16(&mut elf, if sections { 2 } else { 0 });
        if pvh {
            put32(&mut elf, object::elf::PT_NOTE);
            put32(&mut elf, 4); // PF_R
            put64(&mut elf, note_at);
            put64(&mut elf, 0);
            put64(&mut elf, 0);
            put64(&mut elf, note.len() as u64);
            put64(&mut elf, note.len() as u64);
            put64(&mut elf, 4);
        }
        assert_eq!(elf.len() as u64, note_at);
        elf.extend_from_slice(&note);
        elf.resize(rodata_at as usize, 0x90);
        elf.extend_from_slice(&rodata);
        elf.extend_from_slice(shstrtab);
        if sections {
            let mut section = |name: u32, kind: u32, offset: u64, size: u64| {
                put32(&mut elf, name);
                put32(&mut elf, kind);
                put64(&mut elf, 0); // flags
                put64(&mut elf, 0); // addr
                put64(&mut elf, offset);
                put64(&mut elf, size);
                put32(&mut elf, 0); // link
                put32(&mut elf, 0); // info
                put64(&mut elf, 1); // addralign
                put64(&mut elf, 0); // entsize
            };
            section(0, object::elf::SHT_NULL, 0, 0);
            section(1, object::elf::SHT_PROGBITS, rodata_at, rodata.len() as u64);
            section(
                9,
                object::elf::SHT_STRTAB,
                shstrtab_at,
                shstrtab.len() as u64,
            );
        }
        elf
    }

    pub(crate) fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        xz2::read::XzEncoder::new(data, 1)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn extracts_an_lz4_legacy_payload() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
        let mut payload = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in body.chunks(8 << 20) {
            let block = lz4_flex::block::compress(chunk);
            payload.extend_from_slice(&(block.len() as u32).to_le_bytes());
            payload.extend_from_slice(&block);
        }
        payload.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let image = dir.path().join("bzImage");
        let mut file = synthetic_bzimage(&payload, 0, None);
        file.extend_from_slice(b"decompressor code after the payload");
        std::fs::write(&image, file).unwrap();
        let header = BzImageHeader::parse(&std::fs::read(&image).unwrap())
            .unwrap()
            .unwrap();
        let out = dir.path().join("vmlinux");
        assert_eq!(
            extract_vmlinux(&image, &header, &out).unwrap(),
            Compression::Lz4
        );
        assert!(std::fs::read(&out).unwrap() == body);
    }

    #[test]
    fn parses_a_synthetic_header() {
        let image = synthetic_bzimage(b"payload", 0, None);
        let header = BzImageHeader::parse(&image).unwrap().unwrap();
        assert_eq!(header.protocol, 0x020f);
        assert_eq!(header.payload_start, 5 * 512, "setup_sects 0 means 4");
        assert_eq!(header.payload_length, 7);
        assert_eq!(header.release().as_deref(), Some("6.1.0-99-test"));

        let image = synthetic_bzimage(b"payload", 27, None);
        let header = BzImageHeader::parse(&image).unwrap().unwrap();
        assert_eq!(header.payload_start, 28 * 512);
    }

    #[test]
    fn garbage_has_no_header() {
        assert_eq!(BzImageHeader::parse(&[0u8; 4096]).unwrap(), None);
        assert_eq!(BzImageHeader::parse(b"short").unwrap(), None);
    }

    #[test]
    fn extracts_an_xz_payload_with_trailing_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let body = b"\x7fELF pretend kernel".repeat(1000);
        let mut payload = xz(&body);
        // The kernel's build appends the decompressed size after the stream.
        payload.extend_from_slice(&(body.len() as u32).to_le_bytes());
        let image = synthetic_bzimage(&payload, 0, None);
        let path = dir.path().join("bzImage");
        std::fs::write(&path, &image).unwrap();
        let header = BzImageHeader::parse(&image).unwrap().unwrap();
        let out = dir.path().join("vmlinux");
        assert_eq!(
            extract_vmlinux(&path, &header, &out).unwrap(),
            Compression::Xz
        );
        assert_eq!(std::fs::read(&out).unwrap(), body);
    }

    #[test]
    fn truncated_payload_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let payload = xz(&b"kernel".repeat(10_000));
        // The header claims the full payload, the file holds half of it.
        let full = synthetic_bzimage(&payload, 0, None);
        let image = &full[..full.len() - payload.len() / 2];
        let path = dir.path().join("bzImage");
        std::fs::write(&path, image).unwrap();
        let header = BzImageHeader::parse(image).unwrap().unwrap();
        let err = extract_vmlinux(&path, &header, &dir.path().join("vmlinux")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("truncated") && msg.contains("bzImage"),
            "{msg}"
        );

        // A header that under-states the length still fails in the decoder.
        let lying = synthetic_bzimage(&payload[..payload.len() / 2], 0, Some(10));
        std::fs::write(&path, &lying).unwrap();
        let header = BzImageHeader::parse(&lying).unwrap().unwrap();
        let out = dir.path().join("vmlinux");
        let msg = format!("{:#}", extract_vmlinux(&path, &header, &out).unwrap_err());
        assert!(
            msg.contains("cannot decompress") && msg.contains("bzImage"),
            "{msg}"
        );
        assert!(!out.exists(), "no half-written vmlinux is left behind");
    }

    #[test]
    fn a_vmlinux_tells_its_pvh_note_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        for sections in [true, false] {
            std::fs::write(
                &path,
                synthetic_vmlinux(Some("4.16.13-custom"), true, sections),
            )
            .unwrap();
            assert_eq!(
                elf_info(&path).unwrap(),
                Some(ElfInfo {
                    x86_64: true,
                    pvh: true
                })
            );
            assert_eq!(
                vmlinux_release(&path).unwrap().as_deref(),
                Some("4.16.13-custom"),
                "sections: {sections}"
            );
        }
        std::fs::write(&path, synthetic_vmlinux(None, false, true)).unwrap();
        assert_eq!(
            elf_info(&path).unwrap(),
            Some(ElfInfo {
                x86_64: true,
                pvh: false
            })
        );
        assert_eq!(vmlinux_release(&path).unwrap(), None);
    }

    #[test]
    fn a_banner_across_a_chunk_boundary_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        for cut in [0usize, 3, 14, 17, 20] {
            // Put the banner so the first 8 MiB chunk ends `cut` bytes into it.
            let mut bytes = vec![0u8; (8 << 20) - cut];
            bytes.extend_from_slice(
                b"Linux version 5.10.0-35-amd64 (debian-kernel@lists.debian.org)\0",
            );
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(
                vmlinux_release(&path).unwrap().as_deref(),
                Some("5.10.0-35-amd64"),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn non_elf_has_no_elf_info() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"not an elf at all").unwrap();
        assert_eq!(elf_info(&path).unwrap(), None);
    }
}
