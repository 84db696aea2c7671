use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The fields the agent reads from one block, as strings.
fn read(d: &mut Decoder, block: &[u8]) -> Result<Vec<(Field, String)>, HpackError> {
    let mut out = Vec::new();
    d.decode(block, usize::MAX, |f, v| out.push((f, String::from_utf8_lossy(v).into_owned())))?;
    Ok(out)
}

#[test]
fn rfc_requests_with_huffman() {
    // RFC 7541 C.4.1-C.4.3 (one connection, one decoder); table sizes as the RFC gives them.
    let mut d = Decoder::default();
    let first = read(&mut d, &hex("828684418cf1e3c2e5f23a6ba0ab90f4ff")).unwrap();
    assert_eq!(first, [(Field::Method, "GET".into()), (Field::Path, "/".into())]);
    assert_eq!(d.table.size(), 57);
    read(&mut d, &hex("828684be5886a8eb10649cbf")).unwrap();
    assert_eq!(d.table.size(), 110);
    let third = read(&mut d, &hex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf")).unwrap();
    assert_eq!(third, [(Field::Method, "GET".into()), (Field::Path, "/index.html".into())]);
    assert_eq!(d.table.size(), 164);
}

#[test]
fn rfc_responses_evict_in_a_small_table() {
    // RFC 7541 C.6.1-C.6.3 behind a size update to 256 (the reader allowed 256).
    let mut d = Decoder::default();
    d.allow(256);
    let blocks = [
        "3fe101488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
        "4883640effc1c0bf",
        "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
    ];
    let mut statuses = Vec::new();
    for b in blocks {
        statuses.extend(read(&mut d, &hex(b)).unwrap());
    }
    let want: Vec<(Field, String)> = ["302", "307", "200"].iter().map(|s| (Field::Status, s.to_string())).collect();
    assert_eq!(statuses, want);
    assert_eq!(d.table.size(), 215);
}

#[test]
fn table_size_updates_are_bounded_by_the_setting_and_the_cap() {
    let mut d = Decoder::default();
    // Above the default 4096 the peer never allowed.
    assert_eq!(read(&mut d, &[0x3f, 0xe2, 0x1f]), Err(HpackError::TableSize));
    // The peer allowed 1 MiB: the decoder follows up to its own cap only.
    let mut d = Decoder::default();
    d.allow(1 << 20);
    let update = |size: usize| {
        let mut b = vec![0x3f];
        let mut rest = size - 31;
        while rest >= 128 {
            b.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        b.push(rest as u8);
        b
    };
    assert_eq!(read(&mut d, &update(HPACK_MAX_TABLE)), Ok(vec![]));
    assert_eq!(read(&mut d, &update(HPACK_MAX_TABLE + 1)), Err(HpackError::TableSize));
    // The largest update an integer can carry is refused, not allocated.
    assert_eq!(read(&mut d, &[0x3f, 0xff, 0xff, 0xff, 0x7f]), Err(HpackError::TableSize));
}

#[test]
fn the_table_never_outgrows_its_size() {
    let mut d = Decoder::default();
    // 1000 literal fields with incremental indexing: name "x-n", 100-byte value.
    let mut block = Vec::new();
    for _ in 0..1000 {
        block.extend([0x40, 0x03, b'x', b'-', b'n', 0x64]);
        block.extend([b'v'; 100]);
    }
    read(&mut d, &block).unwrap();
    // 4096 / (3 + 100 + 32) = 30 entries.
    assert_eq!(d.table.size(), 30 * 135);
    // Values of fields the agent does not read are not kept.
    assert!(d.held() < 30 * 64 + 4096, "{}", d.held());
}

#[test]
fn malformed_blocks() {
    for (block, err) in [
        // An index past both tables, and index 0.
        (&[0xbe][..], HpackError::Malformed),
        (&[0x80], HpackError::Malformed),
        // A string longer than the block.
        (&[0x04, 0x05, b'a'], HpackError::Malformed),
        // An integer that does not end.
        (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], HpackError::Malformed),
        // A size update after a field.
        (&[0x82, 0x20], HpackError::Malformed),
        // Huffman: EOS in a :path value.
        (&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff], HpackError::Huffman),
    ] {
        assert_eq!(read(&mut Decoder::default(), block), Err(err), "{block:x?}");
    }
}

#[test]
fn fields_per_block_are_capped() {
    let mut d = Decoder::default();
    let block = [0x82; 10];
    assert_eq!(d.decode(&block, 10, |_, _| {}), Ok(()));
    assert_eq!(d.decode(&block, 9, |_, _| {}), Err(HpackError::TooManyFields));
}

#[test]
fn long_values_are_cut_and_long_request_ids_ignored() {
    let mut d = Decoder::default();
    let mut block = vec![0x04, 0x7f]; // :path (static name 4), literal without indexing
    let path = vec![b'/'; 5000];
    let mut len = path.len() - 127;
    while len >= 128 {
        block.push((len % 128) as u8 | 0x80);
        len /= 128;
    }
    block.push(len as u8);
    block.extend(&path);
    block.extend([0x00, 0x0c]);
    block.extend(b"x-request-id");
    block.push(0x7f);
    block.push(200 - 127);
    block.extend([b'r'; 200]);
    let fields = read(&mut d, &block).unwrap();
    assert_eq!(fields.len(), 1);
    assert_eq!((fields[0].0, fields[0].1.len()), (Field::Path, MAX_PATH + 1));
}

#[test]
fn a_megabyte_of_one_byte_huffman_strings_is_cheap() {
    // The block that took loona-hpack 9 s: literal fields with a one-byte
    // Huffman name and value each, here indexed so both are decoded.
    let mut block = Vec::new();
    while block.len() < 1 << 20 {
        block.extend([0x40, 0x81, 0x1f, 0x81, 0x1f]); // name "a", value "a"
    }
    let start = std::time::Instant::now();
    let mut d = Decoder::default();
    d.decode(&block, usize::MAX, |_, _| {}).unwrap();
    let took = start.elapsed();
    assert!(took < std::time::Duration::from_millis(500), "{took:?}");
}
