//! HPACK's Huffman code (RFC 7541, Appendix B).
//!
//! The code is canonical: within one length, codes count up in symbol order,
//! and each length starts where the shorter ones left off. So the code
//! lengths alone define it, and decoding needs, per length, the first code
//! and how many codes there are: one table built at compile time, shared by
//! every decoder, with no work per string. (The `loona-hpack` decoder built
//! a hash map of the code per string: a block of one-byte strings cost 18 µs
//! a string.)

/// Code length of each symbol, 0..=255 and EOS (256).
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

const EOS: u16 = 256;
const MAX_LEN: usize = 30;

struct Code {
    /// First code of each length.
    first: [u32; MAX_LEN + 1],
    /// Number of codes of each length.
    count: [u32; MAX_LEN + 1],
    /// Where each length's symbols start in `symbols`.
    offset: [u16; MAX_LEN + 1],
    /// Symbols ordered by (length, symbol), which is code order.
    symbols: [u16; 257],
}

const fn canonical() -> Code {
    let mut count = [0u32; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut first = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let (mut code, mut index, mut len) = (0u32, 0u16, 1);
    while len <= MAX_LEN {
        code = (code + count[len - 1]) << 1;
        first[len] = code;
        offset[len] = index;
        index += count[len] as u16;
        len += 1;
    }
    let mut next = offset;
    let mut symbols = [0u16; 257];
    s = 0;
    while s < 257 {
        let l = LENGTHS[s] as usize;
        symbols[next[l] as usize] = s as u16;
        next[l] += 1;
        s += 1;
    }
    Code { first, count, offset, symbols }
}

static CODE: Code = canonical();

/// A Huffman-coded string that no encoder could have produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidHuffman;

/// Decodes `src`, handing each byte to `emit`. Rejects the EOS symbol, codes
/// longer than any in the table, and padding that is not a prefix of EOS
/// (more than 7 bits, or not all ones), as RFC 7541 §5.2 requires.
pub fn decode(src: &[u8], mut emit: impl FnMut(u8)) -> Result<(), InvalidHuffman> {
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in src {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let rank = code.wrapping_sub(CODE.first[len]);
            if rank < CODE.count[len] {
                let symbol = CODE.symbols[usize::from(CODE.offset[len]) + rank as usize];
                if symbol == EOS {
                    return Err(InvalidHuffman);
                }
                emit(symbol as u8);
                (code, len) = (0, 0);
            } else if len == MAX_LEN {
                return Err(InvalidHuffman);
            }
        }
    }
    if len > 7 || code != (1 << len) - 1 {
        return Err(InvalidHuffman);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.trim().len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn decoded(src: &[u8]) -> Result<Vec<u8>, InvalidHuffman> {
        let mut out = Vec::new();
        decode(src, |b| out.push(b)).map(|_| out)
    }

    fn code_of(symbol: usize) -> (u32, usize) {
        let len = usize::from(LENGTHS[symbol]);
        let rank = CODE.symbols[usize::from(CODE.offset[len])..].iter().position(|&s| usize::from(s) == symbol);
        (CODE.first[len] + rank.unwrap() as u32, len)
    }

    #[test]
    fn codes_are_those_of_the_rfc() {
        // Appendix B, first, last and in between.
        assert_eq!(code_of(0), (0x1ff8, 13));
        assert_eq!(code_of(b' ' as usize), (0x14, 6));
        assert_eq!(code_of(b'0' as usize), (0x0, 5));
        assert_eq!(code_of(b'a' as usize), (0x3, 5));
        assert_eq!(code_of(255), (0x3ffffee, 26));
        assert_eq!(code_of(256), (0x3fffffff, 30));
    }

    #[test]
    fn rfc_examples_and_every_byte() {
        // RFC 7541 C.4.1: "www.example.com".
        assert_eq!(decoded(&hex("f1e3c2e5f23a6ba0ab90f4ff")).unwrap(), b"www.example.com");
        assert_eq!(decoded(&hex("a8eb10649cbf")).unwrap(), b"no-cache");
        // Bytes 0..=255 in order, encoded by python-hpack's HuffmanEncoder.
        let every: Vec<u8> = (0..=255).collect();
        assert_eq!(decoded(&hex(include_str!("every_byte.hex"))).unwrap(), every);
        assert_eq!(decoded(&[]).unwrap(), b"");
    }

    #[test]
    fn eos_long_padding_and_zero_padding_are_rejected() {
        // EOS itself (30 ones), padded with two more ones.
        assert_eq!(decoded(&[0xff, 0xff, 0xff, 0xff]), Err(InvalidHuffman));
        // A whole byte of padding.
        assert_eq!(decoded(&hex("a8eb10649cbfff")), Err(InvalidHuffman));
        // Padding with a zero bit: '0' is 00000, then 000 pads.
        assert_eq!(decoded(&[0x00]), Err(InvalidHuffman));
        // '0' then ones: fine.
        assert_eq!(decoded(&[0x07]).unwrap(), b"0");
    }
}
