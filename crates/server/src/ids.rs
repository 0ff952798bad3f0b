//! Random identifiers: `urn:uuid:` and a version 4 UUID, for updates published without an id and
//! for subscribers.
//!
//! The 122 random bits come from the operating system's CSPRNG, as `Uuid::new_v4` takes them, but
//! each thread reads [`POOL_BYTES`] at a time instead of making one `getrandom` system call per
//! identifier: publishing at thousands of updates per second otherwise pays a system call per
//! update for its id. Every byte is used once. Should the pool ever fail to fill (the system's
//! generator unavailable), the identifier falls back to `Uuid::new_v4`.

use std::cell::RefCell;

use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes each thread reads at once: 256 identifiers.
const POOL_BYTES: usize = 4096;

/// One thread's unused random bytes.
struct Pool {
    bytes: Box<[u8; POOL_BYTES]>,
    /// The first unused byte; [`POOL_BYTES`] when empty.
    next: usize,
}

impl Pool {
    /// Sixteen unused random bytes, refilling from the system first when needed.
    fn take(&mut self) -> Option<[u8; 16]> {
        if self.next + 16 > POOL_BYTES {
            SystemRandom::new().fill(&mut self.bytes[..]).ok()?;
            self.next = 0;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.bytes[self.next..self.next + 16]);
        // Used bytes are wiped so they cannot surface again (say, in a core dump's pool).
        self.bytes[self.next..self.next + 16].fill(0);
        self.next += 16;
        Some(out)
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool {
        bytes: Box::new([0; POOL_BYTES]),
        next: POOL_BYTES,
    });
}

/// A new `urn:uuid:…` identifier (random, version 4).
pub fn random_urn() -> String {
    let uuid = POOL
        .try_with(|pool| pool.borrow_mut().take())
        .ok()
        .flatten()
        .map_or_else(uuid::Uuid::new_v4, |bytes| {
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        });
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let mut urn = String::with_capacity("urn:uuid:".len() + text.len());
    urn.push_str("urn:uuid:");
    urn.push_str(uuid.hyphenated().encode_lower(&mut text));
    urn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_version_4_uuids_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        // More than one pool's worth, so the refill is crossed.
        for _ in 0..1000 {
            let urn = random_urn();
            let uuid = urn.strip_prefix("urn:uuid:").expect("the urn prefix");
            let parsed = uuid::Uuid::parse_str(uuid).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 4, "{urn}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(uuid, uuid.to_ascii_lowercase());
            assert!(seen.insert(urn), "identifiers repeat");
        }
    }
}
