//! A small loader for bpf/count.c: an XDP program that counts the IPv4 UDP
//! datagrams sent to one destination port.
//!
//! ```no_run
//! let counter = aya_app::PacketCounter::load_on("lo", 5353)?;
//! // ... traffic ...
//! println!("{} datagrams to port 5353", counter.count()?);
//! # Ok::<(), anyhow::Error>(())
//! ```

use anyhow::{bail, Context, Result};
use aya::maps::{Array, MapData};
use aya::programs::{ProgramInfo, Xdp, XdpMode};
use aya::Ebpf;

/// The compiled object (bpf/count.c, built by build.rs). `include_bytes_aligned!`
/// is aya's `include_bytes!` with the 8-byte alignment its ELF parser requires.
pub static COUNT_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/count.o"));

/// The XDP program's name in count.c (and in the kernel, which keeps 15 bytes).
pub const PROGRAM: &str = "count_udp";

/// The loaded, attached program. Dropping it detaches the program and frees
/// its maps.
pub struct PacketCounter {
    ebpf: Ebpf,
    port: u16,
}

impl PacketCounter {
    /// Loads count.o, sets the port to count and attaches the program to
    /// `interface` in generic (SKB) mode, which every driver, lo included,
    /// supports without extra kernel modules.
    ///
    /// An interface takes one XDP program per mode: while this counter is
    /// alive, a second attach to the same interface fails (EBUSY).
    pub fn load_on(interface: &str, port: u16) -> Result<Self> {
        if port == 0 {
            bail!("port 0 cannot be counted: the program reads 0 as \"count nothing\"");
        }
        // Shown with a failed load: an EPERM there may be this limit.
        let memlock = match raise_memlock_limit() {
            Ok(()) => String::new(),
            Err(note) => format!(" ({note})"),
        };

        let mut ebpf =
            Ebpf::load(COUNT_OBJ).with_context(|| format!("loading count.o{memlock}"))?;

        let mut config: Array<&mut MapData, u32> = Array::try_from(
            ebpf.map_mut("config")
                .context("count.o has no map `config`")?,
        )?;
        config
            .set(0, u32::from(port), 0)
            .context("writing the port into map `config`")?;

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .with_context(|| format!("count.o has no program `{PROGRAM}`"))?
            .try_into()?;
        program
            .load()
            .with_context(|| format!("loading program `{PROGRAM}` (verifier){memlock}"))?;
        program
            .attach(interface, XdpMode::Skb)
            .with_context(|| format!("attaching `{PROGRAM}` to {interface} (XDP, SKB mode)"))?;

        Ok(Self { ebpf, port })
    }

    /// The port this counter counts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The number of IPv4 UDP datagrams to the port seen since `load_on`.
    pub fn count(&self) -> Result<u64> {
        let packets: Array<&MapData, u64> = Array::try_from(
            self.ebpf
                .map("packets")
                .context("count.o has no map `packets`")?,
        )?;
        packets.get(&0, 0).context("reading map `packets`")
    }

    /// What the kernel reports about the loaded program (its name, type, ...).
    pub fn program_info(&self) -> Result<ProgramInfo> {
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .with_context(|| format!("count.o has no program `{PROGRAM}`"))?
            .try_into()?;
        program
            .info()
            .context("BPF_OBJ_GET_INFO_BY_FD on the program")
    }
}

/// Kernels before 5.11 charge BPF maps and programs to RLIMIT_MEMLOCK, whose
/// default (64 KiB on many systems) is easily exhausted: lift it to
/// RLIM_INFINITY. Without CAP_SYS_RESOURCE that is refused (EPERM); the soft
/// limit is then raised to the hard one, which needs no privilege, and the
/// returned note explains a later EPERM from the load. Kernels 5.11 and later
/// charge BPF memory to the memory cgroup and ignore this limit.
fn raise_memlock_limit() -> Result<(), String> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct passed to it.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return Ok(());
    }
    let refused = std::io::Error::last_os_error();
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only access the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
    }
    Err(format!(
        "setrlimit(RLIMIT_MEMLOCK, RLIM_INFINITY) refused: {refused}; \
         kernels before 5.11 may refuse BPF memory beyond the {} KiB hard limit",
        limit.rlim_max / 1024
    ))
}
