//! Test hook: `PYWATS_AGENT_TEST_REFUSE=<program>` makes the kernel refuse
//! that program, so the tests can show what a kernel that refuses one does
//! to the agent (the feature is off, the agent runs). The kernel's verifier
//! is really asked: in the program's place it verifies two instructions that
//! read an uninitialised register, and its error and log are the refusal's.

use crate::ebpf::features::Refusal;

/// Whether the hook names `program`.
pub fn wanted(program: &str) -> bool {
    std::env::var("PYWATS_AGENT_TEST_REFUSE").is_ok_and(|p| p.split(',').any(|p| p == program))
}

/// `BPF_PROG_LOAD` of `r0 = r2; exit`: the verifier refuses it (`R2 !read_ok`).
pub fn refuse(program: &'static str) -> Refusal {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
    // mov64 r0, r2 (0xbf, src 2 / dst 0); exit (0x95).
    let insns: [u64; 2] = [u64::from_le_bytes([0xbf, 0x20, 0, 0, 0, 0, 0, 0]), 0x95];
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    // union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license,
    // log_level, log_size, log_buf; the rest zero.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SOCKET_FILTER.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: attr points at 128 readable bytes whose pointers outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    let error = std::io::Error::last_os_error();
    if fd >= 0 {
        // SAFETY: the fd the kernel just returned, closed once.
        unsafe { libc::close(fd as i32) };
        return Refusal { program, reason: "test hook: the kernel accepted the invalid program".into(), log: vec![] };
    }
    let text = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(log.len())]).into_owned();
    Refusal {
        program,
        reason: format!("BPF_PROG_LOAD failed: {error} (test hook PYWATS_AGENT_TEST_REFUSE)"),
        log: text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect(),
    }
}
