//! Where in a libssl file the TLS programs go.
//!
//! OpenSSL's `SSL_read_ex` and `SSL_read` are thin wrappers around one
//! internal function, `ssl_read_internal(s, buf, num, &readbytes)`, and
//! `SSL_write_ex`/`SSL_write` around `ssl_write_internal`, with the same
//! arguments and result as the `_ex` calls (success above 0, the count through
//! the fourth argument). Probing the internal function is much cheaper: a
//! wrapper begins with a stack adjustment, which the kernel must single-step
//! after the breakpoint (about 10 µs per call on this project's VMs), while the
//! internal function begins with pushes, which the kernel emulates (about 1 µs).
//! It also needs one probe pair instead of two per direction.
//!
//! The internal function is not exported, so it is found as the first direct
//! call in each wrapper, taken only when both wrappers of a direction call the
//! same function. Otherwise (another layout, another ISA, inlined code) the
//! exported functions are probed as before.

use std::collections::BTreeMap;

use iced_x86::{Decoder, DecoderOptions, FlowControl, OpKind};
use object::{Architecture, Object, ObjectSection, ObjectSymbol};
use pywats_agent_ebpf::abi::TLS_PROGRAMS;

/// Bytes of a wrapper searched for its call: OpenSSL 1.1 and 3.x wrappers
/// call within their first 48 bytes (an argument check and the stack
/// protector come first).
const WRAPPER_SCAN: usize = 96;

/// One program to attach: its index in [`TLS_PROGRAMS`], the file offset,
/// and whether that is the internal function (else the exported function
/// the program is named for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub index: usize,
    pub offset: u64,
    pub internal: bool,
}

/// A function in the file: its address and its file offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Function {
    address: u64,
    offset: u64,
}

/// What to attach in the library file `data`, and whether the internal
/// functions were found (for the log). Empty when the file has none of the
/// functions.
pub fn probe_plan(data: &[u8]) -> Result<(Vec<Probe>, bool), String> {
    let file = object::File::parse(data).map_err(|e| format!("not an ELF library: {e}"))?;
    let exported = exported_functions(&file);
    let mut plan = Vec::new();
    let mut internal = true;
    // Each direction: its wrappers (the `_ex` one first) and the programs
    // for the internal function (those of the `_ex` wrapper, same contract).
    for (ex, plain) in [("SSL_write_ex", "SSL_write"), ("SSL_read_ex", "SSL_read")] {
        match shared_callee(&file, data, &exported, ex, plain) {
            Some(target) => {
                plan.extend(programs_of(ex).map(|index| Probe { index, offset: target.offset, internal: true }))
            }
            None => {
                internal = false;
                for symbol in [ex, plain] {
                    if let Some(f) = exported.get(symbol) {
                        plan.extend(programs_of(symbol).map(|index| Probe {
                            index,
                            offset: f.offset,
                            internal: false,
                        }));
                    }
                }
            }
        }
    }
    if let Some(f) = exported.get("SSL_free") {
        plan.extend(programs_of("SSL_free").map(|index| Probe { index, offset: f.offset, internal: false }));
    }
    Ok((plan, internal))
}

fn programs_of(symbol: &str) -> impl Iterator<Item = usize> + '_ {
    TLS_PROGRAMS.iter().enumerate().filter(move |(_, p)| p.symbol == symbol).map(|(i, _)| i)
}

/// The functions of [`TLS_PROGRAMS`] the file defines.
fn exported_functions<'a>(file: &object::File<'a>) -> BTreeMap<&'a str, Function> {
    let mut found = BTreeMap::new();
    for symbol in file.dynamic_symbols().chain(file.symbols()) {
        let Ok(name) = symbol.name() else { continue };
        if !symbol.is_definition() || found.contains_key(name) || !TLS_PROGRAMS.iter().any(|p| p.symbol == name) {
            continue;
        }
        if let Some(offset) = file_offset(file, symbol.address()) {
            found.insert(name, Function { address: symbol.address(), offset });
        }
    }
    found
}

/// The file offset of `address`, if an executable section holds it.
fn file_offset(file: &object::File, address: u64) -> Option<u64> {
    file.sections().find_map(|section| {
        let end = section.address().checked_add(section.size())?;
        if section.kind() != object::SectionKind::Text || address < section.address() || address >= end {
            return None;
        }
        let (start, _) = section.file_range()?;
        Some(start + (address - section.address()))
    })
}

/// The function both wrappers call first, if they agree and it is another
/// function of this file's code.
fn shared_callee(
    file: &object::File,
    data: &[u8],
    exported: &BTreeMap<&str, Function>,
    ex: &str,
    plain: &str,
) -> Option<Function> {
    if file.architecture() != Architecture::X86_64 {
        return None;
    }
    let (a, b) = (exported.get(ex)?, exported.get(plain)?);
    let target = first_call(code_at(data, a.offset)?, a.address)?;
    if first_call(code_at(data, b.offset)?, b.address)? != target || target == a.address || target == b.address {
        return None;
    }
    Some(Function { address: target, offset: file_offset(file, target)? })
}

fn code_at(data: &[u8], offset: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.saturating_add(WRAPPER_SCAN).min(data.len());
    data.get(start..end)
}

/// The target of the first direct call in the straight-line code at `ip`,
/// stopping at a return, a jump or an indirect call. Conditional branches are
/// passed over: the wrappers' error paths are placed after their main path.
fn first_call(code: &[u8], ip: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    while decoder.can_decode() {
        let insn = decoder.decode();
        if insn.is_invalid() {
            return None;
        }
        match insn.flow_control() {
            FlowControl::Next | FlowControl::ConditionalBranch => {}
            FlowControl::Call if insn.op0_kind() == OpKind::NearBranch64 => return Some(insn.near_branch_target()),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_call_after_a_prologue_and_an_argument_check() {
        // sub $0x18,%rsp; test %edx,%edx; js +0x2f; call -0x1c3 (rel. to next); ret
        let code = [0x48, 0x83, 0xec, 0x18, 0x85, 0xd2, 0x78, 0x2f, 0xe8, 0x3d, 0xfe, 0xff, 0xff, 0xc3];
        assert_eq!(first_call(&code, 0x35440), Some(0x35440 + 13 - 0x1c3));
    }

    #[test]
    fn stops_at_a_return_a_jump_or_an_indirect_call() {
        assert_eq!(first_call(&[0xc3, 0xe8, 0, 0, 0, 0], 0x1000), None);
        assert_eq!(first_call(&[0xeb, 0x00, 0xe8, 0, 0, 0, 0], 0x1000), None);
        assert_eq!(first_call(&[0xff, 0xd0, 0xe8, 0, 0, 0, 0], 0x1000), None); // call *%rax
        assert_eq!(first_call(&[0x90, 0x90], 0x1000), None);
        assert_eq!(first_call(&[0x0f, 0x0b], 0x1000), None); // ud2
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn probes_the_internal_functions_of_the_system_libssl() {
        // The test machines run Debian's OpenSSL 3, whose wrappers call the
        // internal functions directly.
        let libs = crate::ebpf::tls::libssl_in_lib_dirs(std::path::Path::new("/proc"), std::process::id());
        let lib = libs.iter().find(|p| p.to_string_lossy().ends_with("libssl.so.3")).expect("a system libssl 3");
        let data = std::fs::read(lib).unwrap();
        let (plan, internal) = probe_plan(&data).unwrap();
        assert!(internal, "{plan:?}");
        let names: Vec<&str> = plan.iter().map(|p| TLS_PROGRAMS[p.index].program).collect();
        assert_eq!(names, ["ssl_write_ex", "ssl_write_ex_ret", "ssl_read_ex", "ssl_read_ex_ret", "ssl_free"]);
        let file = object::File::parse(&*data).unwrap();
        let exported = exported_functions(&file);
        // The internal function is none of the exported ones, and the pair of
        // each direction shares its offset.
        for pair in plan[..4].chunks(2) {
            assert_eq!(pair[0].offset, pair[1].offset);
            assert!(pair[0].internal && pair[1].internal);
            assert!(exported.values().all(|f| f.offset != pair[0].offset), "{pair:?}");
        }
        assert_ne!(plan[0].offset, plan[2].offset);
    }

    /// arm64 code is not decoded: the exported functions are probed, every
    /// pair (the arm64 VM runs this, `cargo xtask vm --arch arm64`).
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn probes_the_exported_functions_of_the_system_libssl_on_arm64() {
        let libs = crate::ebpf::tls::libssl_in_lib_dirs(std::path::Path::new("/proc"), std::process::id());
        let lib = libs.iter().find(|p| p.to_string_lossy().ends_with("libssl.so.3")).expect("a system libssl 3");
        let data = std::fs::read(lib).unwrap();
        let (plan, internal) = probe_plan(&data).unwrap();
        assert!(!internal, "{plan:?}");
        let names: Vec<&str> = plan.iter().map(|p| TLS_PROGRAMS[p.index].program).collect();
        let want = ["ssl_write_ex", "ssl_write_ex_ret", "ssl_write", "ssl_write_ret", "ssl_read_ex", "ssl_read_ex_ret"];
        assert_eq!(names, [&want[..], &["ssl_read", "ssl_read_ret", "ssl_free"]].concat());
        let file = object::File::parse(&*data).unwrap();
        let exported = exported_functions(&file);
        for p in &plan {
            assert!(!p.internal);
            assert_eq!(exported[TLS_PROGRAMS[p.index].symbol].offset, p.offset, "{}", TLS_PROGRAMS[p.index].program);
        }
    }

    #[test]
    fn a_file_without_libssl_gets_no_probes() {
        let (plan, _) = probe_plan(&std::fs::read("/proc/self/exe").unwrap()).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        assert!(probe_plan(b"not an ELF file").is_err());
    }
}
