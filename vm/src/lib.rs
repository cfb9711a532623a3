//! Turns a kernel and a plan into a booted guest: [`agent`] builds the guest agent,
//! [`initramfs`] and [`guest`] pack it with the plan and modules into a cpio archive,
//! and a backend boots it: [`qemu`] (bpfmatrix's own microVM) or [`vng`]
//! (virtme-ng); [`snapshot`] saves a QEMU guest that waits for its plan and starts
//! later ones from that state instead of booting. Both backends are thin users of
//! [`supervisor`], which runs the VM process in
//! a process group of its own, streams the console and the guest's result lines
//! back as typed [`VmEvent`]s, enforces the caps and deadlines, ends in a
//! [`BootOutcome`], and leaves nothing running, even when bpfmatrix itself is
//! killed.

pub mod agent;
pub mod guest;
pub mod initramfs;
pub mod qemu;
pub mod snapshot;
pub mod supervisor;
pub mod vng;

pub use guest::{build_guest_initramfs, plan_module_path};
pub use initramfs::Initramfs;

pub use qemu::{boot, find_qemu, Accel, BootSpec};
pub use supervisor::{AccelUsed, BootEnd, BootOutcome, GuestLine, VmEvent};
