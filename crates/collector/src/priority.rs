//! Scheduling priority of Corral's threads.
//!
//! Samples can only be lost in the sockets' receive buffers, which fill within tens of
//! milliseconds at high rates whenever a receive thread does not run. Everything else (flushing,
//! computing statistics, encoding, serving the API, polling the agent) can wait without losing
//! anything. So those threads run at a lower priority ([`BACKGROUND_NICE`]) and the receive
//! threads keep the default: when they share a core, the receive threads come first and the
//! rest takes the idle time.

/// The nice value of every thread except the receive threads.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`] (never raises it). Threads it
/// then creates inherit it, so receive threads must not be started from such a thread.
pub fn background() {
    // SAFETY: gettid and get/setpriority only read and set scheduling attributes of the calling
    // thread (on Linux the nice value is per thread, addressed by its thread id).
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        if current < BACKGROUND_NICE
            && libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE) != 0
        {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower a background thread's priority"
            );
        }
    }
}

/// The calling thread's nice value.
#[cfg(test)]
fn current() -> i32 {
    // SAFETY: as above, reads the calling thread's attribute.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_background_thread_is_lowered_and_its_children_inherit() {
        let before = current();
        std::thread::spawn(|| {
            background();
            assert!(current() >= BACKGROUND_NICE);
            let child = std::thread::spawn(current).join().unwrap();
            assert!(child >= BACKGROUND_NICE);
        })
        .join()
        .unwrap();
        // Only the thread that asked.
        assert_eq!(current(), before);
    }
}
