//! Per-core pool of relay buffers (thread-local = core-local under glommio).
//!
//! A copy-path direction takes one buffer for its lifetime; returning it on
//! drop keeps the allocator out of the steady state.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Size of one relay buffer: two TLS records of plaintext.
pub const BUF_SIZE: usize = 32 * 1024;
const MAX_POOLED: usize = 512;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer that goes back to this core's pool when dropped.
#[derive(Debug)]
pub struct PooledBuf(Option<Box<[u8]>>);

/// Takes a buffer from the pool (or allocates one).
pub fn take() -> PooledBuf {
    let b = POOL
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
    PooledBuf(Some(b))
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            POOL.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < MAX_POOLED {
                    p.push(b);
                }
            });
        }
    }
}

impl Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_are_reused() {
        let a = super::take();
        let ptr = a.as_ptr();
        drop(a);
        let b = super::take();
        assert_eq!(b.as_ptr(), ptr);
        assert_eq!(b.len(), super::BUF_SIZE);
    }
}
