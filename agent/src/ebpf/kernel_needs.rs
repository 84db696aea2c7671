//! The developer guide's table of what the kernel programs need (helpers,
//! map types and flags, program types, instruction kinds, each with the
//! kernel that brought it) against the object the agent embeds: everything
//! the object uses has a row, every row is used, and the minimum the guide
//! states is the newest row. So the stated minimum follows from the code.

use std::collections::{BTreeMap, BTreeSet};

use object::{Object, ObjectSection, SectionFlags, SectionKind};

const GUIDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/development/README.md");

/// The start of the line in the guide that states the minimum.
const MINIMUM: &str = "The newest of these is the least kernel the programs load on:";

/// What the object uses: (kind, id) as the table's first and third columns
/// name them.
fn uses(object: &[u8]) -> BTreeSet<(String, String)> {
    let file = object::File::parse(object).expect("the embedded object is ELF");
    let mut out = BTreeSet::new();
    let mut add = |kind: &str, id: String| out.insert((kind.to_owned(), id));
    let (mut pseudo_calls, mut tail_calls) = (false, false);
    for section in file.sections() {
        let name = section.name().unwrap_or_default();
        let data = section.data().unwrap_or_default();
        if name == "maps" {
            // aya-ebpf's `bpf_map_def`: type, key size, value size, max entries, flags, id, pinning.
            for def in data.chunks_exact(28) {
                let word = |i: usize| u32::from_le_bytes(def[4 * i..4 * i + 4].try_into().unwrap());
                add("map type", word(0).to_string());
                if word(4) & (1 << 10) != 0 {
                    add("map flag", "BPF_F_MMAPABLE".into());
                }
            }
            continue;
        }
        let executable = matches!(section.flags(), SectionFlags::Elf { sh_flags } if sh_flags & 4 != 0);
        if section.kind() != SectionKind::Text || !executable {
            continue;
        }
        if name != ".text" {
            add("program type", name.split('/').next().unwrap_or(name).to_owned());
        }
        for insn in data.chunks_exact(8) {
            let (code, src) = (insn[0], insn[1] >> 4);
            let offset = i16::from_le_bytes([insn[2], insn[3]]);
            let imm = i32::from_le_bytes(insn[4..8].try_into().unwrap());
            match code {
                // call: a helper (src 0) or a BPF-to-BPF call (src 1).
                0x85 if src == 0 => {
                    tail_calls |= imm == 12;
                    add("helper", imm.to_string());
                }
                0x85 => pseudo_calls = true,
                // BPF_STX | BPF_ATOMIC, W or DW: anything but a plain add is 5.12's.
                0xc3 | 0xdb if imm != 0 => drop(add("instruction", "atomic".into())),
                0x95 => {}
                // A jump backwards: a loop the verifier bounds.
                c if matches!(c & 7, 5 | 6) && offset < 0 => drop(add("instruction", "loop".into())),
                _ => {}
            }
        }
    }
    if pseudo_calls {
        add("instruction", "call".into());
        if tail_calls {
            add("instruction", "call+tail_call".into());
        }
    }
    out
}

/// The table's rows: (kind, id) → kernel version (major, minor).
fn table(guide: &str) -> BTreeMap<(String, String), (u32, u32)> {
    let mut rows = BTreeMap::new();
    for line in guide.lines().skip_while(|l| !l.starts_with("### What the programs need from the kernel")) {
        if line.starts_with("## ") {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, kind, _name, id, since, ..] = cells[..] else { continue };
        let Some((major, minor)) = since.split_once('.') else { continue };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else { continue };
        rows.insert((kind.to_owned(), id.trim_matches('`').to_owned()), (major, minor));
    }
    rows
}

#[test]
fn the_guides_kernel_table_matches_the_object() {
    let guide = std::fs::read_to_string(GUIDE).expect("read the developer guide");
    let rows = table(&guide);
    assert!(rows.len() >= 20, "found only {} rows: {rows:?}", rows.len());
    let used = uses(super::loader::OBJECT);
    assert!(used.iter().any(|(k, _)| k == "helper") && used.iter().any(|(k, _)| k == "map type"), "{used:?}");
    let missing: Vec<_> = used.iter().filter(|u| !rows.contains_key(*u)).collect();
    assert!(missing.is_empty(), "the object uses what the guide's kernel table lacks: {missing:?}");
    let stale: Vec<_> = rows.keys().filter(|r| !used.contains(*r)).collect();
    assert!(stale.is_empty(), "rows of the guide's kernel table the object no longer uses: {stale:?}");
    let (major, minor) = rows.values().max().copied().unwrap();
    let stated = guide.lines().find(|l| l.starts_with(MINIMUM)).expect("the guide states the minimum");
    assert!(
        stated.contains(&format!("**{major}.{minor}**")),
        "newest row {major}.{minor}, but the guide says {stated:?}"
    );
}
