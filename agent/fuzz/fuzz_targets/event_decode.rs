//! Ring-buffer records are decoded with length checks; any bytes are safe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pywats_agent_ebpf::abi::Event;

fuzz_target!(|data: &[u8]| {
    if let Ok(Event::Data { event, prefix, suffix, .. }) = Event::decode(data) {
        assert_eq!(prefix.len(), event.prefix_len as usize);
        assert_eq!(suffix.len(), event.suffix_len as usize);
    }
});
