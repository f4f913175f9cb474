//! [`Region`]: a sealed, unnamed memfd mapped shared; the only code that turns the mapping's
//! address into references.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
use std::sync::Mutex;

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

use super::error::{EnvProblem, ShmError};

/// The prefix of the environment variable through which [`Region::pass_to`] names the
/// descriptor of a region to a child: `PROCWIRE_SHARED_<NAME>=<FD>`.
pub const ENV_PREFIX: &str = "PROCWIRE_SHARED_";

/// The seals every region has, and that [`Region::from_fd`] requires: its size can never
/// change, so a mapping of it can never fault.
const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW);

/// A block of memory shared between processes: an unnamed memfd, sealed so that its size
/// never changes, mapped shared and read-write.
///
/// Nothing is named in `/dev/shm` or anywhere else: the memory lives as long as some process
/// holds its descriptor or a mapping of it, so a crash leaks nothing. Processes get it by
/// inheriting the descriptor ([`pass_to`](Region::pass_to), [`from_env`](Region::from_env))
/// or over a Unix socket ([`send_region`](super::send_region),
/// [`recv_region`](super::recv_region)).
///
/// Access is by copy ([`read`](Region::read), [`write`](Region::write)) or through atomics
/// ([`atomic`](Region::atomic)); see the [module docs](super) for why there is no `&T`.
/// Dropping a `Region` unmaps it and closes its descriptor.
pub struct Region {
    fd: OwnedFd,
    map: MmapRaw,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("fd", &self.fd.as_raw_fd())
            .field("len", &self.map.len())
            .finish()
    }
}

/// The largest region this machine can map: offsets must fit in `isize`.
const MAX_SIZE: u64 = isize::MAX as u64;

fn check_size(size: u64) -> Result<usize, ShmError> {
    if size == 0 || size > MAX_SIZE {
        return Err(ShmError::BadSize { size, max: MAX_SIZE });
    }
    Ok(size as usize)
}

impl Region {
    /// Creates a region of `size` bytes, all zero, sealed against shrinking and growing.
    pub fn create(size: usize) -> Result<Region, ShmError> {
        Region::create_labelled("procwire-shared", size)
    }

    /// Like [`create`](Region::create), with `label` as the memfd's name, which only shows in
    /// `/proc/PID/fd` and `/proc/PID/maps` (as `/memfd:LABEL`); it is not a path and nothing
    /// can open the region by it.
    pub fn create_labelled(label: &str, size: usize) -> Result<Region, ShmError> {
        let len = check_size(size as u64)?;
        let label = std::ffi::CString::new(label.replace('\0', "?")).expect("no NUL left in the label");
        let fd = memfd_create(
            &label,
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )
        .map_err(|e| ShmError::os("memfd_create for a shared region", e))?;
        nix::unistd::ftruncate(&fd, len as i64).map_err(|e| ShmError::os("ftruncate of a new shared region", e))?;
        fcntl(
            fd.as_raw_fd(),
            FcntlArg::F_ADD_SEALS(REQUIRED_SEALS | SealFlag::F_SEAL_SEAL),
        )
        .map_err(|e| ShmError::os("sealing a new shared region", e))?;
        Region::map(fd, len)
    }

    /// Opens a region from a descriptor another process created with
    /// [`create`](Region::create) (or any memfd sealed against shrinking and growing), and maps
    /// it. Its size is the memfd's size.
    ///
    /// Anything else is refused with a clear error: a descriptor that is not a memfd
    /// ([`ShmError::NotAMemfd`]), a memfd whose size could still change
    /// ([`ShmError::NotSealed`]: the sender could shrink it under the mapping and make every
    /// access fault), or an empty one.
    pub fn from_fd(fd: OwnedFd) -> Result<Region, ShmError> {
        let raw = fd.as_raw_fd();
        let seals = match fcntl(raw, FcntlArg::F_GET_SEALS) {
            Ok(bits) => SealFlag::from_bits_retain(bits),
            Err(nix::errno::Errno::EINVAL) => return Err(ShmError::NotAMemfd { fd: raw }),
            Err(e) => return Err(ShmError::os("reading the seals of a shared region", e)),
        };
        if !seals.contains(REQUIRED_SEALS) {
            return Err(ShmError::NotSealed { fd: raw });
        }
        let stat = nix::sys::stat::fstat(raw).map_err(|e| ShmError::os("fstat of a shared region", e))?;
        let len = check_size(stat.st_size as u64)?;
        Region::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Region, ShmError> {
        let file = File::from(fd);
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&file)
            .map_err(|source| ShmError::Os {
                op: "mmap of a shared region",
                source,
            })?;
        Ok(Region {
            fd: OwnedFd::from(file),
            map,
        })
    }

    /// The region's size in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: a region has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The region's memfd, to pass to another process.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The address of the mapping's first byte, for the other modules of the shared-memory
    /// code; it stays valid for `len()` bytes as long as `self` lives.
    #[allow(dead_code)] // for the ring transport built on regions
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Checks that `len` bytes at `offset` lie inside the region and that `offset` is a
    /// multiple of `align`.
    pub(crate) fn check(&self, offset: usize, len: usize, align: usize, what: &'static str) -> Result<(), ShmError> {
        let size = self.len();
        if offset > size || len > size - offset {
            return Err(ShmError::OutOfBounds { offset, len, size });
        }
        // The mapping starts on a page boundary, so the offset's alignment is the address's.
        if offset % align != 0 {
            return Err(ShmError::Misaligned { offset, align, what });
        }
        Ok(())
    }

    /// The atomic at `offset`, checked to lie inside the region and to be aligned.
    ///
    /// Atomics are the one kind of reference into shared memory that is sound while other
    /// processes write it: every access is an atomic operation, which a concurrent write
    /// (from this process or another) cannot tear.
    pub fn atomic<A: SharedAtomic>(&self, offset: usize) -> Result<&A, ShmError> {
        Ok(&self.atomics::<A>(offset, 1, A::NAME)?[0])
    }

    /// `count` consecutive atomics from `offset`, checked as [`atomic`](Region::atomic) is.
    pub(crate) fn atomics<A: SharedAtomic>(
        &self,
        offset: usize,
        count: usize,
        what: &'static str,
    ) -> Result<&[A], ShmError> {
        let len = count.checked_mul(size_of::<A>()).ok_or(ShmError::OutOfBounds {
            offset,
            len: usize::MAX,
            size: self.len(),
        })?;
        self.check(offset, len, align_of::<A>(), what)?;
        // SAFETY: the `count` atomics lie inside the mapping (checked above) and are aligned
        // (the mapping is page-aligned and `offset` is a multiple of the alignment). The
        // mapping is readable and writable and stays mapped while `self` lives, which the
        // returned lifetime ties it to; its size can never change (the memfd is sealed, see
        // `from_fd`), so no access faults. Every bit pattern is a valid integer, and the
        // atomic types allow shared mutation through `&` (they are `UnsafeCell`s), so other
        // references to the same bytes, in this process or another, are allowed as long as
        // they too access them only atomically, which this module ensures for Rust code.
        Ok(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset).cast::<A>(), count) })
    }

    /// Makes `cmd` hand the region to the child it spawns, named `name`: the child opens it
    /// with [`Region::from_env`]`(name)`. The descriptor keeps its number and is inherited by
    /// that child only (no other process spawned meanwhile gets it).
    pub fn pass_to(&self, cmd: &mut Command, name: &str) -> Result<(), ShmError> {
        let var = env_var(name)?;
        let fd = self.fd.as_raw_fd();
        cmd.env(var, fd.to_string());
        // SAFETY: the closure runs in the forked child before exec and calls only fcntl(2),
        // which is async-signal-safe; it allocates nothing and takes no locks. The descriptor
        // is open in the child: fork copied it from the parent, where `self` owns it.
        unsafe {
            cmd.pre_exec(move || {
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                Ok(())
            });
        }
        Ok(())
    }

    /// Opens the region a parent handed over with [`pass_to`](Region::pass_to) as `name`.
    ///
    /// It claims the descriptor once per process (a second call for the same name fails), and
    /// only if it was inherited (not close-on-exec), which rules out taking a descriptor that
    /// this process opened for something else at the same number. The descriptor is made
    /// close-on-exec again, so the region goes no further unless passed on explicitly.
    pub fn from_env(name: &str) -> Result<Region, ShmError> {
        let var = env_var(name)?;
        let fd = claim_inherited(&var).map_err(|problem| ShmError::Env { var, problem })?;
        // SAFETY: `claim_inherited` checked that `fd` is open and was inherited, so no other
        // owner in this process knows it (what opened it here would have made it
        // close-on-exec, as std and nix do), and made this the only claim on it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Region::from_fd(owned)
    }
}

/// Claims the descriptor that the environment variable `var` names, once per process: it
/// must be open and inherited (not close-on-exec), which rules out one this process opened
/// for something else at the same number. It is made close-on-exec again, so it goes no
/// further unless passed on explicitly. The caller takes ownership of it.
pub(crate) fn claim_inherited(var: &str) -> Result<RawFd, EnvProblem> {
    static CLAIMED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let value = std::env::var(var).map_err(|_| EnvProblem::Unset)?;
    let fd: RawFd = value
        .trim()
        .parse()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| EnvProblem::NotAnFd(value.clone()))?;
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    let claimed = claimed.get_or_insert_with(HashSet::new);
    if claimed.contains(var) {
        return Err(EnvProblem::AlreadyClaimed);
    }
    let flags = fcntl(fd, FcntlArg::F_GETFD).map_err(|_| EnvProblem::Closed(fd))?;
    if FdFlag::from_bits_retain(flags).contains(FdFlag::FD_CLOEXEC) {
        return Err(EnvProblem::NotInherited(fd));
    }
    // Best effort: a failure leaves it inheritable, which costs nothing but a leak to a child.
    let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    claimed.insert(var.to_owned());
    Ok(fd)
}

/// [`claim_inherited`], owned: the descriptor `var` names, for what is not a region (a
/// topic's listening socket that a supervisor handed over).
pub(crate) fn claim_inherited_owned(var: &str) -> Result<OwnedFd, EnvProblem> {
    let fd = claim_inherited(var)?;
    // SAFETY: `claim_inherited` checked that `fd` is open and was inherited, so no other
    // owner in this process knows it (what opened it here would have made it close-on-exec,
    // as std and nix do), and made this the only claim on it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The environment variable that names region `name` to a child.
pub fn env_var(name: &str) -> Result<String, ShmError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(ShmError::BadName { name: name.to_owned() });
    }
    Ok(format!("{ENV_PREFIX}{name}"))
}

mod sealed {
    pub trait Sealed {}
}

/// The atomic types a region hands out ([`Region::atomic`]): every bit pattern is a valid
/// value and every access is atomic, so they are sound in memory other processes write.
pub trait SharedAtomic: sealed::Sealed + Sync {
    /// The type's name, for errors.
    const NAME: &'static str;
}

macro_rules! shared_atomic {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl SharedAtomic for $t {
            const NAME: &'static str = stringify!($t);
        }
    )*};
}

shared_atomic!(AtomicU8, AtomicU32, AtomicU64, AtomicUsize);
