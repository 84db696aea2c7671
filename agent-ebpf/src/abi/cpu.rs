//! What differs between the CPUs the agent runs on: syscall numbers, and where
//! the `struct pt_regs` that the raw `sys_enter`/`sys_exit` tracepoints hand
//! over keeps a syscall's arguments and number.
//!
//! Both CPUs' tables compile in every build, so their tests run on any host;
//! the re-exported ones are those of the CPU the build is for (`abi_arch`,
//! set by `build.rs`): for the kernel programs the `bpf_target_arch` that
//! aya-build derives from the agent's own target, for the agent its target.

use super::programs::{enter, exit, net_programs, NetNumbers, SyscallProgram};

/// Byte offsets in `struct pt_regs` of a syscall's arguments and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallRegs {
    /// Arguments 0..6 as the syscall sees them at its entry (arm64 puts the
    /// result in x0 before `sys_exit`: handlers read arguments at entry only).
    pub args: [u32; 6],
    /// The syscall number, read as a `u32`; still there at exit.
    pub nr: u32,
    /// Arguments 0..3 lie in three consecutive `u64`s from here (one read
    /// instead of three: every helper call costs)…
    pub args3_at: u32,
    /// …highest argument first (x86_64: dx, si, di).
    pub args3_reversed: bool,
}

impl SyscallRegs {
    /// Whether [`SyscallRegs::args3_at`] really holds arguments 0..3.
    pub const fn args3_consistent(&self) -> bool {
        let mut i = 0;
        while i < 3 {
            let slot = if self.args3_reversed { 2 - i } else { i };
            if self.args[i] != self.args3_at + 8 * slot as u32 {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// x86_64.
pub mod x86_64 {
    use super::*;

    /// `arch/x86/entry/syscalls/syscall_64.tbl`.
    pub mod nr {
        pub const READ: u32 = 0;
        pub const WRITE: u32 = 1;
        pub const CLOSE: u32 = 3;
        pub const READV: u32 = 19;
        pub const WRITEV: u32 = 20;
        pub const SOCKET: u32 = 41;
        pub const CONNECT: u32 = 42;
        pub const ACCEPT: u32 = 43;
        pub const SENDTO: u32 = 44;
        pub const RECVFROM: u32 = 45;
        pub const SENDMSG: u32 = 46;
        pub const RECVMSG: u32 = 47;
        pub const GETSOCKOPT: u32 = 55;
        pub const RENAME: u32 = 82;
        pub const UNLINK: u32 = 87;
        pub const OPENAT: u32 = 257;
        pub const UNLINKAT: u32 = 263;
        pub const RENAMEAT: u32 = 264;
        pub const ACCEPT4: u32 = 288;
        pub const RENAMEAT2: u32 = 316;
        pub const OPENAT2: u32 = 437;
    }

    pub const NET_PROGRAMS: [SyscallProgram; 27] = net_programs(&NetNumbers {
        read: nr::READ,
        write: nr::WRITE,
        close: nr::CLOSE,
        readv: nr::READV,
        writev: nr::WRITEV,
        socket: nr::SOCKET,
        connect: nr::CONNECT,
        accept: nr::ACCEPT,
        accept4: nr::ACCEPT4,
        sendto: nr::SENDTO,
        recvfrom: nr::RECVFROM,
        sendmsg: nr::SENDMSG,
        recvmsg: nr::RECVMSG,
        getsockopt: nr::GETSOCKOPT,
    });

    /// File handlers (`probes/fs.rs`).
    pub const FS_PROGRAMS: [SyscallProgram; 14] = [
        enter("sys_enter_openat", nr::OPENAT),
        exit("sys_exit_openat", nr::OPENAT),
        enter("sys_enter_openat2", nr::OPENAT2),
        exit("sys_exit_openat2", nr::OPENAT2),
        enter("sys_enter_rename", nr::RENAME),
        exit("sys_exit_rename", nr::RENAME),
        enter("sys_enter_renameat", nr::RENAMEAT),
        exit("sys_exit_renameat", nr::RENAMEAT),
        enter("sys_enter_renameat2", nr::RENAMEAT2),
        exit("sys_exit_renameat2", nr::RENAMEAT2),
        enter("sys_enter_unlink", nr::UNLINK),
        exit("sys_exit_unlink", nr::UNLINK),
        enter("sys_enter_unlinkat", nr::UNLINKAT),
        exit("sys_exit_unlinkat", nr::UNLINKAT),
    ];

    /// `arch/x86/include/asm/ptrace.h`: the arguments in rdi, rsi, rdx, r10,
    /// r8, r9; the number in `orig_ax` (its low half).
    pub const SYSCALL_REGS: SyscallRegs =
        SyscallRegs { args: [112, 104, 96, 56, 72, 64], nr: 120, args3_at: 96, args3_reversed: true };
    const _: () = assert!(SYSCALL_REGS.args3_consistent());
}

/// arm64 (aarch64).
pub mod aarch64 {
    use super::*;

    /// `include/uapi/asm-generic/unistd.h`. arm64 has only the `*at` file
    /// calls (no `open`, `rename`, `unlink`): libc's `rename()` is `renameat`.
    pub mod nr {
        pub const UNLINKAT: u32 = 35;
        pub const RENAMEAT: u32 = 38;
        pub const OPENAT: u32 = 56;
        pub const CLOSE: u32 = 57;
        pub const READ: u32 = 63;
        pub const WRITE: u32 = 64;
        pub const READV: u32 = 65;
        pub const WRITEV: u32 = 66;
        pub const SOCKET: u32 = 198;
        pub const ACCEPT: u32 = 202;
        pub const CONNECT: u32 = 203;
        pub const SENDTO: u32 = 206;
        pub const RECVFROM: u32 = 207;
        pub const GETSOCKOPT: u32 = 209;
        pub const SENDMSG: u32 = 211;
        pub const RECVMSG: u32 = 212;
        pub const ACCEPT4: u32 = 242;
        pub const RENAMEAT2: u32 = 276;
        pub const OPENAT2: u32 = 437;
    }

    pub const NET_PROGRAMS: [SyscallProgram; 27] = net_programs(&NetNumbers {
        read: nr::READ,
        write: nr::WRITE,
        close: nr::CLOSE,
        readv: nr::READV,
        writev: nr::WRITEV,
        socket: nr::SOCKET,
        connect: nr::CONNECT,
        accept: nr::ACCEPT,
        accept4: nr::ACCEPT4,
        sendto: nr::SENDTO,
        recvfrom: nr::RECVFROM,
        sendmsg: nr::SENDMSG,
        recvmsg: nr::RECVMSG,
        getsockopt: nr::GETSOCKOPT,
    });

    /// File handlers (`probes/fs.rs`; the `rename`/`unlink` ones are not
    /// built for arm64).
    pub const FS_PROGRAMS: [SyscallProgram; 10] = [
        enter("sys_enter_openat", nr::OPENAT),
        exit("sys_exit_openat", nr::OPENAT),
        enter("sys_enter_openat2", nr::OPENAT2),
        exit("sys_exit_openat2", nr::OPENAT2),
        enter("sys_enter_renameat", nr::RENAMEAT),
        exit("sys_exit_renameat", nr::RENAMEAT),
        enter("sys_enter_renameat2", nr::RENAMEAT2),
        exit("sys_exit_renameat2", nr::RENAMEAT2),
        enter("sys_enter_unlinkat", nr::UNLINKAT),
        exit("sys_exit_unlinkat", nr::UNLINKAT),
    ];

    /// `arch/arm64/include/asm/ptrace.h`: the arguments in `regs[0..6]`
    /// (x0–x5), the number in `s32 syscallno` after `orig_x0`.
    pub const SYSCALL_REGS: SyscallRegs =
        SyscallRegs { args: [0, 8, 16, 24, 32, 40], nr: 280, args3_at: 0, args3_reversed: false };
    const _: () = assert!(SYSCALL_REGS.args3_consistent());
}

#[cfg(abi_arch = "x86_64")]
pub use x86_64::{nr, FS_PROGRAMS, NET_PROGRAMS, SYSCALL_REGS};

#[cfg(abi_arch = "aarch64")]
pub use aarch64::{nr, FS_PROGRAMS, NET_PROGRAMS, SYSCALL_REGS};

/// The CPU this build's ABI is for, as Rust names it.
#[cfg(abi_arch = "x86_64")]
pub const ARCH: &str = "x86_64";
#[cfg(abi_arch = "aarch64")]
pub const ARCH: &str = "aarch64";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::SYSCALL_SLOTS;

    fn check_table(all: &[SyscallProgram]) {
        for (i, a) in all.iter().enumerate() {
            assert!(a.nr < SYSCALL_SLOTS, "{a:?}");
            assert_eq!(a.program.starts_with("sys_exit_"), a.exit, "{a:?}");
            for b in &all[i + 1..] {
                assert!(!(a.nr == b.nr && a.exit == b.exit), "{a:?} and {b:?} share a slot");
                assert_ne!(a.program, b.program);
            }
        }
    }

    #[test]
    fn every_handler_has_a_slot_and_a_unique_place_on_both_cpus() {
        check_table(&[&x86_64::NET_PROGRAMS[..], &x86_64::FS_PROGRAMS[..]].concat());
        check_table(&[&aarch64::NET_PROGRAMS[..], &aarch64::FS_PROGRAMS[..]].concat());
    }

    #[test]
    fn both_cpus_have_the_same_socket_handlers_and_arm64_only_the_at_file_calls() {
        let names = |t: &[SyscallProgram]| t.iter().map(|p| (p.program, p.exit)).collect::<Vec<_>>();
        assert_eq!(names(&x86_64::NET_PROGRAMS), names(&aarch64::NET_PROGRAMS));
        let arm: Vec<_> = names(&aarch64::FS_PROGRAMS);
        let x86_at: Vec<_> = names(&x86_64::FS_PROGRAMS)
            .into_iter()
            .filter(|(p, _)| !p.ends_with("_rename") && !p.ends_with("_unlink"))
            .collect();
        assert_eq!(arm, x86_at);
    }

    #[test]
    fn three_arguments_in_one_read_are_arguments_0_to_2() {
        for regs in [x86_64::SYSCALL_REGS, aarch64::SYSCALL_REGS] {
            assert!(regs.args3_consistent(), "{regs:?}");
            // Offsets inside pt_regs, u64-aligned, none twice.
            for (i, a) in regs.args.iter().enumerate() {
                assert_eq!(a % 8, 0);
                assert!(!regs.args[i + 1..].contains(a));
                assert_ne!(*a, regs.nr);
            }
        }
        let broken = SyscallRegs { args3_reversed: false, ..x86_64::SYSCALL_REGS };
        assert!(!broken.args3_consistent());
    }

    /// The numbers of the CPU under test, against the C library's (the libc
    /// crate's, written from the kernel headers independently): on x86_64
    /// hosts, and on arm64 in the arm64 VM (`cargo xtask vm --arch arm64`).
    #[test]
    fn this_cpus_numbers_are_the_c_librarys() {
        let libc_nr = |n: libc::c_long| n as u32;
        let want = [
            (nr::READ, libc_nr(libc::SYS_read)),
            (nr::WRITE, libc_nr(libc::SYS_write)),
            (nr::CLOSE, libc_nr(libc::SYS_close)),
            (nr::READV, libc_nr(libc::SYS_readv)),
            (nr::WRITEV, libc_nr(libc::SYS_writev)),
            (nr::SOCKET, libc_nr(libc::SYS_socket)),
            (nr::CONNECT, libc_nr(libc::SYS_connect)),
            (nr::ACCEPT, libc_nr(libc::SYS_accept)),
            (nr::ACCEPT4, libc_nr(libc::SYS_accept4)),
            (nr::SENDTO, libc_nr(libc::SYS_sendto)),
            (nr::RECVFROM, libc_nr(libc::SYS_recvfrom)),
            (nr::SENDMSG, libc_nr(libc::SYS_sendmsg)),
            (nr::RECVMSG, libc_nr(libc::SYS_recvmsg)),
            (nr::GETSOCKOPT, libc_nr(libc::SYS_getsockopt)),
            (nr::OPENAT, libc_nr(libc::SYS_openat)),
            (nr::OPENAT2, libc_nr(libc::SYS_openat2)),
            (nr::RENAMEAT, libc_nr(libc::SYS_renameat)),
            (nr::RENAMEAT2, libc_nr(libc::SYS_renameat2)),
            (nr::UNLINKAT, libc_nr(libc::SYS_unlinkat)),
        ];
        for (ours, theirs) in want {
            assert_eq!(ours, theirs);
        }
        assert_eq!(ARCH, std::env::consts::ARCH);
    }

    #[cfg(abi_arch = "x86_64")]
    #[test]
    fn x86_64_also_has_rename_and_unlink() {
        assert_eq!(nr::RENAME, libc::SYS_rename as u32);
        assert_eq!(nr::UNLINK, libc::SYS_unlink as u32);
    }
}
