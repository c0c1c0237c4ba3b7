//! Key pages locked in memory (`mlock`), so the long-lived keys (the root key ring, the token
//! pepper, the system key) are never written to swap.
//!
//! A locked key lives alone at the start of a page-aligned, page-sized heap allocation
//! ([`KeyPage`]), so locking it locks exactly that page and nothing else of the heap (on a
//! system whose pages are larger than 4 KiB, the page that holds it). The allocation is owned by
//! the key and never moves while it is locked; dropping the key zeroizes the bytes, then unlocks
//! the page, then frees it.

use zeroize::Zeroize;

use crate::data_key::KEY_LEN;

/// The page size the allocation is aligned to.
const PAGE: usize = 4096;

/// One page holding one key (the rest is zero).
#[repr(C, align(4096))]
pub(crate) struct KeyPage {
    pub(crate) key: [u8; KEY_LEN],
    _rest: [u8; PAGE - KEY_LEN],
}

/// A key in a page of its own, locked in memory when the system allowed it.
pub(crate) struct LockedKey {
    page: Box<KeyPage>,
    locked: bool,
}

impl LockedKey {
    /// Copies `key` into a new page and locks it; the page is kept (unlocked) when the system
    /// refuses, and the error says why.
    pub(crate) fn new(key: &[u8; KEY_LEN]) -> (LockedKey, std::io::Result<()>) {
        let mut page = Box::new(KeyPage {
            key: [0u8; KEY_LEN],
            _rest: [0u8; PAGE - KEY_LEN],
        });
        page.key.copy_from_slice(key);
        let result = lock_page(&page, true);
        let locked = result.is_ok();
        (LockedKey { page, locked }, result)
    }

    pub(crate) fn key(&self) -> &[u8; KEY_LEN] {
        &self.page.key
    }

    pub(crate) fn is_locked(&self) -> bool {
        self.locked
    }
}

impl Drop for LockedKey {
    fn drop(&mut self) {
        self.page.key.zeroize();
        if self.locked {
            // Nothing to do about a failure here: the page is freed next either way.
            let _ = lock_page(&self.page, false);
        }
    }
}

/// `mlock` (or `munlock`) the one page of `page`.
fn lock_page(page: &KeyPage, lock: bool) -> std::io::Result<()> {
    let ptr = std::ptr::from_ref(page)
        .cast_mut()
        .cast::<core::ffi::c_void>();
    // SAFETY: `ptr` and `size_of::<KeyPage>()` (one page, 4096-aligned by `repr(align)`) describe
    // exactly the live allocation behind `page`, a `Box<KeyPage>` that the calling `LockedKey`
    // owns: it is valid for the whole call, and mlock/munlock neither read nor write it (they
    // change the page's residency only). The lock stays attached to that page until
    // `LockedKey::drop` unlocks it, before the `Box` is freed, and the box never moves in
    // between (a `Box`'s heap address is stable however the `LockedKey` itself moves).
    let result = unsafe {
        if lock {
            rustix::mm::mlock(ptr, std::mem::size_of::<KeyPage>())
        } else {
            rustix::mm::munlock(ptr, std::mem::size_of::<KeyPage>())
        }
    };
    result.map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_page_is_one_aligned_page() {
        assert_eq!(std::mem::size_of::<KeyPage>(), PAGE);
        assert_eq!(std::mem::align_of::<KeyPage>(), PAGE);
        let (k, _) = LockedKey::new(&[7u8; KEY_LEN]);
        assert_eq!(std::ptr::from_ref(&*k.page).addr() % PAGE, 0);
        assert_eq!(k.key(), &[7u8; KEY_LEN]);
    }
}
