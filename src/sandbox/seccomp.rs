//! The seccomp filter of a job's shell: a short deny list in front of what a root job
//! without `CAP_SYS_ADMIN` could still try (Docker's default profile keeps the same out):
//! mounting, new namespaces (a user namespace would hand back every capability inside
//! it), modules, the clock, swap, reboot, kernel keyrings, BPF, `open_by_handle_at`.
//! `clone3` answers `ENOSYS`, so the C library falls back to `clone`, whose flags the
//! filter can read. Everything else is allowed.

/// True where this build knows the system call numbers.
pub const SUPPORTED: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: u32 = 0;

/// System calls a job may not make (EPERM).
fn denied() -> Vec<libc::c_long> {
    #[allow(unused_mut)]
    let mut v = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_open_by_handle_at,
        libc::SYS_bpf,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_userfaultfd,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_vhangup,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_iopl, libc::SYS_ioperm]);
    v
}

/// The `CLONE_NEW*` flags.
const NEW_NAMESPACES: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWCGROUP
    | 0x80) as u32; // CLONE_NEWTIME

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The filter program (see the module's header), made once per process: every job's
/// shell and helper installs the same one.
pub fn filter() -> &'static [libc::sock_filter] {
    static PROGRAM: std::sync::OnceLock<Vec<libc::sock_filter>> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(program)
}

fn program() -> Vec<libc::sock_filter> {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_RET, BPF_W,
        SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS,
    };
    let load = |offset| stmt(BPF_LD | BPF_W | BPF_ABS, offset);
    let ret = |v| stmt(BPF_RET | BPF_K, v);
    let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let mut f = vec![
        load(4), // seccomp_data.arch
        jump(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
        ret(SECCOMP_RET_KILL_PROCESS),
        load(0), // seccomp_data.nr
    ];
    if cfg!(target_arch = "x86_64") {
        // x32 system calls.
        f.push(jump(BPF_JMP | BPF_JGE | BPF_K, 0x4000_0000, 0, 1));
        f.push(ret(eperm));
    }
    f.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_clone3 as u32,
        0,
        1,
    ));
    f.push(ret(SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    f.push(jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        libc::SYS_clone as u32,
        0,
        4,
    ));
    f.push(load(16)); // args[0], low half: the flags
    f.push(jump(BPF_JMP | BPF_JSET | BPF_K, NEW_NAMESPACES, 0, 1));
    f.push(ret(eperm));
    f.push(ret(SECCOMP_RET_ALLOW));
    for nr in denied() {
        f.push(jump(BPF_JMP | BPF_JEQ | BPF_K, nr as u32, 0, 1));
        f.push(ret(eperm));
    }
    f.push(ret(SECCOMP_RET_ALLOW));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny interpreter of the instructions [`filter`] uses, to test the program
    /// without installing it.
    fn run(prog: &[libc::sock_filter], nr: u32, arch: u32, arg0: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            match i.code as u32 {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    acc = match i.k {
                        0 => nr,
                        4 => arch,
                        16 => arg0,
                        k => panic!("load {k}"),
                    };
                    pc += 1;
                }
                c if c == libc::BPF_RET | libc::BPF_K => return i.k,
                c => {
                    let taken = match c & 0xf0 {
                        0x10 => acc == i.k,
                        0x30 => acc >= i.k,
                        0x40 => acc & i.k != 0,
                        o => panic!("op {o:#x}"),
                    };
                    pc += 1 + if taken { i.jt } else { i.jf } as usize;
                }
            }
        }
    }

    #[test]
    fn mounts_and_new_namespaces_are_refused_the_rest_allowed() {
        let f = filter();
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        assert_eq!(run(f, libc::SYS_mount as u32, ARCH, 0), eperm);
        assert_eq!(run(f, libc::SYS_unshare as u32, ARCH, 0), eperm);
        assert_eq!(
            run(f, libc::SYS_read as u32, ARCH, 0),
            libc::SECCOMP_RET_ALLOW
        );
        // A fork is a clone without namespace flags; a new user namespace is not.
        let fork = libc::SIGCHLD as u32;
        assert_eq!(
            run(f, libc::SYS_clone as u32, ARCH, fork),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(
            run(
                f,
                libc::SYS_clone as u32,
                ARCH,
                fork | libc::CLONE_NEWUSER as u32
            ),
            eperm
        );
        assert_eq!(
            run(f, libc::SYS_clone3 as u32, ARCH, 0),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(run(f, 0, ARCH ^ 1, 0), libc::SECCOMP_RET_KILL_PROCESS);
    }
}
