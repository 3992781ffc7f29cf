//! CPU time of this process (both ends of every transfer run in it).

use std::time::Duration;

/// User plus system CPU time consumed by the whole process so far, and
/// its context switches (voluntary and not): a thread that blocks or is
/// woken counts, so this tracks wake-ups, which timings on a noisy
/// machine hide.
pub fn process_usage() -> (Duration, u64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return (Duration::ZERO, 0);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        tv(ru.ru_utime) + tv(ru.ru_stime),
        (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
    )
}

/// CPU seconds (user + system) of each of this process's threads named
/// `name`, by thread id: how busy each worker of a runtime was.
pub fn thread_times(name: &str) -> Vec<(u32, f64)> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        if comm.trim_end() != name {
            return None;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // Fields after the parenthesised name: state is field 3, utime
        // and stime fields 14 and 15 (proc(5)).
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        Some((tid, (utime + stime) / ticks))
    })
    .collect()
}

/// Wall and CPU time, and context switches, of one measured section.
pub struct Span {
    wall: std::time::Instant,
    cpu: Duration,
    switches: u64,
}

impl Span {
    pub fn start() -> Self {
        let (cpu, switches) = process_usage();
        Self {
            wall: std::time::Instant::now(),
            cpu,
            switches,
        }
    }

    /// (wall seconds, CPU seconds, context switches) since `start`.
    pub fn stop(&self) -> (f64, f64, u64) {
        let (cpu, switches) = process_usage();
        (
            self.wall.elapsed().as_secs_f64(),
            cpu.saturating_sub(self.cpu).as_secs_f64(),
            switches.saturating_sub(self.switches),
        )
    }
}
