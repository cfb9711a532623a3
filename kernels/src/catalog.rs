//! The kernels bpfmatrix knows by name (`kernels/catalog.toml`, compiled in), and
//! the one place a kernel is fetched: [`catalog`], [`find`], [`cached`], [`fetch`].
//! It hands each entry to its source (the modules `debian`, `mainline`, or `given`
//! for packages given by path), which fills the kernel's folder under the cache's
//! locking (`cache`); no source knows the catalog.
//!
//! A fetch either gives a [`Kernel`], or says the source cannot be reached from this
//! machine ([`FetchError::Unavailable`], which a report shows as "unavailable, and
//! why"), or fails for a reason that must not be hidden ([`FetchError::Failed`]: a
//! checksum mismatch, a corrupt package, a package without a kernel). See
//! the `cache` module for how interrupted and concurrent fetches stay safe.

use crate::cache::{self, cache_dir, fetch_locked, kernel_dir};
use crate::debian::{self, DebianSpec};
use crate::given;
use crate::kernel::Kernel;
use crate::mainline::{self, MainlineSpec};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub use crate::error::FetchError;

/// A kernel the project knows by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// What users type, e.g. "6.1"; also names the cache folder.
    pub name: String,
    /// The upstream kernel line, e.g. "6.1".
    pub version: String,
    pub source: Source,
    /// One line for reports: where it comes from and how it is verified.
    pub note: String,
}

/// Where a kernel comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A Debian package, fetched and verified by apt.
    Debian(DebianSpec),
    /// Ubuntu's mainline kernel builds (kernel.ubuntu.com), verified by SHA256.
    UbuntuMainline(MainlineSpec),
    /// Kernel packages already on disk: an image .deb and, for kernels that split
    /// them out, its modules .deb. Trusted as given (the user downloaded them).
    DebFiles(Vec<PathBuf>),
}

const CATALOG: &str = include_str!("../catalog.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    kernel: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    version: String,
    note: String,
    debian: Option<RawDebian>,
    ubuntu_mainline: Option<MainlineSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDebian {
    suite: String,
    package: String,
    #[serde(default)]
    companions: Vec<String>,
}

fn parse(text: &str) -> anyhow::Result<Vec<CatalogEntry>> {
    let raw: RawCatalog = toml::from_str(text)?;
    raw.kernel
        .into_iter()
        .map(|k| {
            let source = match (k.debian, k.ubuntu_mainline) {
                (Some(d), None) => {
                    let spec = DebianSpec {
                        name: k.name.clone(),
                        suite: d.suite,
                        package_regex: d.package,
                        companions: d.companions,
                    };
                    spec.check()
                        .map_err(|e| e.context(format!("kernel {}", k.name)))?;
                    Source::Debian(spec)
                }
                (None, Some(m)) => {
                    m.check()
                        .map_err(|e| e.context(format!("kernel {}", k.name)))?;
                    Source::UbuntuMainline(m)
                }
                _ => anyhow::bail!(
                    "kernel {} needs exactly one of [kernel.debian] and [kernel.ubuntu_mainline]",
                    k.name
                ),
            };
            kernel_dir(Path::new("/"), &k.name)?;
            Ok(CatalogEntry {
                name: k.name,
                version: k.version,
                source,
                note: k.note,
            })
        })
        .collect()
}

/// The kernels in `kernels/catalog.toml`, in its order.
pub fn catalog() -> Vec<CatalogEntry> {
    parse(CATALOG).expect("kernels/catalog.toml is checked by the crate's tests")
}

/// The catalog entry named `name`.
pub fn find(name: &str) -> Option<CatalogEntry> {
    catalog().into_iter().find(|e| e.name == name)
}

/// The kernel of a completed earlier fetch of `entry`, without any network access.
/// Packages on disk ([`Source::DebFiles`]) are found by their content, whatever
/// their name.
pub fn cached(entry: &CatalogEntry) -> Option<Kernel> {
    let cache = cache_dir();
    match &entry.source {
        Source::DebFiles(debs) => given::cached_deb_files(&cache, &entry.name, debs),
        _ => cache::completed(&kernel_dir(&cache, &entry.name).ok()?),
    }
}

/// Fetches `entry` into the cache (or finds it there) and returns it. Progress lines
/// (downloads, waiting for another bpfmatrix fetching the same kernel) go to
/// `progress`; a cached kernel gives none. Returns within seconds when the network is
/// absent.
pub fn fetch(entry: &CatalogEntry, progress: &mut dyn FnMut(&str)) -> Result<Kernel, FetchError> {
    fetch_source(&entry.name, &entry.source, progress)
}

/// Fetches (or finds in the cache) the newest package of `spec.suite` matching
/// `spec.package_regex` and returns it as a [`Kernel`]. The mirror is
/// `$BPFMATRIX_DEBIAN_MIRROR`, else <http://deb.debian.org/debian>. Progress lines go
/// to `progress`. The same as [`fetch`] of a Debian entry (cache lock, interrupted
/// downloads and all), with the error as an [`anyhow::Error`].
pub fn fetch_debian(spec: &DebianSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Kernel> {
    fetch_source(&spec.name, &Source::Debian(spec.clone()), progress)
        .map_err(FetchError::into_anyhow)
}

/// [`fetch`] of a source under the cache folder `name` (packages on disk: under
/// the folder of their content).
fn fetch_source(
    name: &str,
    source: &Source,
    progress: &mut dyn FnMut(&str),
) -> Result<Kernel, FetchError> {
    let cache = cache_dir();
    match source {
        Source::Debian(spec) => fetch_locked(&cache, name, progress, &mut |kdir, progress| {
            debian::fetch_into(spec, kdir, progress)
        }),
        Source::UbuntuMainline(spec) => {
            fetch_locked(&cache, name, progress, &mut |kdir, progress| {
                mainline::fetch_into(name, spec, kdir, progress)
            })
        }
        Source::DebFiles(debs) => given::fetch_deb_files(&cache, name, debs, progress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_parses_and_names_the_project_kernels() {
        let names: Vec<String> = catalog().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["4.16", "5.4", "5.10", "6.1", "6.12", "latest"]);
        for entry in catalog() {
            assert!(!entry.note.is_empty() && !entry.note.contains('\n'));
            // `latest` follows Debian unstable, whatever its version.
            if entry.name == "latest" {
                assert_eq!(entry.version, "unstable");
            } else {
                assert!(entry.name.starts_with(&entry.version));
            }
        }
        let Source::Debian(latest) = find("latest").unwrap().source else {
            panic!("latest is a Debian kernel")
        };
        assert_eq!(latest.suite, "sid");
        assert_eq!(
            latest
                .companion_names("linux-binary-unsigned-7.2.13+deb14-amd64")
                .unwrap(),
            [
                "linux-modules-7.2.13+deb14-amd64",
                "linux-base-7.2.13+deb14-amd64"
            ]
        );
        let Source::Debian(spec) = find("6.1").unwrap().source else {
            panic!("6.1 is a Debian kernel")
        };
        // The harness's cache folder for 6.1 stays the same.
        assert_eq!(spec.name, "6.1");
        assert_eq!(spec.suite, "bookworm");
        assert!(matches!(
            find("4.16").unwrap().source,
            Source::UbuntuMainline(_)
        ));
        assert_eq!(find("6.2"), None);
    }

    /// The mainline source's tests run on their own copy of the 4.16 and 5.4
    /// entries: it must be the catalog's.
    #[test]
    fn the_mainline_entries_are_the_ones_the_mainline_tests_use() {
        for name in ["4.16", "5.4"] {
            assert_eq!(
                find(name).unwrap().source,
                Source::UbuntuMainline(crate::mainline::tests::entry(name)),
                "{name}"
            );
        }
    }

    #[test]
    fn an_entry_needs_exactly_one_source() {
        let err = parse("[[kernel]]\nname='x'\nversion='x'\nnote='n'\n").unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
        let err = parse(
            "[[kernel]]\nname='x'\nversion='x'\nnote='n'\n[kernel.ubuntu_mainline]\nfolder='https://h/v1/'\nimage='('\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("regex"), "{err:#}");
    }

    // The cache's rules (`cache::fetch_locked`) around real work: the tests below
    // unpack packages (`layout`) or fetch from a fake mainline folder, so they live
    // here, where the catalog brings cache and sources together.

    fn deb_source(dir: &Path) -> Vec<PathBuf> {
        let deb = dir.join("linux-image-9.9.9-test_9.9.9_amd64.deb");
        let image = crate::bzimage::tests::synthetic_bzimage(
            &crate::bzimage::tests::xz(b"kernel"),
            0,
            None,
        );
        std::fs::write(
            &deb,
            crate::deb::tests::synthetic_deb(&[
                ("./boot/vmlinuz-9.9.9-test", image),
                (
                    "./lib/modules/9.9.9-test/kernel/net/sched/cls_bpf.ko",
                    b"\x7fELF".to_vec(),
                ),
            ]),
        )
        .unwrap();
        vec![deb]
    }

    /// The names in `dir`, sorted.
    fn left_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_half_entry_left_by_a_killed_run_is_redone() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let debs = deb_source(tmp.path());
        let kdir = cache.join("kernels/k");
        // What a run killed at various points leaves: a half download, a half
        // unpacked tree, a half vmlinux, and a marker of an entry whose files are gone.
        std::fs::create_dir_all(kdir.join("root.tmp.4242/boot")).unwrap();
        std::fs::create_dir_all(kdir.join("root/boot")).unwrap();
        std::fs::write(kdir.join("root/boot/vmlinuz-9.9.9-test"), b"half").unwrap();
        std::fs::write(kdir.join("x_amd64.deb.tmp.4242"), b"half").unwrap();
        std::fs::write(kdir.join("vmlinux"), b"\x7fELF half").unwrap();
        let stale = Kernel {
            name: "k".into(),
            release: None,
            image: kdir.join("gone"),
            boot_image: kdir.join("gone"),
            boot_protocol: crate::kernel::BootProtocol::Pvh,
            modules_dir: None,
            source: "stale".into(),
            config: None,
        };
        cache::complete(&kdir, &stale).unwrap();
        assert_eq!(cache::completed(&kdir), None);

        let mut work = |kdir: &Path, p: &mut dyn FnMut(&str)| {
            crate::layout::kernel_from_debs(kdir, &debs, "k", p)
        };
        let kernel = fetch_locked(&cache, "k", &mut |_| {}, &mut work).unwrap();
        assert_eq!(kernel.release.as_deref(), Some("9.9.9-test"));
        assert_eq!(
            std::fs::read(&kernel.image).unwrap(),
            std::fs::read(
                tmp.path()
                    .join("cache/kernels/k/root/boot/vmlinuz-9.9.9-test")
            )
            .unwrap()
        );
        assert!(kernel
            .modules_dir
            .as_ref()
            .unwrap()
            .join("kernel/net/sched/cls_bpf.ko")
            .is_file());
        assert_eq!(left_in(&kdir), ["kernel.json", "lock", "root", "vmlinux"]);
        // Extracted again, not the half one (this payload is no ELF, so no PVH).
        assert_eq!(std::fs::read(kdir.join("vmlinux")).unwrap(), b"kernel");
        assert_eq!(cache::completed(&kdir), Some(kernel.clone()));
        // And the next run takes it from the cache without doing anything.
        let again = fetch_locked(&cache, "k", &mut |l| panic!("{l}"), &mut |_, _| {
            panic!("a completed entry must not be fetched again")
        })
        .unwrap();
        assert_eq!(again, kernel);
    }

    #[test]
    fn two_fetches_at_once_both_succeed_and_one_does_the_work() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{mpsc, Arc};
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let debs = deb_source(tmp.path());
        let works = Arc::new(AtomicUsize::new(0));
        let (locked_tx, locked_rx) = mpsc::channel();
        let first = {
            let (cache, debs, works) = (cache.clone(), debs.clone(), works.clone());
            std::thread::spawn(move || {
                fetch_locked(&cache, "k", &mut |_| {}, &mut |kdir, p| {
                    works.fetch_add(1, Ordering::SeqCst);
                    locked_tx.send(()).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    crate::layout::kernel_from_debs(kdir, &debs, "k", p)
                })
            })
        };
        locked_rx.recv().unwrap();
        let mut lines = Vec::new();
        let second = fetch_locked(
            &cache,
            "k",
            &mut |l| lines.push(l.to_owned()),
            &mut |kdir, p| {
                works.fetch_add(1, Ordering::SeqCst);
                crate::layout::kernel_from_debs(kdir, &debs, "k", p)
            },
        )
        .unwrap();
        let first = first.join().unwrap().unwrap();
        assert_eq!(first, second);
        assert_eq!(works.load(Ordering::SeqCst), 1);
        assert_eq!(lines, ["waiting for another bpfmatrix fetching k"]);
    }

    /// A download that writes half the file and then hangs, for the child process
    /// of the test below.
    struct HangingServer(crate::mainline::tests::FakeServer);

    impl crate::mainline::Transport for HangingServer {
        fn text(&mut self, url: &str) -> anyhow::Result<String> {
            self.0.text(url)
        }
        fn download(&mut self, url: &str, dest: &Path) -> anyhow::Result<()> {
            let body = &self.0.files[url];
            std::fs::write(dest, &body[..body.len() / 2]).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(120));
            panic!("the parent kills this process long before");
        }
    }

    /// Where the parent test tells its child process to fetch.
    const HANG_CACHE: &str = "BPFMATRIX_TEST_HANG_CACHE";

    /// Not a test by itself: the child process of the test below, which runs it
    /// (`--ignored --exact`) with $BPFMATRIX_TEST_HANG_CACHE set. It fetches into that
    /// cache and hangs half-way through the first download until the parent kills it.
    /// Run any other way it fails, naming the variable.
    #[test]
    #[ignore = "the child process of a_process_killed_mid_download_leaves_nothing_trusted_and_unblocks_the_next, which runs it with BPFMATRIX_TEST_HANG_CACHE set; not a test by itself"]
    fn child_hangs_mid_download() {
        let cache = std::env::var_os(HANG_CACHE).unwrap_or_else(|| {
            panic!(
                "${HANG_CACHE} is not set: this is the child process of \
                 a_process_killed_mid_download_leaves_nothing_trusted_and_unblocks_the_next, \
                 which sets it; run that test instead"
            )
        });
        let (server, spec) = crate::mainline::tests::server(false);
        let mut server = HangingServer(server);
        let _ = fetch_locked(Path::new(&cache), "5.4", &mut |_| {}, &mut |kdir, p| {
            crate::mainline::fetch_with(&mut server, "5.4", &spec, kdir, p)
        });
    }

    /// A process killed half-way through a download, while another waits for it:
    /// the waiting one gets the lock when the first dies, throws the half file
    /// away, downloads again and succeeds.
    #[test]
    fn a_process_killed_mid_download_leaves_nothing_trusted_and_unblocks_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().to_path_buf();
        // The child's output goes to a file, read only if it ends too early.
        let child_log = tmp.path().join("child.log");
        let log = std::fs::File::create(&child_log).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "catalog::tests::child_hangs_mid_download",
                "--nocapture",
            ])
            .env(HANG_CACHE, &cache)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let kdir = cache.join("kernels/5.4");
        let start = std::time::Instant::now();
        let half = loop {
            let found = std::fs::read_dir(&kdir).ok().and_then(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .find(|e| e.file_name().to_string_lossy().contains(".deb.tmp."))
            });
            if let Some(entry) = found {
                break entry.path();
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the child process ended ({status}) before it started downloading:\n{}",
                    std::fs::read_to_string(&child_log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed().as_secs() < 60,
                "the child never started downloading"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };

        let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
        let parent = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let (mut server, spec) = crate::mainline::tests::server(false);
                let kernel = fetch_locked(
                    &cache,
                    "5.4",
                    &mut |l| {
                        let _ = waiting_tx.send(l.to_owned());
                    },
                    &mut |kdir, p| crate::mainline::fetch_with(&mut server, "5.4", &spec, kdir, p),
                );
                (kernel, server.downloads)
            })
        };
        let first = waiting_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap();
        assert_eq!(first, "waiting for another bpfmatrix fetching 5.4");
        child.kill().unwrap();
        child.wait().unwrap();
        let (kernel, downloads) = parent.join().unwrap();
        let kernel = kernel.unwrap();
        assert_eq!(downloads, 2, "both packages downloaded again");
        assert!(!half.exists());
        assert_eq!(kernel.release.as_deref(), Some("5.4.0-050400-generic"));
        assert_eq!(left_in(&kdir), ["kernel.json", "lock", "root", "vmlinux"]);
    }
}
