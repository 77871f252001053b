//! CPU time for the benches' tables: of this process, one of its threads, its children, and of
//! other processes (clamd, rspamd's workers) or single threads read from `/proc`.
#![allow(dead_code)] // each bench takes the few it needs

/// CPU seconds (user, system) of `who` (`RUSAGE_SELF`, `RUSAGE_THREAD`, `RUSAGE_CHILDREN`).
fn rusage(who: libc::c_int) -> (f64, f64) {
    // SAFETY: a zeroed rusage is a valid value; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: one of the RUSAGE_ constants and a valid pointer for the duration of the call.
    unsafe { libc::getrusage(who, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_utime), secs(ru.ru_stime))
}

/// CPU seconds (user, system) this process has used so far, every thread counted.
pub fn cpu_seconds() -> (f64, f64) {
    rusage(libc::RUSAGE_SELF)
}

/// CPU seconds (user, system) the calling thread has used so far.
pub fn thread_cpu_seconds() -> (f64, f64) {
    rusage(libc::RUSAGE_THREAD)
}

/// CPU seconds (user + system) of the children waited for so far.
pub fn cpu_children() -> f64 {
    let (user, system) = rusage(libc::RUSAGE_CHILDREN);
    user + system
}

/// The fields of `/proc/<what>/stat` (`what`: a pid, `self`, `self/task/<tid>`) after the command
/// name, which is in parentheses and may hold blanks: state is field 0, the process group 2,
/// utime and stime 11 and 12.
pub fn stat_fields(what: &str) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{what}/stat")).unwrap_or_default();
    stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().map(str::to_string).collect()
}

/// CPU seconds (user + system) `/proc/<what>` has used so far (see [`stat_fields`]).
pub fn proc_cpu_seconds(what: &str) -> f64 {
    let ticks: f64 =
        stat_fields(what).get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}
