//! The seccomp filter of a RUN command: the effect of Docker's default profile
//! (moby `profiles/seccomp/default.json`, Docker 25–27, the profile containers-common ships
//! too) for a container with the default capabilities (no CAP_SYS_ADMIN, SYS_MODULE,
//! SYS_BOOT, SYS_TIME, SYS_PTRACE…) on a kernel >= 4.8.
//!
//! Docker's profile is an allow-list; this is the equivalent deny-list over it: every other
//! syscall is allowed, these return EPERM (clone3 returns ENOSYS so libcs fall back to
//! clone, where namespace flags are checked). As Docker does on kernels >= 4.8, ptrace and
//! process_vm_readv/writev are allowed (the kernel's own ptrace checks apply). A syscall from
//! another ABI than the build's (i386 on x86_64, arm32 on aarch64) kills the process;
//! x32 (x86_64 numbers with bit 30 set) returns EPERM. Unlike Docker's allow-list, a
//! syscall newer than this list is allowed.

use std::collections::BTreeMap;

use super::ConfineError;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Syscalls refused outright (EPERM), on every architecture kiln builds for.
const DENIED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_fanotify_init,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    libc::SYS_perf_event_open,
    libc::SYS_pidfd_getfd,
    libc::SYS_pivot_root,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_setdomainname,
    libc::SYS_sethostname,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
];

/// The x86_64-only ones (aarch64 never had them). create_module, get_kernel_syms and
/// query_module are gone from the kernel (ENOSYS).
#[cfg(target_arch = "x86_64")]
const DENIED_ARCH: &[i64] = &[
    libc::SYS_ioperm,
    libc::SYS_iopl,
    libc::SYS_nfsservctl,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
    libc::SYS_uselib,
    libc::SYS_ustat,
];
#[cfg(not(target_arch = "x86_64"))]
const DENIED_ARCH: &[i64] = &[];

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (Docker's 0x7E020000).
const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// personality(2) values Docker allows: PER_LINUX, PER_LINUX32, UNAME26 variants, query.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// AF_VSOCK: the one socket family Docker refuses.
const AF_VSOCK: u64 = 40;

/// The filters to install, in order (seccomp runs them all; the strictest answer wins).
pub(crate) struct Filters(Vec<BpfProgram>);

impl Filters {
    /// Compiles the filters for this build's architecture (before fork: the command's
    /// process only installs them).
    pub(crate) fn compile() -> Result<Filters, ConfineError> {
        let arch = target_arch()?;
        let eperm = SeccompAction::Errno(libc::EPERM as u32);
        let enosys = SeccompAction::Errno(libc::ENOSYS as u32);
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED
            .iter()
            .chain(DENIED_ARCH)
            .map(|&nr| (nr, Vec::new()))
            .collect();
        rules.insert(libc::SYS_clone, clone_rules()?);
        rules.insert(libc::SYS_personality, vec![personality_rule()?]);
        rules.insert(
            libc::SYS_socket,
            vec![rule(vec![cond(0, SeccompCmpOp::Eq, AF_VSOCK)?])?],
        );
        let main = SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch)
            .map_err(ConfineError::Compile)?;
        let clone3 = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            enosys,
            arch,
        )
        .map_err(ConfineError::Compile)?;
        let mut programs = vec![
            main.try_into().map_err(ConfineError::Compile)?,
            clone3.try_into().map_err(ConfineError::Compile)?,
        ];
        programs.extend(x32_filter());
        Ok(Filters(programs))
    }

    /// Installs the filters in the calling process (no_new_privs is set first by
    /// seccompiler). Nothing but execve may follow.
    pub(crate) fn apply(&self) -> Result<(), ConfineError> {
        for program in &self.0 {
            seccompiler::apply_filter(program).map_err(ConfineError::Install)?;
        }
        Ok(())
    }
}

fn target_arch() -> Result<TargetArch, ConfineError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| ConfineError::Arch(std::env::consts::ARCH))
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, ConfineError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(ConfineError::Compile)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, ConfineError> {
    SeccompRule::new(conditions).map_err(ConfineError::Compile)
}

/// clone with any namespace flag (the flags are argument 0 on x86_64 and aarch64).
fn clone_rules() -> Result<Vec<SeccompRule>, ConfineError> {
    NAMESPACE_FLAGS
        .iter()
        .map(|&flag| rule(vec![cond(0, SeccompCmpOp::MaskedEq(flag), flag)?]))
        .collect()
}

/// personality with any value Docker does not list.
fn personality_rule() -> Result<SeccompRule, ConfineError> {
    let conds = PERSONALITIES
        .iter()
        .map(|&p| cond(0, SeccompCmpOp::Ne, p))
        .collect::<Result<Vec<_>, _>>()?;
    rule(conds)
}

/// x32 syscalls (x86_64's audit arch, numbers with `__X32_SYSCALL_BIT`) get EPERM: the
/// main filter matches numbers exactly and would let the x32 `mount` through.
#[cfg(target_arch = "x86_64")]
fn x32_filter() -> Option<BpfProgram> {
    use seccompiler::sock_filter;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    Some(vec![
        op(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        op(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        op(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        op(JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ])
}

#[cfg(not(target_arch = "x86_64"))]
fn x32_filter() -> Option<BpfProgram> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filters_compile_for_this_architecture() {
        let filters = super::Filters::compile().unwrap();
        assert!(filters.0.len() >= 2);
        assert!(filters.0.iter().all(|p| !p.is_empty()));
    }
}
