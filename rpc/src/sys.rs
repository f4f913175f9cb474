//! The crate's only raw system calls: reading into a buffer's spare capacity, which nix
//! cannot express without first initialising (zeroing) the memory.

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
