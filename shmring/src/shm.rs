//! UNSAFE ZONE: the mapping of the shared region and every access to it.
//!
//! This is the only module of the crate with `unsafe`. Everything outside it
//! sees safe types: [`Region`] (the mapping), [`Ring`] (one SPSC ring) and
//! `&AtomicU64` views of header and stats fields.
//!
//! Memory model: the region is `MAP_SHARED` over a /dev/shm file, mapped by
//! two processes. Control fields are 8-byte aligned `AtomicU64`s (lock-free on
//! every target we build for, so they work across processes). Ring data bytes
//! are plain memory handed over by the ring protocol: the producer writes only
//! the free part `[head, tail + cap)`, then publishes with a Release store of
//! `head`; the consumer reads only `[tail, head)` after an Acquire load of
//! `head`, and gives bytes back with a Release store of `tail`. Exactly one
//! producer (one control-plane task per core) and one consumer (the owning
//! data-plane core) use each ring; that is a protocol rule, not a type rule.
//! The consumer validates every length it reads, so a misbehaving peer can
//! garble records but cannot make this process read out of bounds.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::layout::{self, Layout, HEADER_BYTES};

/// A mapped region.
#[derive(Debug)]
pub struct Region {
    base: *mut u8,
    len: usize,
    layout: Layout,
    _file: File,
}

// SAFETY: the mapping lives as long as `Region`; all shared-state access goes
// through atomics or through the ring protocol documented above, which is
// safe to drive from any thread as long as each ring has one producer and one
// consumer.
unsafe impl Send for Region {}
// SAFETY: as for Send: `&Region` only hands out atomics and ring views.
unsafe impl Sync for Region {}

/// Why a region could not be mapped.
#[derive(Debug)]
#[non_exhaustive]
pub enum AttachError {
    /// open/stat/mmap failed.
    Io(io::Error),
    /// The file is not a Switchyard region of this layout version.
    Layout(&'static str),
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::Io(e) => write!(f, "{e}"),
            AttachError::Layout(why) => write!(f, "not a usable region: {why}"),
        }
    }
}
impl std::error::Error for AttachError {}

impl From<io::Error> for AttachError {
    fn from(e: io::Error) -> Self {
        AttachError::Io(e)
    }
}

fn map(file: &File, len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh shared mapping of `len` bytes of an open file that is
    // at least `len` long (callers check or set the size first); the kernel
    // chooses the address, so no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p.cast())
}

impl Region {
    /// Creates a fresh region at `path` (mode 0600), replacing any file there
    /// atomically (write aside, then rename), and marks a replaced valid
    /// region as retired so that an attached data plane re-opens the path.
    pub fn create(path: &Path, cores: u32, ring_bytes: u64) -> Result<Region, AttachError> {
        let layout = Layout::new(cores, ring_bytes).ok_or(AttachError::Layout("bad sizes"))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask cannot widen 0600, but a pre-existing tmp file could be wider.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.set_len(layout.total_bytes() as u64)?;
        let base = map(&file, layout.total_bytes())?;
        let region = Region {
            base,
            len: layout.total_bytes(),
            layout,
            _file: file,
        };
        region.write_header();
        if let Ok(old) = Region::attach(path) {
            old.header(layout::H_RETIRED).store(1, Ordering::Release);
        }
        std::fs::rename(&tmp, path)?;
        Ok(region)
    }

    /// Maps an existing region and checks its header.
    pub fn attach(path: &Path) -> Result<Region, AttachError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let size = file.metadata()?.len() as usize;
        if size < HEADER_BYTES {
            return Err(AttachError::Layout("file smaller than the header"));
        }
        let base = map(&file, size)?;
        let mut region = Region {
            base,
            len: size,
            layout: Layout::new(1, 4096).ok_or(AttachError::Layout("bad sizes"))?,
            _file: file,
        };
        // Only header words are read until the layout is validated.
        let magic = region.header(layout::H_MAGIC).load(Ordering::Acquire);
        if magic != layout::MAGIC {
            return Err(AttachError::Layout("bad magic"));
        }
        let version = region.header(layout::H_VERSION).load(Ordering::Relaxed);
        if version != layout::VERSION {
            return Err(AttachError::Layout("unsupported layout version"));
        }
        let cores = region.header(layout::H_CORES).load(Ordering::Relaxed);
        let ring = region.header(layout::H_RING_BYTES).load(Ordering::Relaxed);
        let l = u32::try_from(cores)
            .ok()
            .and_then(|c| Layout::new(c, ring))
            .ok_or(AttachError::Layout("bad sizes in header"))?;
        if l.total_bytes() != size {
            return Err(AttachError::Layout("file size does not match the header"));
        }
        region.layout = l;
        Ok(region)
    }

    fn write_header(&self) {
        self.header(layout::H_VERSION)
            .store(layout::VERSION, Ordering::Relaxed);
        self.header(layout::H_CORES)
            .store(u64::from(self.layout.cores), Ordering::Relaxed);
        self.header(layout::H_RING_BYTES)
            .store(self.layout.ring_bytes, Ordering::Relaxed);
        // Magic last: a reader that sees it sees the rest.
        self.header(layout::H_MAGIC)
            .store(layout::MAGIC, Ordering::Release);
    }

    /// The layout in use.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// A header word (index from [`layout`]`::H_*`).
    pub fn header(&self, word: usize) -> &AtomicU64 {
        self.word(word * 8)
    }

    /// A stats word of `core` (index from [`layout::stat`]); `None` if the
    /// core or word is out of range.
    pub fn stat(&self, core: usize, word: usize) -> Option<&AtomicU64> {
        if core >= self.layout.cores as usize || word >= layout::STAT_WORDS {
            return None;
        }
        Some(self.word(self.layout.core_offset(core) + layout::STATS_OFFSET + word * 8))
    }

    /// Word `word` of tunnel slot `slot` of `core`'s section.
    pub fn tunnel_slot(&self, core: usize, slot: usize, word: usize) -> Option<&AtomicU64> {
        if core >= self.layout.cores as usize
            || slot >= layout::TUNNEL_SLOTS
            || word >= layout::TUNNEL_SLOT_WORDS
        {
            return None;
        }
        let at = self.layout.core_offset(core)
            + layout::TUNNEL_STATS_OFFSET
            + (slot * layout::TUNNEL_SLOT_WORDS + word) * 8;
        Some(self.word(at))
    }

    /// The ring of `core`, if it exists.
    pub fn ring(&self, core: usize) -> Option<Ring<'_>> {
        if core >= self.layout.cores as usize {
            return None;
        }
        let off = self.layout.core_offset(core);
        Some(Ring {
            region: self,
            ctl: off,
            data: off + layout::DATA_OFFSET,
            cap: self.layout.ring_bytes,
        })
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len, "word in range");
        // SAFETY: in bounds (checked above) and 8-aligned (mmap returns a
        // page-aligned base); the mapping outlives `&self`; AtomicU64 has the
        // size and alignment of u64 and every bit pattern is valid.
        unsafe { &*self.base.add(offset).cast::<AtomicU64>() }
    }

    fn copy_in(&self, offset: usize, src: &[u8]) {
        assert!(offset + src.len() <= self.len, "copy in range");
        // SAFETY: destination in bounds (checked); the ring protocol gives the
        // producer exclusive use of these bytes until it publishes `head`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(offset), src.len()) }
    }

    fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        assert!(offset + dst.len() <= self.len, "copy out range");
        // SAFETY: source in bounds (checked); the ring protocol gives the
        // consumer these bytes (published by Release on `head`, observed by
        // Acquire) until it moves `tail` past them.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(offset), dst.as_mut_ptr(), dst.len()) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`; no reference into
        // it outlives `self` (all views borrow `&self`).
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

/// What [`Ring::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop {
    /// Nothing published.
    Empty,
    /// One frame body was copied into the buffer.
    Frame,
    /// A length that cannot be right: the ring was emptied; ask for a snapshot.
    Corrupt,
}

/// What [`Ring::pop_many`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// This many frames were handed over (0: the ring was empty).
    Frames(usize),
    /// A length that cannot be right: the ring was emptied; ask for a snapshot.
    Corrupt,
}

/// Frames between two `tail` stores in [`Ring::pop_many`]: frees space for
/// the producer while a long batch is still being applied.
pub const TAIL_EVERY: usize = 256;

/// One single-producer/single-consumer byte ring of frames.
#[derive(Debug, Clone, Copy)]
pub struct Ring<'a> {
    region: &'a Region,
    ctl: usize,
    data: usize,
    cap: u64,
}

impl Ring<'_> {
    fn head(&self) -> &AtomicU64 {
        self.region.word(self.ctl + layout::R_HEAD)
    }
    fn tail(&self) -> &AtomicU64 {
        self.region.word(self.ctl + layout::R_TAIL)
    }
    /// Set by the producer when it dropped a record; cleared by the consumer.
    pub fn overflow(&self) -> &AtomicU64 {
        self.region.word(self.ctl + layout::R_OVERFLOW)
    }

    /// Bytes the producer may still write.
    pub fn free(&self) -> u64 {
        let used = self
            .head()
            .load(Ordering::Relaxed)
            .wrapping_sub(self.tail().load(Ordering::Acquire));
        self.cap.saturating_sub(used)
    }

    /// Bytes published and not yet consumed.
    pub fn used(&self) -> u64 {
        self.head()
            .load(Ordering::Acquire)
            .wrapping_sub(self.tail().load(Ordering::Acquire))
    }

    fn write_wrapped(&self, pos: u64, bytes: &[u8]) {
        let at = (pos % self.cap) as usize;
        let first = bytes.len().min(self.cap as usize - at);
        self.region.copy_in(self.data + at, &bytes[..first]);
        self.region.copy_in(self.data, &bytes[first..]);
    }

    fn read_wrapped(&self, pos: u64, out: &mut [u8]) {
        let at = (pos % self.cap) as usize;
        let first = out.len().min(self.cap as usize - at);
        let (a, b) = out.split_at_mut(first);
        self.region.copy_out(self.data + at, a);
        self.region.copy_out(self.data, b);
    }

    /// Producer: publishes one frame body; `false` when it does not fit now.
    pub fn push(&self, body: &[u8]) -> bool {
        let need = 4 + body.len() as u64;
        if body.len() > crate::codec::MAX_RECORD || need > self.free() {
            return false;
        }
        let head = self.head().load(Ordering::Relaxed);
        self.write_wrapped(head, &(body.len() as u32).to_le_bytes());
        self.write_wrapped(head.wrapping_add(4), body);
        self.head()
            .store(head.wrapping_add(need), Ordering::Release);
        true
    }

    /// Producer: publishes the longest prefix of whole frames of `frames`
    /// (each `u32` LE length + body, as [`crate::Record::encode_frame`]
    /// writes them) that fits now, with one copy and one `head` store;
    /// returns the bytes taken. Stops at a frame whose length is over
    /// [`crate::codec::MAX_RECORD`] (the producer's bug: never published).
    pub fn push_frames(&self, frames: &[u8]) -> usize {
        let free = self.free();
        let mut take = 0usize;
        while let Some(len) = frames.get(take..take + 4) {
            let n = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let next = take + 4 + n;
            if n > crate::codec::MAX_RECORD || next > frames.len() || next as u64 > free {
                break;
            }
            take = next;
        }
        if take == 0 {
            return 0;
        }
        let head = self.head().load(Ordering::Relaxed);
        self.write_wrapped(head, &frames[..take]);
        self.head()
            .store(head.wrapping_add(take as u64), Ordering::Release);
        take
    }

    /// Consumer: hands up to `max` frame bodies, one at a time through
    /// `out`, to `each`; stops early when `each` returns `false`. Reads
    /// `head` once and stores `tail` every [`TAIL_EVERY`] frames and at the
    /// end, so a large batch costs two shared cache lines, not two per frame.
    pub fn pop_many(
        &self,
        max: usize,
        out: &mut Vec<u8>,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Drained {
        let head = self.head().load(Ordering::Acquire);
        let mut tail = self.tail().load(Ordering::Relaxed);
        let mut frames = 0;
        while frames < max {
            let avail = head.wrapping_sub(tail);
            if avail == 0 {
                break;
            }
            let mut len = [0u8; 4];
            if avail < 4 || avail > self.cap {
                self.skip_all();
                return Drained::Corrupt;
            }
            self.read_wrapped(tail, &mut len);
            let n = u32::from_le_bytes(len) as u64;
            if n > crate::codec::MAX_RECORD as u64 || 4 + n > avail {
                self.skip_all();
                return Drained::Corrupt;
            }
            out.clear();
            out.resize(n as usize, 0);
            self.read_wrapped(tail.wrapping_add(4), out);
            tail = tail.wrapping_add(4 + n);
            frames += 1;
            let more = each(out);
            if frames % TAIL_EVERY == 0 || !more {
                self.tail().store(tail, Ordering::Release);
            }
            if !more {
                return Drained::Frames(frames);
            }
        }
        self.tail().store(tail, Ordering::Release);
        Drained::Frames(frames)
    }

    /// Consumer: copies the next frame body into `out` (replacing its contents).
    pub fn pop(&self, out: &mut Vec<u8>) -> Pop {
        match self.pop_many(1, out, |_| true) {
            Drained::Frames(0) => Pop::Empty,
            Drained::Frames(_) => Pop::Frame,
            Drained::Corrupt => Pop::Corrupt,
        }
    }

    /// Consumer: discards everything published so far (a new consumer starts
    /// here, then asks for a snapshot).
    pub fn skip_all(&self) {
        let head = self.head().load(Ordering::Acquire);
        self.tail().store(head, Ordering::Release);
    }
}
