//! Turns a kernel and a plan into a booted guest: [`agent`] builds the guest agent,
//! [`initramfs`] and [`guest`] pack it with the plan and modules into a cpio archive,
//! and [`qemu`] boots that under QEMU, streaming the console and the guest's result
//! lines back as typed [`qemu::VmEvent`]s and ending in a [`qemu::BootOutcome`].

pub mod agent;
pub mod guest;
pub mod initramfs;
pub mod qemu;
pub mod vng;

pub use guest::{build_guest_initramfs, plan_module_path};
pub use initramfs::Initramfs;

pub use qemu::{
    boot, find_qemu, Accel, AccelUsed, BootEnd, BootOutcome, BootSpec, GuestLine, VmEvent,
};
