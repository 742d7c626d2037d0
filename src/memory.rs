//! Memory advice for the big in-RAM arrays of the indexes.
//!
//! Graph searches touch vectors and link lists at random across tens or hundreds of megabytes,
//! so with 4 KiB pages most accesses also miss the TLB (and, in a virtual machine, pay a
//! two-level page walk). Asking Linux for transparent huge pages (2 MiB) on those arrays removes
//! most of these misses. Systems whose THP mode is `madvise` (the common default) give them only
//! to memory that asks; `always` gives them anyway and `never` refuses: the advice is a hint and
//! failing it changes nothing but speed.

/// Bytes of a transparent huge page on x86-64 and most aarch64 kernels.
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB pages of `buf`'s allocation (its capacity, not only
/// its length) with huge pages. Pages already touched are merged later by the kernel; pages
/// touched after the call are huge from the start. A no-op for buffers under 2 MiB and on other
/// systems.
pub fn advise_huge_pages<T>(buf: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        let begin = buf.as_ptr() as usize;
        let end = begin + buf.capacity() * std::mem::size_of::<T>();
        let first = begin.next_multiple_of(HUGE_PAGE_BYTES);
        let last = end / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
        if last > first {
            // SAFETY: [first, last) lies inside `buf`'s allocation, which is mapped; MADV_HUGEPAGE
            // only changes how the kernel backs these pages, never their contents or validity.
            // A failure (e.g. THP disabled) is harmless and ignored.
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = buf;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The `VmFlags` line of the mapping of `/proc/self/smaps` that contains `address`.
    fn vm_flags_at(address: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((from, to)) = range.split_once('-') {
                if let (Ok(from), Ok(to)) = (
                    usize::from_str_radix(from, 16),
                    usize::from_str_radix(to, 16),
                ) {
                    inside = (from..to).contains(&address);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.to_string();
                }
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    #[test]
    fn whole_huge_pages_of_a_big_buffer_are_advised_and_its_contents_kept() {
        let mut big: Vec<u32> = (0..3 * HUGE_PAGE_BYTES as u32 / 4).collect();
        big.reserve_exact(HUGE_PAGE_BYTES);
        advise_huge_pages(&big);
        let first_whole_page = (big.as_ptr() as usize).next_multiple_of(HUGE_PAGE_BYTES);
        // Kernels built without transparent huge pages refuse the advice.
        if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            let flags = vm_flags_at(first_whole_page);
            assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
        }
        assert!(big.iter().enumerate().all(|(i, &x)| x == i as u32));
        // Small and empty buffers are left alone (and do not fail).
        advise_huge_pages(&Vec::<u8>::new());
        advise_huge_pages(&vec![7u8; 100]);
    }
}
