//! Micro-benchmarks of the per-request crypto: the record envelope, data-key wrapping and token
//! MACs, with the envelope's per-message key setup measured on its own.
//!
//! `cargo bench -p tresor-crypto --bench crypto`; BENCHMARKS.md has the figures.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{self, HKDF_SHA256, Salt};
use divan::{Bencher, black_box};
use tresor_crypto::{DataKey, RootKeyRing, TokenPepper, random_bytes};
use zeroize::Zeroizing;

fn main() {
    divan::main();
}

/// The shape of the associated data the service binds a record to (namespace, owner, store,
/// key, part).
const AAD: &[u8] =
    b"tresor/record\0ns:4611686018427387903\0owner:42\0secrets\0user:123/profile\0value";

const KEY_ID: u32 = 7;

fn data_key() -> DataKey {
    DataKey::from_bytes([0x42; 32])
}

/// Seal and open at one plaintext size, in a module of their own so that a filter can pick one
/// size (`record_1k`), as the callgrind runs in BENCHMARKS.md do.
macro_rules! record_benches {
    ($($module:ident: $len:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[divan::bench]
            fn seal(bencher: Bencher) {
                let key = data_key();
                let plaintext = [b'x'; $len];
                bencher.bench(|| {
                    tresor_crypto::seal(&key, KEY_ID, black_box(AAD), black_box(&plaintext))
                });
            }

            #[divan::bench]
            fn open(bencher: Bencher) {
                let key = data_key();
                let sealed = tresor_crypto::seal(&key, KEY_ID, AAD, &[b'x'; $len])
                    .expect("seal a fixed input");
                bencher.bench(|| {
                    tresor_crypto::open(&key, black_box(AAD), black_box(&sealed))
                });
            }
        }
    )*};
}

// A small secret, the load generator's 1 KiB value, a large settings blob.
record_benches!(record_64b: 64, record_1k: 1024, record_16k: 16 * 1024);

/// What a namespace key costs the first time it is used (the service caches unwrapped keys).
mod data_key_wrap {
    use super::*;

    const CONTEXT: &[u8] = b"installation:4611686018427387903";

    #[divan::bench]
    fn wrap(bencher: Bencher) {
        let ring = RootKeyRing::generate().expect("generate a root key");
        let key = data_key();
        bencher.bench(|| ring.wrap(black_box(&key), black_box(CONTEXT)));
    }

    #[divan::bench]
    fn unwrap(bencher: Bencher) {
        let ring = RootKeyRing::generate().expect("generate a root key");
        let wrapped = ring.wrap(&data_key(), CONTEXT).expect("wrap a fixed key");
        bencher.bench(|| ring.unwrap(black_box(&wrapped), black_box(CONTEXT)));
    }
}

/// HMAC-SHA-256 of a bearer token, as authentication computes it on a token-cache miss.
mod token_mac {
    use super::*;

    /// A well-formed token (`tsr_`, 16 hex, `_`, 43 base64url characters).
    const TOKEN: &str = "tsr_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[divan::bench]
    fn make(bencher: Bencher) {
        let pepper = TokenPepper::from_data_key(data_key());
        bencher.bench(|| pepper.mac(black_box(TOKEN)));
    }

    #[divan::bench]
    fn verify(bencher: Bencher) {
        let pepper = TokenPepper::from_data_key(data_key());
        let mac = pepper.mac(TOKEN);
        bencher.bench(|| pepper.verify(black_box(TOKEN), black_box(&mac)));
    }
}

/// The parts of one 1 KiB seal, rebuilt from aws-lc-rs calls the way `derived_aead.rs` makes
/// them (the crate does not export its message-key function): the random salt and nonce, the
/// per-message HKDF + AES-256 key schedule, and GCM itself under a key that is already set up.
mod seal_parts {
    use super::*;

    const INFO: &[u8] = b"tresor/record/v1";

    struct Aes256KeyLen;

    impl hkdf::KeyType for Aes256KeyLen {
        fn len(&self) -> usize {
            32
        }
    }

    /// HKDF-SHA256 extract and expand, then the AES-256 key schedule and GCM's H table.
    fn message_key(ikm: &[u8; 32], salt: &[u8; 32]) -> LessSafeKey {
        let prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
        let okm = prk
            .expand(&[INFO], Aes256KeyLen)
            .expect("32-byte HKDF output");
        let mut key = Zeroizing::new([0u8; 32]);
        okm.fill(&mut key[..]).expect("32-byte HKDF output");
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key[..]).expect("a 32-byte AES key"))
    }

    #[divan::bench]
    fn salt_and_nonce() -> ([u8; 32], [u8; 12]) {
        let salt = random_bytes().expect("system RNG");
        let nonce = random_bytes().expect("system RNG");
        (salt, nonce)
    }

    #[divan::bench]
    fn key_setup(bencher: Bencher) {
        let ikm = [0x42u8; 32];
        let salt = [0x17u8; 32];
        bencher.bench(|| message_key(black_box(&ikm), black_box(&salt)));
    }

    /// AES-256-GCM over 1 KiB with the header and AAD, the key already set up.
    #[divan::bench]
    fn gcm_1k(bencher: Bencher) {
        let key = message_key(&[0x42; 32], &[0x17; 32]);
        let aad = [&[0u8; 50][..], AAD].concat();
        bencher
            .with_inputs(|| vec![b'x'; 1024])
            .bench_local_refs(|buf| {
                let nonce = Nonce::assume_unique_for_key([9; 12]);
                key.seal_in_place_separate_tag(nonce, Aad::from(black_box(&aad)), buf)
            });
    }
}
