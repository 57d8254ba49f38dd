//! Aligned I/O buffers and the pool they come from.
//!
//! An [`IoBuf`] is owned by whoever holds it: the caller before submission,
//! the engine while the kernel may touch it, and the caller again when the
//! completion hands it back (the `BufResult` pattern). A buffer whose
//! requester went away is dropped only after its completion arrived, which
//! returns it to its pool.
//!
//! Alignment comes from the type ([`Block`] is `align(4096)`), so building
//! and slicing buffers needs no unsafe code.

use std::sync::{Arc, Mutex};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Alignment and granularity of every buffer: one 4 KiB block.
pub const ALIGN: usize = 4096;

/// One aligned 4 KiB block of memory.
#[derive(Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(4096))]
pub struct Block(pub [u8; ALIGN]);

const _: () = assert!(core::mem::size_of::<Block>() == ALIGN);

/// An owned, 4096-aligned buffer whose capacity is a multiple of 4096.
///
/// Derefs to its first `len()` bytes.
pub struct IoBuf {
    blocks: Vec<Block>,
    len: usize,
    home: Option<(Arc<PoolShared>, u16)>,
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("pool_index", &self.pool_index())
            .finish()
    }
}

impl IoBuf {
    /// A zeroed heap buffer of `len` bytes (capacity rounded up to 4096).
    pub fn new(len: usize) -> IoBuf {
        let blocks = vec![Block([0; ALIGN]); len.div_ceil(ALIGN).max(1)];
        IoBuf {
            blocks,
            len,
            home: None,
        }
    }

    /// An empty buffer (for flushes). Allocates nothing.
    pub fn empty() -> IoBuf {
        IoBuf {
            blocks: Vec::new(),
            len: 0,
            home: None,
        }
    }

    /// Bytes available to I/O.
    pub fn capacity(&self) -> usize {
        self.blocks.len() * ALIGN
    }

    /// Bytes the buffer is considered to hold.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether `len()` is 0.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Set the length; clamps to the capacity.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.capacity());
    }

    /// The whole capacity as bytes.
    pub fn as_full_slice(&self) -> &[u8] {
        self.blocks.as_bytes()
    }

    /// The whole capacity as mutable bytes.
    pub fn as_full_mut_slice(&mut self) -> &mut [u8] {
        self.blocks.as_mut_bytes()
    }

    /// Index of the registered buffer this is, if it came from a pool.
    pub fn pool_index(&self) -> Option<u16> {
        self.home.as_ref().map(|(_, i)| *i)
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let all: &[u8] = self.blocks.as_bytes();
        all.get(..self.len).unwrap_or(all)
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        let all: &mut [u8] = self.blocks.as_mut_bytes();
        let n = len.min(all.len());
        &mut all[..n]
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        if let Some((pool, index)) = self.home.take() {
            let blocks = std::mem::take(&mut self.blocks);
            pool.give_back(index, blocks);
        }
    }
}

/// Size classes of a pool: (buffer bytes, how many).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub classes: Vec<(usize, usize)>,
}

impl Default for PoolConfig {
    /// 256 x 4 KiB, 64 x 64 KiB, 32 x 1 MiB: about 37 MiB.
    fn default() -> Self {
        PoolConfig {
            classes: vec![(4096, 256), (64 << 10, 64), (1 << 20, 32)],
        }
    }
}

/// The free buffers of one size class: (capacity, [(index, memory)]).
type FreeClass = (usize, Vec<(u16, Vec<Block>)>);

pub(crate) struct PoolShared {
    /// Per buffer index: its class's capacity in bytes.
    sizes: Vec<usize>,
    /// Per class, smallest first.
    free: Mutex<Vec<FreeClass>>,
}

impl PoolShared {
    fn give_back(&self, index: u16, blocks: Vec<Block>) {
        let Some(&cap) = self.sizes.get(index as usize) else {
            return;
        };
        if let Ok(mut free) = self.free.lock()
            && let Some((_, list)) = free.iter_mut().find(|(c, _)| *c == cap)
        {
            list.push((index, blocks));
        }
    }
}

/// A pool of aligned buffers in size classes. The io_uring engine registers
/// every pool buffer with the kernel (fixed buffers); the other engines use
/// the pool only to avoid allocating per I/O.
pub struct BufPool {
    shared: Arc<PoolShared>,
    /// (address, length) of every buffer, by index, for registration.
    iovecs: Vec<(usize, usize)>,
}

impl BufPool {
    /// Allocate every buffer of `config` up front.
    pub fn new(config: &PoolConfig) -> BufPool {
        let mut sizes = Vec::new();
        let mut free = Vec::new();
        let mut iovecs = Vec::new();
        let mut classes = config.classes.clone();
        classes.sort_unstable();
        for (bytes, count) in classes {
            let cap = bytes.div_ceil(ALIGN).max(1) * ALIGN;
            let mut list = Vec::with_capacity(count);
            for _ in 0..count {
                if sizes.len() >= u16::MAX as usize {
                    break;
                }
                let index = sizes.len() as u16;
                let mut blocks = vec![Block([0; ALIGN]); cap / ALIGN];
                iovecs.push((blocks.as_mut_ptr() as usize, cap));
                sizes.push(cap);
                list.push((index, blocks));
            }
            free.push((cap, list));
        }
        BufPool {
            shared: Arc::new(PoolShared {
                sizes,
                free: Mutex::new(free),
            }),
            iovecs,
        }
    }

    /// A buffer of `len` bytes: the smallest free pool buffer that fits, or
    /// a fresh heap buffer when none is free.
    pub fn alloc(&self, len: usize) -> IoBuf {
        if let Ok(mut free) = self.shared.free.lock() {
            for (cap, list) in free.iter_mut() {
                if *cap >= len
                    && let Some((index, blocks)) = list.pop()
                {
                    return IoBuf {
                        blocks,
                        len,
                        home: Some((self.shared.clone(), index)),
                    };
                }
            }
        }
        IoBuf::new(len)
    }

    /// (address, length) of every pool buffer, in index order.
    pub fn iovecs(&self) -> &[(usize, usize)] {
        &self.iovecs
    }
    /// Buffers of the pool not handed out.
    #[cfg(test)]
    pub(crate) fn free_buffers(&self) -> usize {
        let free = self.shared.free.lock().unwrap_or_else(|e| e.into_inner());
        free.iter().map(|(_, list)| list.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_return_to_the_pool() {
        let pool = BufPool::new(&PoolConfig {
            classes: vec![(4096, 1), (8192, 1)],
        });
        let a = pool.alloc(100);
        assert_eq!(a.as_full_slice().as_ptr() as usize % ALIGN, 0);
        assert_eq!(a.pool_index(), Some(0));
        assert_eq!(a.len(), 100);
        let b = pool.alloc(100);
        assert_eq!(b.pool_index(), Some(1), "falls to the next class");
        let c = pool.alloc(100);
        assert_eq!(c.pool_index(), None, "pool empty: heap buffer");
        assert_eq!(c.as_full_slice().as_ptr() as usize % ALIGN, 0);
        drop(a);
        assert_eq!(pool.alloc(10).pool_index(), Some(0));
    }
}
