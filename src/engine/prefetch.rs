//! Cache prefetch hints: one of the two places this crate uses `unsafe` (the other is
//! `kafka::fetch_queue`).
//!
//! The per-record path knows where its one random memory access will be (its dedup slot)
//! as soon as it has hashed the event id; a prefetch issued then overlaps the cache miss
//! with the key lookup that follows instead of stalling on it.

/// Asks the CPU to start loading the cache line holding `*p` into all cache levels.
#[inline(always)]
pub fn read<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults, whatever the address, and changes no
    // architectural state. `p` is a valid reference anyway. SSE is part of x86_64's
    // baseline, so the instruction exists on every CPU this code can run on.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (p as *const T).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
