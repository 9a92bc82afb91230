//! Work that watches the app yields to it.
//!
//! Exporting spans and showing them (the console) is work about the app, not the app's own:
//! on a busy machine it should wait for idle moments rather than hold a request up. So the
//! span exporter's threads and the console's process run at a lower CPU priority
//! ([`OBSERVER_NICE`]): when the CPUs are contended the scheduler gives the services' own
//! threads most of them, and the observers catch up in the gaps. Their work is not
//! skipped; it is done later. Under a load that leaves no gap for long, the exporter's
//! queue fills and spans are dropped (the SDK counts them), never requests slowed.
//!
//! Linux keeps the nice value per thread and a new thread inherits its creator's, so a
//! thread lowered here passes it on to every thread it starts. Elsewhere this does nothing
//! (there the call would lower the whole process).

use std::io;

/// The nice value of the observers' threads: the default is 0, and at 10 a thread gets
/// about a tenth of the CPU a default one gets when both want it.
pub const OBSERVER_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`OBSERVER_NICE`] (never raises it, which an
/// unprivileged process cannot undo); the threads it starts afterwards inherit it.
pub fn lower_this_thread() -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let me = rustix::thread::gettid();
        let now = rustix::process::getpriority_process(Some(me))?;
        if now < OBSERVER_NICE {
            rustix::process::setpriority_process(Some(me), OBSERVER_NICE)?;
        }
    }
    Ok(())
}

/// The nice value of the calling thread (0 where it is not kept per thread).
pub fn this_thread_nice() -> io::Result<i32> {
    #[cfg(target_os = "linux")]
    {
        Ok(rustix::process::getpriority_process(Some(
            rustix::thread::gettid(),
        ))?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(0)
    }
}

/// The name and nice value of each thread of process `pid` (this process for `None`), read
/// from `/proc` (empty where there is none): how the tests see who yields.
pub fn nice_of_threads(pid: Option<u32>) -> Vec<(String, i32)> {
    let process = pid.map_or_else(|| "self".to_string(), |p| p.to_string());
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{process}/task")) else {
        return Vec::new();
    };
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After the name in parentheses: state is field 3, nice field 19.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(nice) = after
            .split_whitespace()
            .nth(16)
            .and_then(|n| n.parse().ok())
        {
            threads.push((name.trim().to_string(), nice));
        }
    }
    threads
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_lowered_thread_passes_its_priority_on_and_leaves_the_others_alone() {
        let before = this_thread_nice().expect("nice");
        let (lowered, child) = std::thread::spawn(|| {
            lower_this_thread().expect("lower");
            let lowered = this_thread_nice().expect("nice");
            let child = std::thread::spawn(|| this_thread_nice().expect("nice"))
                .join()
                .expect("child");
            (lowered, child)
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, OBSERVER_NICE.max(before));
        assert_eq!(
            child, lowered,
            "a thread started by a lowered one inherits it"
        );
        assert_eq!(
            this_thread_nice().expect("nice"),
            before,
            "only that thread"
        );
    }
}
