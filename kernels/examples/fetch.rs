//! Fetches catalog kernels by name and prints each as JSON, or why it is unavailable:
//! `cargo run -p bpfmatrix-kernels --example fetch -- 6.1 4.16`. Exits 1 if any
//! fetch failed (not merely unavailable), 2 on an unknown name.

use bpfmatrix_kernels::{fetch, find, FetchError};

fn main() {
    let mut status = 0;
    for name in std::env::args().skip(1) {
        let Some(entry) = find(&name) else {
            eprintln!("unknown kernel '{name}'");
            std::process::exit(2);
        };
        let start = std::time::Instant::now();
        match fetch(&entry, &mut |line| eprintln!("[{name}] {line}")) {
            Ok(kernel) => {
                eprintln!("[{name}] ready in {:.1?}", start.elapsed());
                println!("{}", serde_json::to_string_pretty(&kernel).unwrap());
            }
            Err(FetchError::Unavailable(why)) => {
                eprintln!("[{name}] unavailable ({:.1?}): {why}", start.elapsed())
            }
            Err(e) => {
                eprintln!("[{name}] FAILED ({:.1?}): {e}", start.elapsed());
                status = 1;
            }
        }
    }
    std::process::exit(status);
}
