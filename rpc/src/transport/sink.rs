//! Encoding a frame's payload in place: [`Sink`], a postcard flavor that writes through a
//! raw pointer, straight into a shared-memory ring's free space, and [`Encode`], the
//! type-erased encoder a sender runs on it.
//!
//! Why raw pointers rather than a `&mut [u8]`: the ring's free space lies in memory the peer
//! can write. It has no business writing there, but a hostile or broken peer may; a Rust
//! reference over memory another party writes is a data race (undefined behaviour), while a
//! raw-pointer write racing with the peer's only leaves the bytes the peer then reads
//! undefined, which is its own problem (as for the ring's `push`). The encoder only writes,
//! never reads back what it wrote.

use std::marker::PhantomData;

use postcard::ser_flavors::Flavor;

/// Writes one frame's payload into a [`Sink`]: the envelope, then the body.
pub type Encode<'a> = dyn FnMut(&mut Sink<'_>) -> postcard::Result<()> + 'a;

/// Where an [`Encode`] writes a payload: at most a fixed number of bytes, written once each
/// through a raw pointer, or handed to a stream that writes them out as they come. As a
/// postcard flavor (`&mut Sink`), several values can be encoded one after the other into it.
pub struct Sink<'a> {
    ptr: *mut u8,
    len: usize,
    pos: usize,
    /// Set for a stream: the bytes go here instead of through `ptr`.
    out: Option<&'a mut dyn Gather>,
    /// Set for a ring that publishes a large frame as it is encoded: called with the bytes
    /// written so far once `next_report` of them are.
    progress: Option<&'a mut dyn FnMut(usize)>,
    /// Where the next report is due (never, without `progress`).
    next_report: usize,
    _bytes: PhantomData<&'a mut [u8]>,
}

/// How many bytes a reporting sink writes between two reports: enough that a report (a
/// store the peer's CPU must fetch, and a fence) costs nothing beside the copy, few enough
/// that a reader on another CPU starts copying out early.
pub(crate) const REPORT_EVERY: usize = 64 * 1024;

impl std::fmt::Debug for Sink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("len", &self.len)
            .field("pos", &self.pos)
            .field("streamed", &self.out.is_some())
            .finish()
    }
}

/// A stream's side of a [`Sink`]: takes the payload's bytes as they are encoded, so that a
/// large byte string can be written from the caller's own buffer (`writev`) instead of
/// being copied into a frame first.
pub(crate) trait Gather {
    /// One byte.
    fn push(&mut self, byte: u8) -> postcard::Result<()>;
    /// Bytes borrowed for this call only.
    fn extend(&mut self, bytes: &[u8]) -> postcard::Result<()>;
}

impl<'a> Sink<'a> {
    /// A sink over `len` bytes from `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for writes of `len` bytes for `'a`, and no reference to those
    /// bytes may be live meanwhile.
    pub(crate) unsafe fn from_raw(ptr: *mut u8, len: usize) -> Sink<'a> {
        Sink {
            ptr,
            len,
            pos: 0,
            out: None,
            progress: None,
            next_report: usize::MAX,
            _bytes: PhantomData,
        }
    }

    /// As [`from_raw`](Self::from_raw), calling `progress` with the bytes written so far
    /// each time another [`REPORT_EVERY`] of them are (a large value is copied in pieces).
    ///
    /// # Safety
    ///
    /// As for [`from_raw`](Self::from_raw).
    pub(crate) unsafe fn reporting(ptr: *mut u8, len: usize, progress: &'a mut dyn FnMut(usize)) -> Sink<'a> {
        Sink {
            progress: Some(progress),
            next_report: REPORT_EVERY,
            // SAFETY: the caller's contract is `from_raw`'s.
            ..unsafe { Sink::from_raw(ptr, len) }
        }
    }

    /// A sink of `len` bytes that hands them to `out`.
    pub(crate) fn gathered(out: &'a mut dyn Gather, len: usize) -> Sink<'a> {
        Sink {
            ptr: std::ptr::null_mut(),
            len,
            pos: 0,
            out: Some(out),
            progress: None,
            next_report: usize::MAX,
            _bytes: PhantomData,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.pos
    }

    /// Reports the bytes written so far if a report is due.
    fn report(&mut self) {
        if self.pos >= self.next_report {
            if let Some(progress) = self.progress.as_mut() {
                progress(self.pos);
            }
            self.next_report = self.pos + REPORT_EVERY;
        }
    }
}

impl Flavor for &mut Sink<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        // Not through `try_extend`: a copy of one byte is a call to `memcpy` (most of an
        // envelope is single bytes).
        if self.pos == self.len {
            return Err(postcard::Error::SerializeBufferFull);
        }
        if let Some(out) = self.out.as_mut() {
            out.push(byte)?;
            self.pos += 1;
            return Ok(());
        }
        // SAFETY: `pos < len`, so the byte lies in the bytes the sink may write.
        unsafe { self.ptr.add(self.pos).write(byte) };
        self.pos += 1;
        self.report();
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() > self.len - self.pos {
            return Err(postcard::Error::SerializeBufferFull);
        }
        if let Some(out) = self.out.as_mut() {
            out.extend(bytes)?;
            self.pos += bytes.len();
            return Ok(());
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            // Up to the next report (all of it, for a sink that does not report).
            let n = rest.len().min(self.next_report - self.pos);
            // SAFETY: `pos + rest.len() <= len` (checked above for all of `bytes`), so the
            // destination lies in the bytes the sink may write (its constructor's contract);
            // `rest` is a Rust slice, not that memory.
            unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), self.ptr.add(self.pos), n) };
            self.pos += n;
            rest = &rest[n..];
            self.report();
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_encoded_one_after_the_other_decode_back_and_overflow_is_refused() {
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is valid for 64 bytes and only written through the sink meanwhile.
        let mut sink = unsafe { Sink::from_raw(buf.as_mut_ptr(), buf.len()) };
        postcard::serialize_with_flavor(&(1u64, "two"), &mut sink).unwrap();
        postcard::serialize_with_flavor(&[3u8; 5][..], &mut sink).unwrap();
        let written = sink.written();
        let ((one, two), rest): ((u64, &str), &[u8]) = postcard::take_from_bytes(&buf[..written]).unwrap();
        assert_eq!((one, two), (1, "two"));
        assert_eq!(postcard::from_bytes::<&[u8]>(rest).unwrap(), &[3; 5]);

        let mut small = [0u8; 2];
        // SAFETY: as above, for 2 bytes.
        let mut sink = unsafe { Sink::from_raw(small.as_mut_ptr(), small.len()) };
        let full = postcard::serialize_with_flavor(&"long", &mut sink);
        assert_eq!(full, Err(postcard::Error::SerializeBufferFull));
        assert!(sink.written() <= 2, "never past its end");
    }
}
