//! CPU time of this process (both ends of every transfer run in it).

use std::time::Duration;

/// User plus system CPU time consumed by the whole process so far.
pub fn process_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Wall and CPU time of one measured section.
pub struct Span {
    wall: std::time::Instant,
    cpu: Duration,
}

impl Span {
    pub fn start() -> Self {
        Self {
            wall: std::time::Instant::now(),
            cpu: process_time(),
        }
    }

    /// (wall seconds, CPU seconds) since `start`.
    pub fn stop(&self) -> (f64, f64) {
        (
            self.wall.elapsed().as_secs_f64(),
            process_time().saturating_sub(self.cpu).as_secs_f64(),
        )
    }
}
