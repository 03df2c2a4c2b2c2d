//! The HPACK decoder of the `:authority` shim (RFC 7541): one per connection, mirroring the
//! client's encoder (dynamic table, table size updates, Huffman-coded strings).
//!
//! Written for the shim rather than taken from `loona-hpack` (which the tests use as an
//! independent oracle): that crate builds a hash-map Huffman table for every Huffman-coded
//! string, and h2 clients send `:path` that way on every call (h2 never indexes its value),
//! which cost about 30 µs per call. This one decodes canonically from the code lengths, with
//! no allocation per string.

use std::collections::VecDeque;

use super::HpackError;

/// Bytes a table entry costs beyond its name and value (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;
/// The static table's size; dynamic entries are numbered after it (RFC 7541 §2.3.3).
const STATIC_LEN: usize = super::STATIC_TABLE.len();
/// Larger integers are refused: nothing in a header block needs them (RFC 7541 §5.1 lets a
/// decoder bound them).
const MAX_INTEGER: usize = 1 << 24;

pub(super) struct Decoder {
    /// Newest first, so index 62 is `table[0]`.
    table: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// Huffman-decoded strings of the current field.
    name_buf: Vec<u8>,
    value_buf: Vec<u8>,
}

/// A dynamic table entry: name and value in one allocation.
struct Entry {
    bytes: Box<[u8]>,
    name_len: usize,
}

impl Entry {
    fn new(name: &[u8], value: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        Self {
            bytes: bytes.into_boxed_slice(),
            name_len: name.len(),
        }
    }

    fn name(&self) -> &[u8] {
        &self.bytes[..self.name_len]
    }

    fn value(&self) -> &[u8] {
        &self.bytes[self.name_len..]
    }
}

impl Decoder {
    pub(super) fn new(max_size: usize) -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size,
            name_buf: Vec::new(),
            value_buf: Vec::new(),
        }
    }

    /// Decodes one complete header block, handing each field to `emit` in order, with whether
    /// the client sent it as never indexed (§6.2.3). `limit` is
    /// the largest table size the client may switch to (the server's advertised
    /// SETTINGS_HEADER_TABLE_SIZE).
    pub(super) fn decode(
        &mut self,
        mut block: &[u8],
        limit: usize,
        mut emit: impl FnMut(&[u8], &[u8], bool),
    ) -> Result<(), HpackError> {
        let mut at_start = true;
        while let Some(&first) = block.first() {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = take_integer(&mut block, 7)?;
                let (name, value) = self.entry(index)?;
                emit(name, value, false);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3), only at the start of a block (§4.2).
                if !at_start {
                    return Err(HpackError::MisplacedSizeUpdate);
                }
                let size = take_integer(&mut block, 5)?;
                if size > limit {
                    return Err(HpackError::TableSizeOverLimit { size, limit });
                }
                self.max_size = size;
                self.evict_to(size);
                continue;
            } else {
                // Literal field: with incremental indexing (§6.2.1), without indexing or never
                // indexed (§6.2.2, §6.2.3).
                let (prefix, index_it) = if first & 0x40 != 0 {
                    (6, true)
                } else {
                    (4, false)
                };
                let index = take_integer(&mut block, prefix)?;
                let name_raw = if index == 0 {
                    Some(take_string(&mut block)?)
                } else {
                    None
                };
                let value_raw = take_string(&mut block)?;
                let value = value_raw.decode_into(&mut self.value_buf)?;
                let name = match name_raw {
                    Some(raw) => raw.decode_into(&mut self.name_buf)?,
                    None => entry(&self.table, index)?.0,
                };
                emit(name, value, first & 0xf0 == 0x10);
                let new = index_it.then(|| Entry::new(name, value));
                if let Some(new) = new {
                    self.insert(new);
                }
            }
            at_start = false;
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        entry(&self.table, index)
    }

    /// Adds an entry, evicting the oldest ones to make room; an entry larger than the whole
    /// table empties it and is not added (§4.4).
    fn insert(&mut self, entry: Entry) {
        let cost = entry.bytes.len() + ENTRY_OVERHEAD;
        if cost > self.max_size {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - cost);
        self.size += cost;
        self.table.push_front(entry);
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            match self.table.pop_back() {
                Some(old) => self.size -= old.bytes.len() + ENTRY_OVERHEAD,
                None => self.size = 0,
            }
        }
    }
}

fn entry(table: &VecDeque<Entry>, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
    if (1..=STATIC_LEN).contains(&index) {
        let (name, value) = super::STATIC_TABLE[index - 1];
        return Ok((name, value));
    }
    index
        .checked_sub(STATIC_LEN + 1)
        .and_then(|i| table.get(i))
        .map(|e| (e.name(), e.value()))
        .ok_or(HpackError::BadIndex { index })
}

/// An integer with an N-bit prefix (§5.1).
fn take_integer(block: &mut &[u8], prefix_bits: u32) -> Result<usize, HpackError> {
    let (&first, mut rest) = block.split_first().ok_or(HpackError::Truncated)?;
    let max = (1usize << prefix_bits) - 1;
    let mut value = usize::from(first) & max;
    if value == max {
        let mut shift = 0;
        loop {
            let (&byte, tail) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = tail;
            value += usize::from(byte & 0x7f) << shift;
            if value > MAX_INTEGER {
                return Err(HpackError::IntegerTooLarge);
            }
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
    }
    *block = rest;
    Ok(value)
}

/// A string literal as sent: raw octets, or Huffman-coded ones (§5.2).
struct RawString<'a> {
    huffman: bool,
    bytes: &'a [u8],
}

impl<'a> RawString<'a> {
    fn decode_into<'b>(&self, buf: &'b mut Vec<u8>) -> Result<&'b [u8], HpackError>
    where
        'a: 'b,
    {
        if !self.huffman {
            return Ok(self.bytes);
        }
        buf.clear();
        huffman_decode(self.bytes, buf)?;
        Ok(buf)
    }
}

fn take_string<'a>(block: &mut &'a [u8]) -> Result<RawString<'a>, HpackError> {
    let huffman = block.first().is_some_and(|b| b & 0x80 != 0);
    let len = take_integer(block, 7)?;
    if len > block.len() {
        return Err(HpackError::Truncated);
    }
    let (bytes, rest) = block.split_at(len);
    *block = rest;
    Ok(RawString { huffman, bytes })
}

/// The Huffman code's length in bits for each symbol, 0..=255 and EOS (RFC 7541 Appendix B).
/// The code is canonical, so these lengths determine every code.
const HUFFMAN_LENGTHS: [u8; 257] = [
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
const MAX_CODE_LEN: usize = 30;

/// The canonical code in decoding form: for each length, its first code, how many codes
/// have it, and where its symbols start in `symbols` (sorted by length, then value).
struct Canonical {
    first_code: [u32; MAX_CODE_LEN + 1],
    count: [u32; MAX_CODE_LEN + 1],
    first_symbol: [usize; MAX_CODE_LEN + 1],
    symbols: [u16; 257],
}

const CANONICAL: Canonical = Canonical::build();

impl Canonical {
    const fn build() -> Self {
        let mut count = [0u32; MAX_CODE_LEN + 1];
        let mut i = 0;
        while i < HUFFMAN_LENGTHS.len() {
            count[HUFFMAN_LENGTHS[i] as usize] += 1;
            i += 1;
        }
        let mut first_code = [0u32; MAX_CODE_LEN + 1];
        let mut first_symbol = [0usize; MAX_CODE_LEN + 1];
        let mut symbols = [0u16; 257];
        let (mut code, mut next) = (0u32, 0usize);
        let mut len = 1;
        while len <= MAX_CODE_LEN {
            first_code[len] = code;
            first_symbol[len] = next;
            let mut s = 0;
            while s < HUFFMAN_LENGTHS.len() {
                if HUFFMAN_LENGTHS[s] as usize == len {
                    symbols[next] = s as u16;
                    next += 1;
                }
                s += 1;
            }
            code = (code + count[len]) << 1;
            len += 1;
        }
        Self {
            first_code,
            count,
            first_symbol,
            symbols,
        }
    }
}

/// Appends the decoded octets of a Huffman-coded string (§5.2): the EOS symbol inside the
/// string, and padding longer than 7 bits or other than the EOS code's high bits, are errors.
fn huffman_decode(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    let c = &CANONICAL;
    let (mut code, mut len) = (0u32, 0usize);
    for &byte in bytes {
        for bit in (0..8).rev() {
            code = code << 1 | u32::from(byte >> bit & 1);
            len += 1;
            let offset = code.wrapping_sub(c.first_code[len]);
            if offset < c.count[len] {
                let symbol = c.symbols[c.first_symbol[len] + offset as usize];
                if symbol == EOS {
                    return Err(HpackError::Huffman);
                }
                out.push(symbol as u8);
                code = 0;
                len = 0;
            } else if len == MAX_CODE_LEN {
                // Every 30-bit string completes a code, so this cannot happen; never index
                // past the tables if it did.
                return Err(HpackError::Huffman);
            }
        }
    }
    if len > 7 || code != (1 << len) - 1 {
        return Err(HpackError::Huffman);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use loona_hpack::huffman::HuffmanDecoder;

    /// Each symbol's code, from the canonical form.
    fn codes() -> Vec<(u32, usize)> {
        let c = &CANONICAL;
        let mut codes = vec![(0, 0); 257];
        for len in 1..=MAX_CODE_LEN {
            for k in 0..c.count[len] {
                let symbol = c.symbols[c.first_symbol[len] + k as usize];
                codes[usize::from(symbol)] = (c.first_code[len] + k, len);
            }
        }
        codes
    }

    /// Huffman-codes `s` and pads with ones (test-only encoder).
    fn huffman_encode(s: &[u8]) -> Vec<u8> {
        let codes = codes();
        let (mut acc, mut bits, mut out) = (0u64, 0, Vec::new());
        for &b in s {
            let (code, len) = codes[usize::from(b)];
            acc = acc << len | u64::from(code);
            bits += len;
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(((acc << (8 - bits)) as u8) | ((1u8 << (8 - bits)) - 1));
        }
        out
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn the_code_is_complete_and_eos_is_all_ones() {
        let kraft: u64 = HUFFMAN_LENGTHS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
        assert_eq!(codes()[usize::from(EOS)], ((1 << 30) - 1, 30));
    }

    #[test]
    fn huffman_agrees_with_loona() {
        let mut seed = 7;
        let mut out = Vec::new();
        for round in 0..3_000 {
            let len = lcg(&mut seed) as usize % 40;
            let s: Vec<u8> = if round == 0 {
                (0..=255).collect()
            } else {
                (0..len).map(|_| lcg(&mut seed) as u8).collect()
            };
            let coded = huffman_encode(&s);
            out.clear();
            huffman_decode(&coded, &mut out).unwrap();
            assert_eq!(out, s);
            assert_eq!(HuffmanDecoder::new().decode(&coded).unwrap(), s);
            // Random bit strings: both decoders accept the same ones, with the same result.
            let noise: Vec<u8> = (0..len % 8).map(|_| lcg(&mut seed) as u8).collect();
            out.clear();
            let ours = huffman_decode(&noise, &mut out).map(|()| out.clone());
            let theirs = HuffmanDecoder::new().decode(&noise);
            assert_eq!(ours.ok(), theirs.ok(), "{noise:02x?}");
        }
    }

    #[test]
    fn huffman_padding_and_eos_are_checked() {
        let mut out = Vec::new();
        // 'a' (00011) then 3 bits of padding that are not all ones.
        assert_eq!(
            huffman_decode(&[0b0001_1000], &mut out),
            Err(HpackError::Huffman)
        );
        // A whole byte of padding after '0' (00000 + 111, then 11111111).
        assert_eq!(
            huffman_decode(&[0b0000_0111, 0xff], &mut out),
            Err(HpackError::Huffman)
        );
        // EOS spelled out: 30 ones.
        assert_eq!(
            huffman_decode(&[0xff; 4], &mut out),
            Err(HpackError::Huffman)
        );
        out.clear();
        huffman_decode(&[0b0000_0111], &mut out).unwrap();
        assert_eq!(out, b"0");
    }

    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn decode_all(decoder: &mut Decoder, block: &[u8], limit: usize) -> Result<Fields, HpackError> {
        let mut fields = Vec::new();
        decoder.decode(block, limit, |n, v, _| {
            fields.push((n.to_vec(), v.to_vec()))
        })?;
        Ok(fields)
    }

    #[test]
    fn matches_loona_on_its_encoder_with_evictions() {
        let mut seed = 11;
        for table_size in [0usize, 64, 200, 4096] {
            let mut encoder = loona_hpack::Encoder::new();
            encoder.set_max_table_size(table_size);
            let mut ours = Decoder::new(4096);
            let mut size_update = Vec::new();
            super::super::encode_integer(&mut size_update, table_size, 5, 0x20);
            for call in 0..200 {
                let fields: Fields = (0..1 + lcg(&mut seed) % 6)
                    .map(|_| {
                        let name = format!("x-{}", lcg(&mut seed) % 12).into_bytes();
                        let value = "v".repeat(lcg(&mut seed) as usize % 60).into_bytes();
                        (name, value)
                    })
                    .chain([(b":authority".to_vec(), b"%2Fa.sock".to_vec())])
                    .collect();
                let mut block = if call == 0 {
                    size_update.clone()
                } else {
                    Vec::new()
                };
                block.extend(encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..]))));
                assert_eq!(decode_all(&mut ours, &block, 4096).unwrap(), fields);
            }
        }
    }

    #[test]
    fn matches_loona_on_random_blocks() {
        let mut seed = 3;
        let mut agreed = 0;
        for _ in 0..20_000 {
            let mut ours = Decoder::new(4096);
            let mut theirs = loona_hpack::Decoder::new();
            theirs.set_max_allowed_table_size(4096);
            // Two blocks on one connection, so table state carries over.
            for _ in 0..2 {
                let len = lcg(&mut seed) as usize % 24;
                let block: Vec<u8> = (0..len).map(|_| lcg(&mut seed) as u8).collect();
                let a = decode_all(&mut ours, &block, 4096);
                let b = theirs.decode(&block);
                match (&a, &b) {
                    // Rules this decoder enforces and loona does not, or the reverse.
                    (Err(HpackError::MisplacedSizeUpdate | HpackError::IntegerTooLarge), _)
                    | (Ok(_), Err(loona_hpack::decoder::DecoderError::SizeUpdateAtEnd)) => break,
                    _ => assert_eq!(a.as_ref().ok(), b.as_ref().ok(), "{block:02x?}"),
                }
                agreed += usize::from(a.is_ok());
                if a.is_err() {
                    break;
                }
            }
        }
        // Enough random blocks decode for the comparison to mean something.
        assert!(agreed > 1_000, "{agreed}");
    }

    #[test]
    fn errors() {
        let mut d = Decoder::new(4096);
        let mut check =
            |block: &[u8], error| assert_eq!(decode_all(&mut d, block, 4096), Err(error));
        check(&[0x80], HpackError::BadIndex { index: 0 });
        check(&[0xbe], HpackError::BadIndex { index: 62 });
        check(&[0xff], HpackError::Truncated);
        check(
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            HpackError::IntegerTooLarge,
        );
        check(&[0x00, 0x05, b'a'], HpackError::Truncated);
        check(&[0x82, 0x20], HpackError::MisplacedSizeUpdate);
        check(
            &[0x3f, 0xe2, 0x1f],
            HpackError::TableSizeOverLimit {
                size: 4097,
                limit: 4096,
            },
        );
        check(&[0x04, 0x81, 0x00], HpackError::Huffman);
        let ab = (b"a".to_vec(), b"b".to_vec());
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut d, &[0x40, 1, b'a', 1, b'b', 0xbe], 4096),
            Ok(vec![ab.clone(), ab.clone()])
        );
        assert_eq!(decode_all(&mut d, &[0xbe], 4096), Ok(vec![ab]));
        // A size update alone is a valid (empty) block; shrinking to 0 evicts everything.
        assert_eq!(decode_all(&mut d, &[0x20], 4096), Ok(Vec::new()));
        assert_eq!(
            decode_all(&mut d, &[0xbe], 4096),
            Err(HpackError::BadIndex { index: 62 })
        );
    }
}
