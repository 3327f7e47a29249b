//! The capability sets a RUN command starts with: containers-common's default (what buildah
//! and podman give a container, 0x800405fb), in the bounding, permitted, effective and
//! inheritable sets; ambient empty. A non-root `USER` loses permitted and effective when its
//! uid is set (no SECBIT_KEEP_CAPS), as in any container.

/// CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT
/// SETFCAP (containers-common `containers.conf` `default_capabilities`).
pub(crate) const DEFAULT: [u32; 11] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 31];

/// The default set as a mask (bit N = capability N).
pub(crate) const fn default_mask() -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < DEFAULT.len() {
        mask |= 1 << DEFAULT[i];
        i += 1;
    }
    mask
}

use super::ConfineError;

const _: () = assert!(default_mask() == 0x8004_05fb);

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// CAP_SYS_CHROOT: harmless after pivot_root in a mount namespace, but in plain chroot
/// (no mount namespace) root with it leaves the chroot (`chroot(subdir)` then `..` up to
/// the real root), so that mode runs without it.
pub(crate) const SYS_CHROOT: u32 = 18;
pub(crate) const SETGID: u32 = 6;
pub(crate) const SETUID: u32 = 7;
pub(crate) const SETPCAP: u32 = 8;
pub(crate) const SYS_ADMIN: u32 = 21;
pub(crate) const MKNOD: u32 = 27;

/// The capability names `auto`'s reasons use.
pub(crate) fn name(cap: u32) -> &'static str {
    match cap {
        SETGID => "CAP_SETGID",
        SETUID => "CAP_SETUID",
        SETPCAP => "CAP_SETPCAP",
        SYS_CHROOT => "CAP_SYS_CHROOT",
        SYS_ADMIN => "CAP_SYS_ADMIN",
        MKNOD => "CAP_MKNOD",
        _ => "a capability",
    }
}

/// This process's effective capabilities (`CapEff` of `/proc/self/status`); none when it
/// cannot be read, so a caller never assumes a capability it may not have.
pub(crate) fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether this process has every capability of `caps` in its effective set.
pub(crate) fn have(caps: &[u32]) -> bool {
    let eff = effective();
    caps.iter().all(|c| eff & (1 << c) != 0)
}

/// Drops every capability outside `mask` (a subset of [`default_mask`]) from the bounding
/// set, then sets permitted, effective and inheritable to exactly `mask` and clears the
/// ambient set. Needs CAP_SETPCAP, so it runs before the switch to the step's user.
pub(crate) fn restrict_to(mask: u64) -> Result<(), ConfineError> {
    for cap in 0..64u32 {
        if mask & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            return Err(ConfineError::BoundingSet { cap, source: err });
        }
    }
    let word = |shift: u32| Data {
        effective: (mask >> shift) as u32,
        permitted: (mask >> shift) as u32,
        inheritable: (mask >> shift) as u32,
    };
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [word(0), word(32)];
    // SAFETY: capset reads one header and two data words (version 3), both live here.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    if rc < 0 {
        return Err(ConfineError::Capset(std::io::Error::last_os_error()));
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointer.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc < 0 {
        return Err(ConfineError::Ambient(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_is_read_from_the_status_text() {
        let status = "Name:\tkiln\nCapPrm:\t00000000a80425fb\nCapEff:\t00000000800405fb\n";
        assert_eq!(parse_cap_eff(status), Some(0x8004_05fb));
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff(""), None);
    }
}
