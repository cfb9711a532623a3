//! Fetches every catalog kernel over the network, cold then warm, into the cache
//! (`$BPFMATRIX_CACHE` to use a fresh one). A Debian kernel that does not arrive
//! fails the test, and an Ubuntu mainline kernel must either arrive or be reported
//! unavailable with a reason within seconds (kernel.ubuntu.com is unreachable from
//! some machines), never fail otherwise. Ignored by default (it downloads about
//! 360 MB; the vm suite fetches the same kernels through the harness anyway):
//!
//! `cargo test -p bpfmatrix-kernels --test network -- --ignored --nocapture`
//! (`BPFMATRIX_NETWORK_KERNELS=5.10,6.12` limits the kernels.)

use bpfmatrix_kernels::{catalog, fetch, resolve_modules, FetchError, Source};
use std::path::Path;
use std::time::Instant;

fn du(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| du(&e.path())).sum())
            .unwrap_or(0)
    } else {
        meta.len()
    }
}

#[test]
#[ignore = "downloads every catalog kernel (about 360 MB); run with --ignored"]
fn every_catalog_kernel_arrives_or_is_unavailable() {
    let only = std::env::var("BPFMATRIX_NETWORK_KERNELS").ok();
    let mut failures = Vec::new();
    for entry in catalog() {
        if let Some(only) = &only {
            if !only.split(',').any(|n| n == entry.name) {
                continue;
            }
        }
        let mainline = matches!(entry.source, Source::UbuntuMainline(_));
        let start = Instant::now();
        let cold = fetch(&entry, &mut |line| {
            eprintln!("  [{} +{:.1?}] {line}", entry.name, start.elapsed())
        });
        let cold_time = start.elapsed();
        match cold {
            Ok(kernel) => {
                let start = Instant::now();
                let warm = fetch(&entry, &mut |line| {
                    panic!("a cached fetch must be silent: {line}")
                })
                .unwrap();
                let warm_time = start.elapsed();
                assert_eq!(warm, kernel);
                let kdir = kernel.boot_image.parent().unwrap();
                let modules = resolve_modules(&kernel, &["sch_ingress", "cls_bpf"]);
                eprintln!(
                    "{}: {} release {:?} {:?}; cold {cold_time:.1?}, warm {warm_time:.1?}; cache folder {} MB (modules tree {} MB); guest modules {:?}",
                    entry.name,
                    kernel.source,
                    kernel.release,
                    kernel.boot_protocol,
                    du(kdir) / 1_000_000,
                    kernel.modules_dir.as_deref().map_or(0, du) / 1_000_000,
                    modules.as_ref().map(|m| m.iter().map(|m| m.name.clone()).collect::<Vec<_>>()).map_err(|e| format!("{e:#}")),
                );
                if let Err(e) = modules {
                    failures.push(format!("{}: guest modules: {e:#}", entry.name));
                }
            }
            Err(FetchError::Unavailable(why)) if mainline => {
                eprintln!("{}: unavailable after {cold_time:.1?}: {why}", entry.name);
                if cold_time.as_secs() > 20 {
                    failures.push(format!(
                        "{}: took {cold_time:?} to find out it is unavailable",
                        entry.name
                    ));
                }
            }
            Err(e) => {
                eprintln!("{}: FAILED after {cold_time:.1?}: {e}", entry.name);
                failures.push(format!("{}: {e}", entry.name));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
