//! Asks the kernel to load one program the way every refusal and every cost here
//! is read: the verifier's statistics first, its full log only on a refusal; and
//! reads what a loaded program became from its bpf_prog_info.

use std::io;
use std::mem::offset_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use aya::util::KernelVersion;
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
use bpfmatrix_protocol::{verifier_log, CostSource, Figure, VerifierCost};

use crate::prog_tracing::{owned_fd, sys_bpf};

/// BPF_LOG_LEVEL1: the instruction-by-instruction trace and the refusal.
const LOG_LEVEL1: u32 = 1;
/// BPF_LOG_STATS (5.2, 06ee7115b0d1): only the statistics (and any refusal).
const LOG_STATS: u32 = 4;
/// Enough for the statistics lines, and for the short level-1 log of a small
/// program on a kernel without BPF_LOG_STATS.
const SMALL_LOG: usize = 64 * 1024;
/// The largest buffer every kernel takes: before 5.2 the kernel refuses a log
/// size above UINT_MAX >> 8 (16 MiB - 1) with EINVAL.
const BIG_LOG: usize = (16 << 20) - 1;

/// The kernel accepted the program.
#[derive(Debug)]
pub struct Verified {
    pub fd: OwnedFd,
    /// The log of the accepted load (the statistics from 5.2, the level-1
    /// trace before).
    pub log: String,
}

/// The kernel refused the program.
#[derive(Debug)]
pub struct Refused {
    pub errno: i32,
    /// The verifier's words: its full log when it fit.
    pub log: String,
    /// Bytes of the kernel's log that `log` lacks, when the log did not fit the
    /// largest buffer (a lower bound before 6.4, which does not tell the full
    /// size).
    pub cut: Option<u64>,
}

/// Which log levels this kernel knows.
#[derive(Clone, Copy, Debug)]
pub struct LogLevels {
    stats: bool,
}

impl LogLevels {
    /// BPF_LOG_STATS exists from 5.2; a kernel whose version cannot be read is
    /// asked only for level 1, which every kernel has.
    pub fn of_running_kernel() -> Self {
        LogLevels {
            stats: KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 2, 0)),
        }
    }

    fn first(self) -> u32 {
        if self.stats {
            LOG_STATS
        } else {
            LOG_LEVEL1
        }
    }

    fn full(self) -> u32 {
        if self.stats {
            LOG_LEVEL1 | LOG_STATS
        } else {
            LOG_LEVEL1
        }
    }
}

/// BPF_PROG_LOAD of `attr` (a complete BPF_PROG_LOAD attr without its log
/// fields). The first load asks for the statistics only, with a small buffer,
/// so an accepted program costs one verification; a refused one is loaded
/// again with the full log in a 16 MiB buffer, for the verifier's own words.
pub fn load(attr: &bpf_attr, levels: LogLevels) -> Result<Verified, Refused> {
    let (first, first_log, _) = attempt(attr, levels.first(), SMALL_LOG);
    let first_errno = match first {
        Ok(fd) => return Ok(Verified { fd, log: first_log }),
        Err(errno) => errno,
    };
    let (second, log, true_size) = attempt(attr, levels.full(), BIG_LOG);
    match second {
        // The first refusal was its small buffer filling up (ENOSPC).
        Ok(fd) => Ok(Verified { fd, log }),
        Err(libc::ENOSPC) => {
            // The full log did not fit. The first load's errno is the
            // verifier's verdict unless that load, too, only ran out of log.
            let errno = first_errno;
            if true_size > 0 {
                // 6.4+ keeps the end of the log (where the refusal is) and
                // says how long the whole was.
                let cut = (true_size as u64).saturating_sub(log.len() as u64);
                Err(Refused {
                    errno,
                    log,
                    cut: Some(cut),
                })
            } else if levels.stats && !first_log.is_empty() {
                // Before 6.4 the kernel keeps the start of the log and drops the
                // refusal; the statistics-only log of the first load has it.
                Err(Refused {
                    errno,
                    log: first_log,
                    cut: Some(log.len() as u64),
                })
            } else {
                // No statistics level (before 5.2): the start is all there is.
                Err(Refused {
                    errno,
                    log,
                    cut: None,
                })
            }
        }
        Err(errno) => Err(Refused {
            errno,
            log,
            cut: None,
        }),
    }
}

/// One BPF_PROG_LOAD with a log buffer: the fd or the errno, the log, and the
/// full log size the kernel reports (6.4+, else 0).
fn attempt(attr: &bpf_attr, level: u32, size: usize) -> (Result<OwnedFd, i32>, String, u32) {
    let mut mapping = LogBuffer::new(size);
    let buf = mapping.bytes_mut();
    let mut attr = *attr;
    // SAFETY: writing the log fields of the BPF_PROG_LOAD member; `buf` outlives
    // the syscall.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.log_level = level;
    u.log_buf = buf.as_mut_ptr() as u64;
    u.log_size = size as u32;
    u.log_true_size = 0;
    let result = sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
        .map(owned_fd)
        .map_err(|e| e.raw_os_error().unwrap_or(0));
    // SAFETY: as above; the kernel wrote log_true_size (6.4+) or left it 0.
    let true_size = unsafe { attr.__bindgen_anon_3.log_true_size };
    // The scan stops at the log's end: pages past it stay untouched.
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let log = String::from_utf8_lossy(&buf[..end]).into_owned();
    (result, log, true_size)
}

/// What verifying the program cost, from its accepted load's log (each figure
/// [`CostSource::VerifierLog`]) and its bpf_prog_info ([`CostSource::ProgInfo`];
/// absent if the kernel would not give it).
pub fn cost(verified: &Verified) -> VerifierCost {
    let mut cost = verifier_log::stats(&verified.log);
    let _ = add_prog_info(&mut cost, verified.fd.as_fd());
    cost
}

/// Fills the bpf_prog_info figures of a loaded program into `cost`: the
/// translated and JITed sizes (4.13+), and verified_insns where the kernel has
/// it (5.16+, aba64c7da983); a figure the kernel does not report stays absent.
pub fn add_prog_info(cost: &mut VerifierCost, fd: BorrowedFd<'_>) -> io::Result<()> {
    let fig = |value: u32| {
        Some(Figure {
            value: u64::from(value),
            from: CostSource::ProgInfo,
        })
    };
    let (info, len) = prog_info(fd)?;
    if len >= offset_of!(bpf_prog_info, xlated_prog_len) + 4 {
        cost.xlated_bytes = fig(info.xlated_prog_len);
        cost.jited_bytes = fig(info.jited_prog_len);
    }
    // The kernel writes back how much of the struct it knows: a kernel before
    // 5.16 stops short of verified_insns, so its absence is not a zero.
    if len >= offset_of!(bpf_prog_info, verified_insns) + 4 {
        cost.verified_insns = fig(info.verified_insns);
    }
    Ok(())
}

/// Takes the verifier log's figures of `from` into `cost`, leaving its
/// bpf_prog_info figures as they are.
pub fn add_log_figures(cost: &mut VerifierCost, from: VerifierCost) {
    cost.insns_processed = from.insns_processed;
    cost.insn_limit = from.insn_limit;
    cost.max_states_per_insn = from.max_states_per_insn;
    cost.total_states = from.total_states;
    cost.peak_states = from.peak_states;
    cost.mark_read = from.mark_read;
    cost.verification_usec = from.verification_usec;
    cost.stack_depth = from.stack_depth;
    cost.stack_depth_from = from.stack_depth_from;
}

/// bpf_prog_info of a loaded program and the number of its bytes the kernel
/// filled in.
fn prog_info(fd: BorrowedFd<'_>) -> io::Result<(bpf_prog_info, usize)> {
    // SAFETY: bpf_prog_info is plain old data; zeroed asks for no arrays.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    // SAFETY: zeroed attr; the info member points at a live bpf_prog_info.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info = &mut info as *mut bpf_prog_info as u64;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // SAFETY: the kernel wrote back info_len.
    let len = unsafe { attr.info.info_len } as usize;
    Ok((info, len))
}

/// A zeroed buffer whose pages exist only once written. `vec![0; 16 MiB]` is
/// not that: after a first big buffer is freed, the allocator serves the next
/// from its heap and clears every page, which cost a refused load about 55 ms
/// under TCG (5.10, measured with the agent's own clock).
enum LogBuffer {
    Mapped {
        ptr: std::ptr::NonNull<std::ffi::c_void>,
        len: std::num::NonZeroUsize,
    },
    /// When no mapping could be had: slower, never a different answer.
    Heap(Vec<u8>),
}

impl LogBuffer {
    fn new(size: usize) -> Self {
        let Some(len) = std::num::NonZeroUsize::new(size) else {
            return LogBuffer::Heap(Vec::new());
        };
        // SAFETY: a fresh private anonymous mapping, owned by the LogBuffer and
        // unmapped on drop.
        let mapped = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
            )
        };
        match mapped {
            Ok(ptr) => LogBuffer::Mapped { ptr, len },
            Err(_) => LogBuffer::Heap(vec![0; size]),
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            // SAFETY: `len` readable and writable bytes (anonymous pages read
            // as 0), borrowed no longer than the mapping lives.
            LogBuffer::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr().cast(), len.get())
            },
            LogBuffer::Heap(v) => v,
        }
    }
}

impl Drop for LogBuffer {
    fn drop(&mut self) {
        if let LogBuffer::Mapped { ptr, len } = *self {
            // SAFETY: the mapping made in `new`, unmapped once.
            if let Err(e) = unsafe { nix::sys::mman::munmap(ptr, len.get()) } {
                eprintln!("bpfmatrix-agent: unmapping a verifier log buffer: {e}");
            }
        }
    }
}
