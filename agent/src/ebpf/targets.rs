//! The kernel's target set: the `TARGETS` hash (tgid → root) and the
//! `TARGET_BITS` bit set that lets every syscall of an unwatched task leave
//! after one array read. The kernel sets and clears bits for children it sees
//! fork and exit, atomically; the agent does the same through a shared mapping
//! of the array, so neither side can undo the other's change to a neighbour bit.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Array, HashMap, Map, MapData};
use pywats_agent_ebpf::abi::{
    ExecPrefix, Target, EXEC_PREFIXES, MAP_EXEC_MATCH, MAP_TARGETS, MAP_TARGET_BITS, PROVISIONAL, TARGET_BITS_WORDS,
};

use crate::error::AgentError;

pub struct KernelTargets {
    map: HashMap<MapData, u32, Target>,
    bits: Bits,
    exec_match: Array<MapData, ExecPrefix>,
}

impl KernelTargets {
    pub fn new(
        map: HashMap<MapData, u32, Target>,
        bits: Map,
        exec_match: Array<MapData, ExecPrefix>,
    ) -> Result<KernelTargets, AgentError> {
        let Map::Array(data) = bits else {
            return Err(AgentError::MissingMap(MAP_TARGET_BITS));
        };
        Ok(KernelTargets { map, bits: Bits::map(data)?, exec_match })
    }

    /// Has the kernel take in, at their exec, the processes whose name
    /// starts with one of `prefixes` (`""`: every exec) as provisional
    /// targets. At most [`EXEC_PREFIXES`]; an empty list takes in none.
    pub fn take_in_at_exec(&mut self, prefixes: &[String]) -> Result<(), AgentError> {
        for (slot, prefix) in prefixes.iter().take(EXEC_PREFIXES as usize).enumerate() {
            let mut p = ExecPrefix { active: 1, len: prefix.len().min(15) as u32, bytes: [0; 16] };
            p.bytes[..p.len as usize].copy_from_slice(&prefix.as_bytes()[..p.len as usize]);
            self.exec_match
                .set(slot as u32, p, 0)
                .map_err(|source| AgentError::Map { name: MAP_EXEC_MATCH, source })?;
        }
        Ok(())
    }

    /// Provisional targets: taken in at exec, not judged yet.
    pub fn provisional(&self) -> Vec<u32> {
        self.map.iter().flatten().filter(|(_, t)| t.root_tgid == PROVISIONAL).map(|(tgid, _)| tgid).collect()
    }

    /// Whether `tgid` is a provisional target now (its exec event is on its
    /// way to the agent, or was lost).
    pub fn is_provisional(&self, tgid: u32) -> bool {
        self.map.get(&tgid, 0).is_ok_and(|t| t.root_tgid == PROVISIONAL)
    }

    /// Watches `tgid` as part of the target rooted at `root`.
    pub fn insert(&mut self, tgid: u32, root: u32) -> Result<(), AgentError> {
        self.map
            .insert(tgid, Target { root_tgid: root, exec_gen: 0 }, 0)
            .map_err(|source| AgentError::Map { name: MAP_TARGETS, source })?;
        self.bits.set(tgid, true);
        Ok(())
    }

    /// How often `tgid` called exec since it became a target (the generation
    /// of its socket-map entries); 0 when unknown.
    pub fn exec_gen(&self, tgid: u32) -> u32 {
        self.map.get(&tgid, 0).map(|t| t.exec_gen).unwrap_or(0)
    }

    /// Stops watching `tgid` (its exit may have been missed).
    pub fn remove(&mut self, tgid: u32) {
        self.bits.set(tgid, false);
        let _ = self.map.remove(&tgid);
    }
}

/// The `TARGET_BITS` array, mapped into the agent.
struct Bits {
    _data: MapData,
    words: NonNull<AtomicU64>,
}

// SAFETY: the mapping is plain shared memory accessed only through atomics.
unsafe impl Send for Bits {}
// SAFETY: as above.
unsafe impl Sync for Bits {}

const BYTES: usize = TARGET_BITS_WORDS as usize * 8;

impl Bits {
    fn map(data: MapData) -> Result<Bits, AgentError> {
        // SAFETY: maps the array map's fd (created BPF_F_MMAPABLE) shared and
        // read-write, its whole size; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(AgentError::Io(std::io::Error::other(format!(
                "mapping the {MAP_TARGET_BITS} map: {}",
                std::io::Error::last_os_error()
            ))));
        }
        let words = NonNull::new(ptr.cast::<AtomicU64>()).ok_or(AgentError::MissingMap(MAP_TARGET_BITS))?;
        Ok(Bits { _data: data, words })
    }

    fn word(&self, tgid: u32) -> Option<&AtomicU64> {
        let index = (tgid >> 6) as usize;
        // SAFETY: index is within the mapping of TARGET_BITS_WORDS words.
        (index < TARGET_BITS_WORDS as usize).then(|| unsafe { &*self.words.as_ptr().add(index) })
    }

    fn set(&self, tgid: u32, on: bool) {
        let Some(word) = self.word(tgid) else { return };
        let bit = 1u64 << (tgid & 63);
        if on {
            word.fetch_or(bit, Ordering::SeqCst);
        } else {
            word.fetch_and(!bit, Ordering::SeqCst);
        }
    }
}

impl Drop for Bits {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`.
        unsafe { libc::munmap(self.words.as_ptr().cast(), BYTES) };
    }
}
