//! The crate's only raw system calls: reading into a buffer's spare capacity, which nix
//! cannot express without first initialising (zeroing) the memory, and `mq_timedsend(3)`,
//! which nix lacks.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::libc;

/// Reads at most `max` bytes from `fd` into the spare capacity of `buf`, extending its
/// length by what was read. `flags` are `recv(2)` flags for a socket; `None` reads with
/// `read(2)` (pipes and FIFOs).
pub(crate) fn read_spare(
    fd: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
    flags: Option<libc::c_int>,
) -> Result<usize, Errno> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    if len == 0 {
        return Ok(0);
    }
    let ptr = spare.as_mut_ptr().cast::<libc::c_void>();
    let n = match flags {
        // SAFETY: `ptr` points to `len` bytes of `buf`'s spare capacity, which the kernel may
        // write (MaybeUninit<u8> has no invalid bit patterns); `fd` is open for the call.
        Some(flags) => unsafe { libc::recv(fd.as_raw_fd(), ptr, len, flags) },
        // SAFETY: as above.
        None => unsafe { libc::read(fd.as_raw_fd(), ptr, len) },
    };
    let n = Errno::result(n)? as usize;
    // SAFETY: the kernel initialised the first `n <= len` bytes after the current length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Sends `message` on the message queue `mq` with priority 0, waiting for room until the
/// absolute `CLOCK_REALTIME` time `until` (see [`realtime_deadline`]). A full queue past
/// `until` is `ETIMEDOUT`, at once if `until` has passed already.
pub(crate) fn mq_timedsend(mq: BorrowedFd<'_>, message: &[u8], until: &libc::timespec) -> Result<(), Errno> {
    // SAFETY: on Linux a message queue descriptor (`mqd_t`) is a file descriptor, and `mq`
    // is open for the call; `message` is valid for `message.len()` bytes, which the kernel
    // only reads; `until` is a valid timespec for the call.
    let r = unsafe {
        libc::mq_timedsend(
            mq.as_raw_fd(),
            message.as_ptr().cast::<libc::c_char>(),
            message.len(),
            0,
            until,
        )
    };
    Errno::result(r).map(drop)
}

/// The absolute `CLOCK_REALTIME` time that is `left` from now, as the `mq_timed*` calls
/// want it; `None` (no time left) is the epoch, which has always passed. A change of the
/// wall clock during the wait moves its end: the POSIX calls offer no monotonic clock.
pub(crate) fn realtime_deadline(left: Option<std::time::Duration>) -> libc::timespec {
    let epoch = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let Some(left) = left.filter(|left| !left.is_zero()) else {
        return epoch;
    };
    let Ok(now) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) else {
        return epoch;
    };
    let now = std::time::Duration::new(now.tv_sec().max(0) as u64, now.tv_nsec() as u32);
    let at = now.saturating_add(left);
    libc::timespec {
        tv_sec: at.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: at.subsec_nanos() as libc::c_long,
    }
}
