//! CRC32 (IEEE) of records, with the same values as `crc32fast`, faster for records of a few
//! hundred bytes on CPUs with 512-bit carry-less multiplication (AVX-512 `VPCLMULQDQ`).
//!
//! # Why not only `crc32fast`
//! `crc32fast` 1.5 hashes 256..2048 bytes with 256-bit folds and then reduces its four
//! accumulators to one in eight serial 128-bit folds; its 512-bit path starts at 2 KiB. For the
//! 284 hashed bytes of a 256-byte entry that is a long dependency chain of about 60 vector
//! operations. Measured on the 2-core AMD EPYC (Zen 4) VM of `BENCHMARKS.md`: a random point
//! read misses the caches and the TLB (about 170 ns here), and the CPU hides that latency only
//! when it can issue the next read's loads while the current record is being hashed, which it
//! cannot when the hash's operations, all waiting for the missed bytes, fill its schedulers. This
//! module loads the record in 64-byte blocks, folds all blocks to the last one at once (one
//! multiplication deep instead of a serial chain) and reduces the four 128-bit lanes together;
//! the final partial block and the 128-to-32-bit (Barrett) reduction are `crc32fast`'s method.
//! Readers hash a record's contiguous bytes ([`crc32`]). The writer hashes two records side by
//! side, copying each payload into the batch buffer from the registers it was loaded into, and
//! hashes the header from registers as a block of its own ([`crc32_after_headers_copied`]).
//!
//! Everything else (short inputs, other CPUs, compilers before Rust 1.89, which lack the
//! intrinsics: `build.rs`) goes to `crc32fast`. The two agree on every input:
//! tested below on every length up to 2 KiB and many seeds, and on unaligned starts.
//!
//! The math (reflected CRC folding, Intel's "Fast CRC Computation for Generic Polynomials Using
//! PCLMULQDQ Instruction", 2009): a 128-bit block `B` followed by `D` more bits of message
//! contributes to the CRC as `B.lo * x^(D+32) mod P` XOR `B.hi * x^(D-32) mod P` added to the
//! block `D` bits later; the constants are those powers, bit-reflected, computed by [`key`].

use std::mem::MaybeUninit;

/// Inputs from this many bytes on use the 512-bit path (when the CPU has it): it needs four
/// 64-byte blocks. Shorter inputs go to `crc32fast`.
#[cfg(all(target_arch = "x86_64", wide_crc))]
const WIDE_MIN_BYTES: usize = 256;

/// The CRC32 (IEEE) of `bytes` started from `seed`: what `crc32fast::Hasher::new_with_initial
/// (seed)` gives after `update(bytes)` and `finalize()`.
#[inline]
pub(crate) fn crc32(seed: u32, bytes: &[u8]) -> u32 {
    #[cfg(all(target_arch = "x86_64", wide_crc))]
    if bytes.len() >= WIDE_MIN_BYTES && wide::available() {
        // SAFETY: `available` checked that the CPU has every feature `wide::crc32` enables.
        return unsafe { wide::crc32(seed, bytes) };
    }
    narrow(seed, bytes)
}

/// The CRC32 of bytes 4..32 of `header` (four little-endian words: a record header without
/// its CRC field) followed by `payload`, started from `seed`: [`crc32`] of the two
/// concatenated. For writers that write the payload from where it is (large payloads); the
/// others hash and copy at once ([`crc32_after_headers_copied`]). Either way the payload is
/// hashed where it is, never as a copy just written: that would load bytes still in the
/// CPU's store buffer, in loads wider than the stores that wrote them, which wait until those
/// stores complete (measured: 34 ns per 256-byte record that way; `BENCHMARKS.md`).
#[inline]
pub(crate) fn crc32_after_header(seed: u32, header: [u64; 4], payload: &[u8]) -> u32 {
    #[cfg(all(target_arch = "x86_64", wide_crc))]
    if payload.len() + HEADER_HASHED_BYTES >= WIDE_MIN_BYTES && wide::available() {
        let [w0, w1, w2, w3] = header;
        // SAFETY: `available` checked that the CPU has every feature the function enables.
        return unsafe { wide::crc32_after_header(seed, w0, w1, w2, w3, payload, None) };
    }
    narrow_after_header(seed, header, payload)
}

/// [`crc32_after_header`] of `N` records at once, also writing every byte of each payload to
/// its copy (as long as the payload). The 512-bit path hashes the records side by side (one
/// record's CRC is a chain of dependent operations that the CPU does not overlap with the
/// next record's) and stores each block from the register the CRC loaded it into: one pass
/// over the payloads instead of a hash and a `memcpy` (measured: `BENCHMARKS.md`).
#[inline]
pub(crate) fn crc32_after_headers_copied<const N: usize>(
    seed: u32,
    header: impl Fn(usize) -> [u64; 4],
    payloads: [&[u8]; N],
    copies: [&mut [MaybeUninit<u8>]; N],
) -> [u32; N] {
    let mut copies = copies;
    let mut crcs = [0; N];
    let mut i = 0;
    #[cfg(all(target_arch = "x86_64", wide_crc))]
    if wide::available() {
        let wide = |payload: &[u8]| payload.len() + HEADER_HASHED_BYTES >= WIDE_MIN_BYTES;
        while i + 2 <= N && wide(payloads[i]) && wide(payloads[i + 1]) {
            let (a, b) = copies[i..].split_at_mut(1);
            let pair_copies = [&mut *a[0], &mut *b[0]];
            let pair_payloads = [payloads[i], payloads[i + 1]];
            let pair_header = |k| header(i + k);
            // SAFETY: `available` checked that the CPU has every feature the function enables.
            let pair = unsafe {
                wide::crc32_after_header_pair(seed, pair_header, pair_payloads, pair_copies)
            };
            crcs[i..i + 2].copy_from_slice(&pair);
            i += 2;
        }
        // The rest one by one (an odd one out, or a pair with a short payload).
        for i in i..N {
            if wide(payloads[i]) {
                let [w0, w1, w2, w3] = header(i);
                let copy = Some(&mut *copies[i]);
                // SAFETY: as above.
                crcs[i] =
                    unsafe { wide::crc32_after_header(seed, w0, w1, w2, w3, payloads[i], copy) };
            } else {
                crcs[i] = narrow_copied(seed, header(i), payloads[i], copies[i]);
            }
        }
        return crcs;
    }
    for i in i..N {
        crcs[i] = narrow_copied(seed, header(i), payloads[i], copies[i]);
    }
    crcs
}

/// `crc32fast`'s [`crc32_after_header`], with the payload copied first.
fn narrow_copied(seed: u32, header: [u64; 4], payload: &[u8], copy: &mut [MaybeUninit<u8>]) -> u32 {
    write_bytes(copy, payload);
    narrow_after_header(seed, header, payload)
}

/// `crc32fast`'s [`crc32_after_header`].
fn narrow_after_header(seed: u32, header: [u64; 4], payload: &[u8]) -> u32 {
    let mut bytes = [0u8; 32];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(header) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    narrow(narrow(seed, &bytes[32 - HEADER_HASHED_BYTES..]), payload)
}

/// Copies `from` into `to` (as long as `from`), initializing it.
pub(crate) fn write_bytes(to: &mut [MaybeUninit<u8>], from: &[u8]) {
    assert_eq!(to.len(), from.len(), "a copy has the length of its source");
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; the two slices have the same length
    // and cannot overlap (one is borrowed mutably, the other shared).
    unsafe {
        std::ptr::copy_nonoverlapping(from.as_ptr(), to.as_mut_ptr().cast::<u8>(), from.len())
    };
}

/// Bytes of a record header under its CRC (all but the CRC field itself).
const HEADER_HASHED_BYTES: usize = 28;

/// `crc32fast`'s CRC, for every input the 512-bit path does not take (and to test it against).
fn narrow(seed: u32, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(seed);
    hasher.update(bytes);
    hasher.finalize()
}

/// The CRC32 polynomial x^32 + x^26 + ... + 1, normal (not reflected) form, with its x^32 bit.
#[cfg(any(all(target_arch = "x86_64", wide_crc), test))]
const POLYNOMIAL: u64 = 0x1_04C1_1DB7;

/// The folding constant `x^n mod P`, bit-reflected over 32 bits and shifted left by one (the
/// form the reflected carry-less multiplication needs), computed at compile time.
#[cfg(any(all(target_arch = "x86_64", wide_crc), test))]
const fn key(n: u32) -> i64 {
    let mut remainder: u64 = 1;
    let mut i = 0;
    while i < n {
        remainder <<= 1;
        if remainder & (1 << 32) != 0 {
            remainder ^= POLYNOMIAL;
        }
        i += 1;
    }
    ((remainder as u32).reverse_bits() as i64) << 1
}

#[cfg(all(target_arch = "x86_64", wide_crc))]
// The AVX-512 intrinsics are stable since Rust 1.89, above the workspace's minimum version:
// `build.rs` sets `wide_crc` only on compilers that have them.
#[allow(clippy::incompatible_msrv)]
mod wide {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::key;

    /// Bytes per 512-bit block.
    const BLOCK_BYTES: usize = 64;
    /// The 32-bit words of a record header that are hashed (all but the first, the CRC).
    const HASHED_WORDS: i32 = 7;
    /// Blocks folded side by side in the main loop (and loaded before it).
    const LANES: usize = 4;
    /// Bits per byte, for fold distances.
    const BITS: u32 = 8;

    /// Whether the CPU has what [`crc32`] enables: one load once known (seven of `std`'s
    /// cached feature tests cost more instructions than a short record's CRC can spare).
    #[inline]
    pub(super) fn available() -> bool {
        use std::sync::atomic::{AtomicU8, Ordering};
        /// 0: not yet known, 1: no, 2: yes.
        static AVAILABLE: AtomicU8 = AtomicU8::new(0);
        match AVAILABLE.load(Ordering::Relaxed) {
            0 => {
                let available = detect();
                AVAILABLE.store(1 + u8::from(available), Ordering::Relaxed);
                available
            }
            known => known == 2,
        }
    }

    #[cold]
    fn detect() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vbmi")
            && is_x86_feature_detected!("vpclmulqdq")
            && is_x86_feature_detected!("pclmulqdq")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("sse4.1")
            && is_x86_feature_detected!("ssse3")
    }

    /// Bits per 64-byte block.
    const BLOCK_BITS: u32 = BLOCK_BYTES as u32 * BITS;
    /// Bits per 128-bit lane.
    const LANE_BITS: u32 = 128;

    /// The two constants that fold a 128-bit lane forward by `bits` (low half, high half).
    /// Always evaluated at compile time (`const { .. }` at the call sites): computing a key
    /// takes one loop step per bit of distance.
    const fn fold_keys(bits: u32) -> (i64, i64) {
        (key(bits + 32), key(bits - 32))
    }

    /// Loads the next 64 bytes of `rest` and advances it. Indexing `rest[..64]` first makes a
    /// miscounted length panic instead of reading out of bounds (it compiles away where the
    /// callers' loop conditions imply it).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load(rest: &mut &[u8]) -> __m512i {
        let block = &rest[..BLOCK_BYTES];
        // SAFETY: `block` is 64 readable bytes; the load needs no alignment.
        let value = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
        *rest = &rest[BLOCK_BYTES..];
        value
    }

    /// `a` folded forward by the distance of `keys` (same constants in every lane), XOR `b`.
    #[inline]
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    fn fold(a: __m512i, b: __m512i, keys: __m512i) -> __m512i {
        let low = _mm512_clmulepi64_epi128(a, keys, 0x00);
        let high = _mm512_clmulepi64_epi128(a, keys, 0x11);
        // 0x96: the three-way XOR.
        _mm512_ternarylogic_epi64(low, high, b, 0x96)
    }

    /// The same pair of constants (see [`fold_keys`]) in every 128-bit lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn broadcast((low, high): (i64, i64)) -> __m512i {
        _mm512_broadcast_i32x4(_mm_set_epi64x(high, low))
    }

    /// The CRC of `bytes` (at least [`super::WIDE_MIN_BYTES`]) started from `seed`. Callers
    /// must check [`available`] first (calling it is `unsafe` outside code with these features).
    #[target_feature(
        enable = "avx512f,avx512vl,avx512bw,avx512vbmi,vpclmulqdq,pclmulqdq,avx2,sse4.1,ssse3"
    )]
    pub(super) fn crc32(seed: u32, bytes: &[u8]) -> u32 {
        let mut rest = bytes;
        // The CRC state enters as the complement of the seed XORed into the first 4 bytes.
        let state = _mm512_castsi128_si512(_mm_cvtsi32_si128(!seed as i32));
        let first = _mm512_xor_si512(load(&mut rest), state);
        // SAFETY: this function enables the features.
        reduce(unsafe { fold_message(first, rest, None) })
    }

    /// The CRC of the header words' bytes 4..32 (28 bytes) followed by `payload` (at least
    /// `WIDE_MIN_BYTES - 28` bytes), started from `seed`, without the two being contiguous in
    /// memory. With `copy` (as long as `payload`), every byte of `payload` is written there
    /// too, from the registers the CRC loads it into. Callers must check [`available`].
    ///
    /// The words come one by one, in registers: an array would be passed through memory and
    /// read back in one wide load, which waits for the narrower stores that wrote it.
    #[target_feature(
        enable = "avx512f,avx512vl,avx512bw,avx512vbmi,vpclmulqdq,pclmulqdq,avx2,sse4.1,ssse3"
    )]
    pub(super) fn crc32_after_header(
        seed: u32,
        w0: u64,
        w1: u64,
        w2: u64,
        w3: u64,
        payload: &[u8],
        copy: Option<&mut [MaybeUninit<u8>]>,
    ) -> u32 {
        let first = header_block(seed, w0, w1, w2, w3);
        // SAFETY: this function enables the features.
        reduce(unsafe { fold_message(first, payload, copy) })
    }

    /// [`crc32_after_header`] of two records side by side, both copied: one record's CRC is a
    /// chain of dependent operations about 70 cycles long, and the CPU overlaps the chains of
    /// two records in one function, not those of records hashed one after the other (the
    /// first one's waiting operations fill its schedulers). Callers must check [`available`].
    ///
    /// The header words come from `header` (of the record's position, 0 or 1), called here so
    /// that they are computed in registers: an array of them would be passed through memory and
    /// read back in wide loads, which wait for the narrower stores that wrote it.
    #[target_feature(
        enable = "avx512f,avx512vl,avx512bw,avx512vbmi,vpclmulqdq,pclmulqdq,avx2,sse4.1,ssse3"
    )]
    pub(super) fn crc32_after_header_pair(
        seed: u32,
        header: impl Fn(usize) -> [u64; 4],
        payloads: [&[u8]; 2],
        copies: [&mut [MaybeUninit<u8>]; 2],
    ) -> [u32; 2] {
        let [a0, a1, a2, a3] = header(0);
        let [b0, b1, b2, b3] = header(1);
        let [payload_a, payload_b] = payloads;
        let [copy_a, copy_b] = copies;
        let first_a = header_block(seed, a0, a1, a2, a3);
        let first_b = header_block(seed, b0, b1, b2, b3);
        // SAFETY: this function enables the features.
        let x_a = unsafe { fold_message(first_a, payload_a, Some(copy_a)) };
        // SAFETY: as above.
        let x_b = unsafe { fold_message(first_b, payload_b, Some(copy_b)) };
        reduce_pair(lanes_to_one(x_a), lanes_to_one(x_b))
    }

    /// The CRCs of two 128-bit states: [`super::narrow_tail`] without a tail, on both at once
    /// in the two halves of a 256-bit register.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,vpclmulqdq,avx2")]
    fn reduce_pair(a: __m128i, b: __m128i) -> [u32; 2] {
        let both = |low: i64, high: i64| _mm256_broadcastsi128_si256(_mm_set_epi64x(high, low));
        let k3k4 = both(super::K3, super::K4);
        let x = _mm256_set_m128i(b, a);
        // 128 bits to 64, then to 32, then Barrett reduction to the remainder.
        let x = _mm256_xor_si256(
            _mm256_clmulepi64_epi128(x, k3k4, 0x10),
            _mm256_srli_si256::<8>(x),
        );
        let low32 = _mm256_set_epi32(0, 0, 0, !0, 0, 0, 0, !0);
        let x = _mm256_xor_si256(
            _mm256_clmulepi64_epi128(_mm256_and_si256(x, low32), both(super::K5, 0), 0x00),
            _mm256_srli_si256::<4>(x),
        );
        let pu = both(super::P_X, super::U_PRIME);
        let t1 = _mm256_clmulepi64_epi128(_mm256_and_si256(x, low32), pu, 0x10);
        let t2 = _mm256_clmulepi64_epi128(_mm256_and_si256(t1, low32), pu, 0x00);
        // Reflected: each remainder is in the upper 32 bits of the low 64 of its half.
        let r = _mm256_xor_si256(x, t2);
        [
            !(_mm256_extract_epi32::<1>(r) as u32),
            !(_mm256_extract_epi32::<5>(r) as u32),
        ]
    }

    /// The first block hashed of a record: 36 zero bytes, then the header words' bytes 4..32
    /// (the words in the upper half, their CRC field zero), with the CRC state, the complement
    /// of `seed`, XORed into the header's first 4 bytes. The zeros before the state change
    /// nothing (a CRC's register is zero until the state enters), and the payload then starts
    /// a block of its own: a payload of whole blocks needs no partial block at the end, and
    /// no register shuffles the header and the payload's first bytes together.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx2")]
    fn header_block(seed: u32, w0: u64, w1: u64, w2: u64, w3: u64) -> __m512i {
        const _: () = assert!(
            HASHED_WORDS == 7,
            "the header's hashed words are words 9..16"
        );
        let header = _mm512_inserti64x4::<1>(
            _mm512_setzero_si512(),
            // Bytes 0..4 of the header, its CRC field, are not hashed: zeros here.
            _mm256_set_epi64x(w3 as i64, w2 as i64, w1 as i64, (w0 >> 32 << 32) as i64),
        );
        // Word 9 is the header's first hashed word (word 8 is its CRC field).
        _mm512_xor_si512(header, _mm512_maskz_set1_epi32(1 << 9, !seed as i32))
    }

    /// The 64-byte state of a message of at least four blocks (its first 64 bytes `first`,
    /// the CRC state already XORed in, then `body`) folded up to its end, for [`reduce`].
    /// With `copy` (as long as `body`), every byte of `body` is also written to the same
    /// offset of `copy`, from the registers the CRC loads it into: every byte of the body is
    /// loaded in some block (the last, partial one as the body's last 64 bytes).
    ///
    /// # Safety
    /// The CPU must have the features [`available`] checks. Not a `target_feature` function,
    /// so that it can be `inline(always)`: hashing two records side by side only helps when
    /// both states stay in registers, in one function (see [`crc32_after_header_pair`]).
    #[inline(always)]
    unsafe fn fold_message(
        first: __m512i,
        body: &[u8],
        mut copy: Option<&mut [MaybeUninit<u8>]>,
    ) -> __m512i {
        // SAFETY: the caller guarantees every feature the helpers below enable.
        unsafe {
            debug_assert!(body.len() >= (LANES - 1) * BLOCK_BYTES);
            if let Some(copy) = &copy {
                assert_eq!(
                    copy.len(),
                    body.len(),
                    "a copy has the length of its source"
                );
            }
            let mut rest = body;
            // Loads the next block of `rest`, stored to the copy as well. `rest` is always a
            // suffix of `body` (the final partial block passes the body's last 64 bytes), so
            // its offset in `body`, and in the copy, is what lies before it.
            let mut next_block = |rest: &mut &[u8]| {
                debug_assert!(std::ptr::eq(
                    body[body.len() - rest.len()..].as_ptr(),
                    rest.as_ptr()
                ));
                let at = body.len() - rest.len();
                let block = load(rest);
                if let Some(copy) = copy.as_deref_mut() {
                    store(copy, at, block);
                }
                block
            };
            let mut blocks = [first; LANES];
            for block in &mut blocks[1..] {
                *block = next_block(&mut rest);
            }
            let stride = broadcast(const { fold_keys(LANES as u32 * BLOCK_BITS) });
            while rest.len() >= LANES * BLOCK_BYTES {
                for block in &mut blocks {
                    *block = fold(*block, next_block(&mut rest), stride);
                }
            }
            // Every block folded onto the last one at once: one multiplication deep.
            let mut x = fold(
                blocks[0],
                blocks[3],
                broadcast(const { fold_keys(3 * BLOCK_BITS) }),
            );
            x = fold(blocks[1], x, broadcast(const { fold_keys(2 * BLOCK_BITS) }));
            let one_block = broadcast(const { fold_keys(BLOCK_BITS) });
            x = fold(blocks[2], x, one_block);
            while rest.len() >= BLOCK_BYTES {
                x = fold(x, next_block(&mut rest), one_block);
            }
            if !rest.is_empty() {
                let n = rest.len();
                let last = next_block(&mut &body[body.len() - BLOCK_BYTES..]);
                x = partial_block(x, last, n, one_block);
            }
            x
        }
    }

    /// The CRC of a message folded to `x` by [`fold_message`].
    #[inline]
    #[target_feature(enable = "avx512f,vpclmulqdq,avx2,pclmulqdq,sse4.1,ssse3")]
    fn reduce(x: __m512i) -> u32 {
        super::narrow_tail(lanes_to_one(x), &[])
    }

    /// Stores `block` at bytes `at..at + 64` of `copy`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn store(copy: &mut [MaybeUninit<u8>], at: usize, block: __m512i) {
        let to = &mut copy[at..at + BLOCK_BYTES];
        // SAFETY: `to` is 64 writable bytes; the store needs no alignment.
        unsafe { _mm512_storeu_si512(to.as_mut_ptr().cast(), block) }
    }

    /// Folds the last `n` message bytes (1 to 63, the ones after the whole blocks folded into
    /// `x`) into `x`: `crc32fast`'s final partial block, on 64 bytes at once. The state moves
    /// down by `n` bytes; its first `n` bytes, which no longer fit, are folded forward by one
    /// block onto it; the `n` message bytes come in at the top. `last` is the message's last 64
    /// bytes (overlapping bytes already folded, masked off here), so that nothing is read
    /// outside the message.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,vpclmulqdq")]
    fn partial_block(x: __m512i, last: __m512i, n: usize, one_block: __m512i) -> __m512i {
        debug_assert!(n > 0 && n < BLOCK_BYTES);
        // Byte `j` of the result takes byte `(j + n) mod 64` of `x`.
        let sequence = _mm512_set_epi8(
            63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42,
            41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20,
            19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
        );
        let rotated =
            _mm512_permutexvar_epi8(_mm512_add_epi8(sequence, _mm512_set1_epi8(n as i8)), x);
        // The top `n` bytes: where the new message bytes and the overflow go.
        let top: __mmask64 = !(u64::MAX >> n);
        let kept = _mm512_maskz_mov_epi8(!top, rotated);
        let overflow = _mm512_maskz_mov_epi8(top, rotated);
        let message = _mm512_maskz_mov_epi8(top, last);
        fold(overflow, _mm512_xor_si512(kept, message), one_block)
    }

    /// Folds the four 128-bit lanes of `x` onto the last one, all at once, and XORs them.
    #[inline]
    #[target_feature(enable = "avx512f,vpclmulqdq,avx2")]
    fn lanes_to_one(x: __m512i) -> __m128i {
        let (k0_low, k0_high) = const { fold_keys(3 * LANE_BITS) };
        let (k1_low, k1_high) = const { fold_keys(2 * LANE_BITS) };
        let (k2_low, k2_high) = const { fold_keys(LANE_BITS) };
        // Element 0 (lowest) first in memory order; `_mm512_set_epi64` takes the highest first.
        let keys = _mm512_set_epi64(0, 0, k2_high, k2_low, k1_high, k1_low, k0_high, k0_low);
        let low = _mm512_clmulepi64_epi128(x, keys, 0x00);
        let high = _mm512_clmulepi64_epi128(x, keys, 0x11);
        let folded = _mm512_xor_si512(low, high);
        // The last lane is where the others were folded to: it goes in unchanged.
        let folded = _mm512_mask_mov_epi64(folded, 0b1100_0000, x);
        let half = _mm256_xor_si256(
            _mm512_castsi512_si256(folded),
            _mm512_extracti64x4_epi64::<1>(folded),
        );
        _mm_xor_si128(
            _mm256_castsi256_si128(half),
            _mm256_extracti128_si256::<1>(half),
        )
    }
}

#[cfg(all(target_arch = "x86_64", wide_crc))]
use std::arch::x86_64::*;

/// `x^64 mod P`, folding 64 bits down to 32.
#[cfg(all(target_arch = "x86_64", wide_crc))]
const K5: i64 = key(64);
/// The polynomial (reflected, 33 bits) and `x^64 / P` (reflected), for Barrett reduction.
#[cfg(all(target_arch = "x86_64", wide_crc))]
const P_X: i64 = 0x1_DB71_0641;
#[cfg(all(target_arch = "x86_64", wide_crc))]
const U_PRIME: i64 = 0x1_F701_1641;
/// Folding by 128 bits: `x^(128-32)` and `x^(128+32)`.
#[cfg(all(target_arch = "x86_64", wide_crc))]
const K3: i64 = key(160);
#[cfg(all(target_arch = "x86_64", wide_crc))]
const K4: i64 = key(96);

/// Folds the bytes of `rest` (fewer than 64) into the 128-bit state `x` and reduces it to the
/// CRC: `crc32fast`'s `reduce_128_to_crc` (whole 16-byte blocks, then a partial block shifted
/// into place with byte shuffles, then Barrett reduction).
#[cfg(all(target_arch = "x86_64", wide_crc))]
#[inline]
#[target_feature(enable = "pclmulqdq,sse4.1,ssse3")]
fn narrow_tail(mut x: __m128i, mut rest: &[u8]) -> u32 {
    let k3k4 = _mm_set_epi64x(K4, K3);
    while rest.len() >= 16 {
        // SAFETY: `rest[..16]` is 16 readable bytes; the load needs no alignment.
        let block = unsafe { _mm_loadu_si128(rest[..16].as_ptr().cast()) };
        x = fold128(x, block, k3k4);
        rest = &rest[16..];
    }
    let n = rest.len();
    if n > 0 {
        // Shift the state left by `16 - n` bytes: what overflows is folded over the state's
        // remaining bytes followed by the `n` message bytes.
        let sequence = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let shift_left = _mm_add_epi8(sequence, _mm_set1_epi8(n as i8 - 16));
        let shift_right = _mm_xor_si128(shift_left, _mm_set1_epi8(-128));
        let overflow = _mm_shuffle_epi8(x, shift_left);
        x = _mm_shuffle_epi8(x, shift_right);
        let (low, high) = partial_words(rest);
        let part = _mm_set_epi64x(high as i64, low as i64);
        x = _mm_xor_si128(x, _mm_shuffle_epi8(part, shift_left));
        x = fold128(overflow, x, k3k4);
    }
    // 128 bits to 64, then to 32, then Barrett reduction to the remainder.
    let x = _mm_xor_si128(_mm_clmulepi64_si128(x, k3k4, 0x10), _mm_srli_si128(x, 8));
    let low32 = _mm_set_epi32(0, 0, 0, !0);
    let x = _mm_xor_si128(
        _mm_clmulepi64_si128(_mm_and_si128(x, low32), _mm_set_epi64x(0, K5), 0x00),
        _mm_srli_si128(x, 4),
    );
    let pu = _mm_set_epi64x(U_PRIME, P_X);
    let t1 = _mm_clmulepi64_si128(_mm_and_si128(x, low32), pu, 0x10);
    let t2 = _mm_clmulepi64_si128(_mm_and_si128(t1, low32), pu, 0x00);
    // Reflected: the remainder is in the upper 32 bits of the low 64.
    !(_mm_extract_epi32::<1>(_mm_xor_si128(x, t2)) as u32)
}

/// `a` folded forward by 128 bits, XOR `b`.
#[cfg(all(target_arch = "x86_64", wide_crc))]
#[inline]
#[target_feature(enable = "pclmulqdq,sse2")]
fn fold128(a: __m128i, b: __m128i, keys: __m128i) -> __m128i {
    let low = _mm_clmulepi64_si128(a, keys, 0x00);
    let high = _mm_clmulepi64_si128(a, keys, 0x11);
    _mm_xor_si128(_mm_xor_si128(b, low), high)
}

/// A final partial block of 1..=15 bytes as two zero-padded little-endian words, read with
/// overlapping loads (as `crc32fast` does).
#[cfg(all(target_arch = "x86_64", wide_crc))]
fn partial_words(data: &[u8]) -> (u64, u64) {
    let n = data.len();
    debug_assert!(n > 0 && n < 16);
    let value: u128 = if n >= 8 {
        let low = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let high = u64::from_le_bytes(data[n - 8..].try_into().expect("8 bytes"));
        low as u128 | (high as u128) << (8 * (n - 8))
    } else if n >= 4 {
        let low = u32::from_le_bytes(data[..4].try_into().expect("4 bytes"));
        let high = u32::from_le_bytes(data[n - 4..].try_into().expect("4 bytes"));
        low as u128 | (high as u128) << (8 * (n - 4))
    } else {
        data[0] as u128
            | (data[n / 2] as u128) << (8 * (n / 2))
            | (data[n - 1] as u128) << (8 * (n - 1))
    };
    (value as u64, (value >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, RngCore, SeedableRng};

    use super::*;

    #[test]
    fn keys_match_crc32fasts_constants() {
        // crc32fast's K1..K5 (folds by 512 and 128 bits, and 64 to 32 bits).
        assert_eq!(key(544), 0x1_5444_2bd4);
        assert_eq!(key(480), 0x1_c6e4_1596);
        assert_eq!(key(160), 0x1_7519_97d0);
        assert_eq!(key(96), 0x0_ccaa_009e);
        assert_eq!(key(64), 0x1_63cd_6124);
    }

    #[test]
    fn agrees_with_crc32fast_on_every_length_seed_and_alignment() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut data = vec![0u8; 2200];
        rng.fill_bytes(&mut data);
        for len in 0..2100 {
            for start in [0, 1, 4, 7] {
                let seed = rng.gen::<u32>();
                let bytes = &data[start..start + len];
                assert_eq!(
                    crc32(seed, bytes),
                    narrow(seed, bytes),
                    "length {len}, start {start}"
                );
            }
        }
    }

    #[test]
    fn header_then_payload_agrees_with_the_concatenation() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut payload = vec![0u8; 1200];
        rng.fill_bytes(&mut payload);
        for len in 0..1100 {
            let header: [u64; 4] = [rng.gen(), rng.gen(), rng.gen(), rng.gen()];
            let mut message: Vec<u8> = header.iter().flat_map(|w| w.to_le_bytes()).collect();
            message.extend_from_slice(&payload[..len]);
            let seed = rng.gen::<u32>();
            assert_eq!(
                crc32_after_header(seed, header, &payload[..len]),
                narrow(seed, &message[4..]),
                "payload length {len}"
            );
        }
    }

    /// Hashes records side by side with copies into buffers full of garbage (two patterns,
    /// so that a byte the copy misses cannot hide behind a payload byte equal to the garbage).
    fn hash_copied<const N: usize>(seed: u32, headers: [[u64; 4]; N], payloads: [&[u8]; N]) {
        for garbage in [0x00, 0xFF] {
            hash_copied_over(garbage, seed, headers, payloads);
        }
    }

    fn hash_copied_over<const N: usize>(
        garbage: u8,
        seed: u32,
        headers: [[u64; 4]; N],
        payloads: [&[u8]; N],
    ) {
        let mut buffers = payloads.map(|payload| vec![MaybeUninit::new(garbage); payload.len()]);
        let copies: [&mut [MaybeUninit<u8>]; N] = {
            let mut rest = &mut buffers[..];
            std::array::from_fn(|_| {
                let (first, after) = std::mem::take(&mut rest).split_at_mut(1);
                rest = after;
                &mut first[0][..]
            })
        };
        let crcs = crc32_after_headers_copied(seed, |i| headers[i], payloads, copies);
        for i in 0..N {
            let lengths: Vec<usize> = payloads.iter().map(|p| p.len()).collect();
            assert_eq!(
                crcs[i],
                narrow_after_header(seed, headers[i], payloads[i]),
                "record {i} of lengths {lengths:?}"
            );
            // SAFETY: every byte was initialized (to the garbage pattern, at least).
            let copied: Vec<u8> = buffers[i]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            assert!(
                copied == payloads[i],
                "copy of record {i} of lengths {lengths:?}"
            );
        }
    }

    #[test]
    fn records_hashed_side_by_side_agree_and_are_copied_exactly() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut data = vec![0u8; 2300];
        rng.fill_bytes(&mut data);
        for len in 0..1100 {
            let header: [u64; 4] = [rng.gen(), rng.gen(), rng.gen(), rng.gen()];
            let other: [u64; 4] = [rng.gen(), rng.gen(), rng.gen(), rng.gen()];
            let seed = rng.gen::<u32>();
            // Unaligned starts, and lengths that sum to 1099.
            let (start_a, start_b) = (rng.gen_range(0..8), 1100 + rng.gen_range(0..8));
            let a = &data[start_a..start_a + len];
            let b = &data[start_b..start_b + 1099 - len];
            hash_copied(seed, [header], [a]);
            // A long payload beside a short one, in both orders.
            hash_copied(seed, [header, other], [a, &b[..len.min(b.len()) % 300]]);
            hash_copied(seed, [other, header], [&b[..len.min(b.len()) % 300], a]);
            // Pairs of every mix of lengths: both wide, both narrow, one of each.
            hash_copied(seed, [header, other], [a, b]);
            hash_copied(seed, [other, header, other], [b, a, a]);
        }
    }

    #[test]
    fn long_records_side_by_side_agree_and_are_copied_exactly() {
        // Many rounds of the main loop, every residue of the 64-byte blocks, pairs of very
        // different lengths.
        let mut rng = SmallRng::seed_from_u64(9);
        let mut data = vec![0u8; 300_000];
        rng.fill_bytes(&mut data);
        let lengths: Vec<usize> = [228, 484, 4096, 100_000, 250_000]
            .into_iter()
            .flat_map(|base| (0..70).map(move |d| base + d))
            .collect();
        for (j, &len_a) in lengths.iter().enumerate() {
            let len_b = lengths[(j * 7 + 13) % lengths.len()].min(250_000);
            let (start_a, start_b) = (rng.gen_range(0..64), 40_000 + rng.gen_range(0..64));
            let a = &data[start_a..start_a + len_a];
            let b = &data[start_b..start_b + len_b];
            let headers: [[u64; 4]; 2] = std::array::from_fn(|_| rng.gen());
            hash_copied(rng.gen(), headers, [a, b]);
        }
    }

    #[test]
    fn agrees_with_crc32fast_on_structured_inputs() {
        // All zeros and all ones stress the seed handling and the reduction.
        for fill in [0u8, 0xff] {
            for len in [256, 284, 300, 319, 320, 511, 512, 513, 4124] {
                let bytes = vec![fill; len];
                for seed in [0, 1, u32::MAX, 0x8000_0000] {
                    assert_eq!(
                        crc32(seed, &bytes),
                        narrow(seed, &bytes),
                        "fill {fill} length {len}"
                    );
                }
            }
        }
    }
}
