//! Obtains Linux kernels and describes how to boot them: a kernel of the project's
//! catalog (`kernels/catalog.toml`: Debian packages fetched through a private apt
//! configuration, Ubuntu mainline builds fetched with curl; [`catalog::fetch`]), a
//! Debian package by pattern ([`fetch_debian`]), packages given by path (the
//! catalog's [`Source::DebFiles`]), or an image the user points at ([`from_image`]).
//! Either way the result is a [`Kernel`]: the image QEMU boots (an uncompressed
//! vmlinux through PVH where its PVH entry is the generic one, Linux 5.0 on or
//! CONFIG_PVH=y, since that skips the in-guest decompression that dominates a TCG
//! boot; else the bzImage), its release, its modules directory, from which
//! [`resolve_modules`] picks `.ko` files for the guest, and where its build
//! configuration is ([`KernelConfig`]: the package's, one beside the image, or the
//! one embedded in it; [`config_value`] reads a symbol of it).
//!
//! Everything downloaded or derived lives under [`cache_dir`]. [`plan`] says, without
//! downloading a kernel, what a fetch would take today and whether the cache holds
//! it (`bpfmatrix kernels --json` and `--complete`, for CI's cache keys).
//!
//! # Modules
//!
//! This file only declares the modules and re-exports the public names. Each module
//! imports only those below it (`a -> b`: a's `use crate::` lines name b; test code
//! included), so there is no import circle. The catalog calls the three sources;
//! no source imports the catalog or another source.
//!
//! ```text
//! plan      -> catalog, debian, mainline, cache, error, util   what a fetch would take; cache keys
//! catalog   -> debian, mainline, given, cache, error, kernel   the kernels by name; fetches one
//!   (its tests also: layout, deb, bzimage)
//! debian    -> layout, cache, version, error, util, kernel     source: apt
//! mainline  -> layout, version, error, util, kernel            source: kernel.ubuntu.com
//!   (its tests also: deb, bzimage, modules)
//! given     -> layout, cache, ikconfig, image, bzimage,         source: a path (packages, images)
//!              protocol, error, util, kernel    (its tests also: deb)
//! layout    -> deb, ikconfig, image, bzimage, util, kernel     packages -> kernel tree -> Kernel
//!   (its tests also: modules)
//! modules   -> cache, util, kernel                             the .ko files a guest loads
//! cache     -> image, protocol, error, util, kernel            cache folders, locking, markers
//! image     -> bzimage, protocol, kernel                       how an image file boots
//! ikconfig  -> bzimage, util, kernel                           the config inside an image (IKCONFIG)
//! deb       -> (none; its tests: bzimage)                      reading .deb archives
//! bzimage   -> util                                            bzImage headers, vmlinux, ELF notes
//! protocol  -> kernel                                          PVH or bzImage, and why
//! error, version, util, kernel -> (none)                       errors, version order, helpers, Kernel
//! ```

mod bzimage;
mod cache;
pub mod catalog;
mod deb;
mod debian;
mod error;
mod given;
mod ikconfig;
mod image;
mod kernel;
mod layout;
mod mainline;
mod modules;
pub mod plan;
mod protocol;
mod util;
mod version;

pub use bzimage::{BzImageHeader, Compression};
pub use cache::{cache_dir, lock_dir, DirLock};
pub use catalog::{cached, catalog, fetch, fetch_debian, find, CatalogEntry, Source};
pub use debian::DebianSpec;
pub use error::FetchError;
pub use given::from_image;
pub use kernel::{config_value, BootProtocol, ConfigSource, ConfigValue, Kernel, KernelConfig};
pub use mainline::MainlineSpec;
pub use modules::{ensure_modules_dep, resolve_modules, ModuleFile};
