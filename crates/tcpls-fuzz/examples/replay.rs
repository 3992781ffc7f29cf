//! Runs one fuzz target over files (or every file in directories), without
//! libFuzzer or sanitizers: to reproduce a finding under a debugger, or to
//! profile a target on a corpus.
//!
//! ```sh
//! cargo run --release -p tcpls-fuzz --example replay -- session_multi fuzz/seeds/session_multi
//! # several passes and the slowest inputs, for profiling:
//! REPLAY_PASSES=20 cargo run --release -p tcpls-fuzz --example replay -- session_multi DIR
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("usage: replay TARGET FILE|DIR...");
    let t = tcpls_fuzz::target(&name).unwrap_or_else(|| panic!("no target {name}"));
    let mut files = Vec::new();
    for a in args {
        let p = PathBuf::from(a);
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&p)
                .expect("read_dir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            files.extend(v);
        } else {
            files.push(p);
        }
    }
    let inputs: Vec<(PathBuf, Vec<u8>)> = files
        .into_iter()
        .map(|p| {
            let d = std::fs::read(&p).expect("read input");
            (p, d)
        })
        .collect();
    let passes: u32 = std::env::var("REPLAY_PASSES")
        .ok()
        .map_or(1, |v| v.parse().expect("REPLAY_PASSES"));
    let mut per_input = vec![Duration::ZERO; inputs.len()];
    let start = Instant::now();
    for _ in 0..passes {
        for (i, (_, data)) in inputs.iter().enumerate() {
            let t0 = Instant::now();
            (t.run)(data);
            per_input[i] += t0.elapsed();
        }
    }
    let total = start.elapsed();
    let runs = inputs.len() as u64 * passes as u64;
    println!(
        "{name}: {runs} runs of {} inputs in {:.3} s: {:.0} exec/s",
        inputs.len(),
        total.as_secs_f64(),
        runs as f64 / total.as_secs_f64()
    );
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(per_input[i]));
    for &i in order.iter().take(5) {
        println!(
            "  {:>9.1} us  {:>5} bytes  {}",
            per_input[i].as_secs_f64() * 1e6 / passes as f64,
            inputs[i].1.len(),
            inputs[i].0.display()
        );
    }
}
