//! Just enough HPACK (RFC 7541) to read a request's header block and write it back: a
//! decoder that follows the peer's dynamic table, Huffman strings included, and an encoder
//! that writes every field as a plain literal (so the receiver's dynamic table stays empty).
//! [`super::authority`] uses it to rewrite `:authority`; nothing here allocates more than
//! the caller's limit.

use std::collections::VecDeque;

/// A header field: (name, value), raw bytes.
pub type Field = (Vec<u8>, Vec<u8>);

/// Why a header block could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HpackError(pub &'static str);

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HPACK: {}", self.0)
    }
}

/// The static table (RFC 7541 Appendix A), index 1 first.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Huffman code length of each byte (RFC 7541 Appendix B). The code is canonical, so the
/// codes follow from the lengths; EOS is the 30-bit all-ones code after them.
const CODE_LENGTHS: [u8; 256] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
];

/// The largest dynamic table a peer may ask for (RFC 7540's SETTINGS_HEADER_TABLE_SIZE
/// default is 4096; anything above 64 KiB is refused).
const MAX_TABLE_SIZE: usize = 65536;

/// Follows one peer's encoder: its dynamic table, sized by its size updates.
#[derive(Debug)]
pub struct Decoder {
    table: VecDeque<Field>,
    size: usize,
    max_size: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: 4096,
        }
    }
}

impl Decoder {
    /// Decodes one complete header block; `limit` bounds the decoded size (names, values
    /// and 32 bytes per field, as SETTINGS_MAX_HEADER_LIST_SIZE counts them).
    pub fn decode(&mut self, block: &[u8], limit: usize) -> Result<Vec<Field>, HpackError> {
        let mut r = Reader { b: block, pos: 0 };
        let mut out = Vec::new();
        let mut total = 0usize;
        while let Some(first) = r.peek() {
            let field = if first & 0x80 != 0 {
                let index = r.integer(7)?;
                self.entry(index)?
            } else if first & 0xc0 == 0x40 {
                let field = self.literal(&mut r, 6)?;
                self.insert(field.clone());
                field
            } else if first & 0xe0 == 0x20 {
                let size = r.integer(5)?;
                if size > MAX_TABLE_SIZE {
                    return Err(HpackError("dynamic table size update too large"));
                }
                self.max_size = size;
                self.evict();
                continue;
            } else {
                // Without indexing (0000) or never indexed (0001): 4-bit prefix.
                self.literal(&mut r, 4)?
            };
            total += field.0.len() + field.1.len() + 32;
            if total > limit {
                return Err(HpackError("header list larger than the limit"));
            }
            out.push(field);
        }
        Ok(out)
    }

    fn literal(&self, r: &mut Reader<'_>, prefix: u8) -> Result<Field, HpackError> {
        let index = r.integer(prefix)?;
        let name = if index == 0 {
            r.string()?
        } else {
            self.entry(index)?.0
        };
        Ok((name, r.string()?))
    }

    fn entry(&self, index: usize) -> Result<Field, HpackError> {
        match index {
            0 => Err(HpackError("index 0")),
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            }
            _ => self
                .table
                .get(index - 62)
                .cloned()
                .ok_or(HpackError("index beyond the dynamic table")),
        }
    }

    fn insert(&mut self, field: Field) {
        let size = field.0.len() + field.1.len() + 32;
        self.table.push_front(field);
        self.size += size;
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + 32,
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// Writes `fields` as literals without indexing, new names, no Huffman.
pub fn encode(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        encode_string(&mut out, name);
        encode_string(&mut out, value);
    }
    out
}

fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    encode_integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

fn encode_integer(out: &mut Vec<u8>, flags: u8, prefix: u8, mut n: usize) {
    let max = (1usize << prefix) - 1;
    if n < max {
        out.push(flags | n as u8);
        return;
    }
    out.push(flags | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn byte(&mut self) -> Result<u8, HpackError> {
        let b = self.peek().ok_or(HpackError("truncated header block"))?;
        self.pos += 1;
        Ok(b)
    }

    /// An integer with an `prefix`-bit prefix (RFC 7541 5.1), at most 2^28.
    fn integer(&mut self, prefix: u8) -> Result<usize, HpackError> {
        let max = (1usize << prefix) - 1;
        let mut n = usize::from(self.byte()?) & max;
        if n < max {
            return Ok(n);
        }
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            n += usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
            shift += 7;
            if shift > 21 {
                return Err(HpackError("integer too large"));
            }
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, HpackError> {
        let huffman = self.peek().ok_or(HpackError("truncated header block"))? & 0x80 != 0;
        let len = self.integer(7)?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.b.len())
            .ok_or(HpackError("string longer than the block"))?;
        let raw = &self.b[self.pos..end];
        self.pos = end;
        if huffman {
            huffman_decode(raw)
        } else {
            Ok(raw.to_vec())
        }
    }
}

/// The canonical code's decoding tables: per length, the first code and the symbols.
struct Canonical {
    first: [u32; 31],
    start: [usize; 31],
    count: [usize; 31],
    symbols: [u8; 256],
}

fn canonical() -> &'static Canonical {
    static TABLE: std::sync::OnceLock<Canonical> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut symbols = [0u8; 256];
        let mut order: Vec<usize> = (0..256).collect();
        order.sort_by_key(|&s| (CODE_LENGTHS[s], s));
        for (i, s) in order.iter().enumerate() {
            symbols[i] = *s as u8;
        }
        let (mut first, mut start, mut count) = ([0u32; 31], [0usize; 31], [0usize; 31]);
        for &l in &CODE_LENGTHS {
            count[usize::from(l)] += 1;
        }
        let (mut code, mut index) = (0u32, 0usize);
        for len in 1..31 {
            first[len] = code;
            start[len] = index;
            code = (code + count[len] as u32) << 1;
            index += count[len];
        }
        Canonical {
            first,
            start,
            count,
            symbols,
        }
    })
}

/// Decodes a Huffman string; the padding must be the EOS code's leading ones (< 8 bits).
fn huffman_decode(raw: &[u8]) -> Result<Vec<u8>, HpackError> {
    let t = canonical();
    let mut out = Vec::with_capacity(raw.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in raw {
        for bit in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> bit) & 1);
            len += 1;
            if len > 30 {
                return Err(HpackError("bad Huffman code"));
            }
            let offset = code.wrapping_sub(t.first[len]) as usize;
            if code >= t.first[len] && offset < t.count[len] {
                out.push(t.symbols[t.start[len] + offset]);
                (code, len) = (0, 0);
            }
        }
    }
    if len >= 8 || code != (1u32 << len) - 1 {
        return Err(HpackError("bad Huffman padding"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: &[(&str, &str)]) -> Vec<Field> {
        v.iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// RFC 7541 C.4: three requests with Huffman coding and a shared dynamic table.
    #[test]
    fn decodes_the_rfcs_huffman_request_examples() {
        let hex = |s: &str| -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
                .collect()
        };
        let mut d = Decoder::default();
        let c41 = hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff");
        assert_eq!(
            d.decode(&c41, 4096),
            Ok(fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ]))
        );
        let c42 = hex("8286 84be 5886 a8eb 1064 9cbf");
        assert_eq!(
            d.decode(&c42, 4096),
            Ok(fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ]))
        );
        let c43 = hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf");
        assert_eq!(
            d.decode(&c43, 4096),
            Ok(fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ]))
        );
    }

    #[test]
    fn what_it_encodes_decodes_to_the_same_fields() {
        let f = fields(&[
            (":authority", "/var/lib/kubelet/device-plugins/x.sock"),
            ("te", "trailers"),
            ("x-long", &"v".repeat(300)),
        ]);
        assert_eq!(Decoder::default().decode(&encode(&f), 4096), Ok(f));
    }

    #[test]
    fn hostile_blocks_are_errors() {
        let mut d = Decoder::default();
        for bad in [
            &[0xbe][..],                   // dynamic index 62 of an empty table
            &[0x80][..],                   // index 0
            &[0x00, 0x05, b'a'][..],       // string longer than the block
            &[0x3f, 0xff, 0xff, 0x7f][..], // table size update beyond the cap
            &[0x00, 0x81, 0x00][..],       // Huffman padding of zeros
            &[0x7f, 0xff, 0xff, 0xff, 0xff, 0x7f][..],
        ] {
            assert!(d.decode(bad, 4096).is_err(), "{bad:?}");
        }
        // An indexed field repeated: bounded by the limit, not by memory.
        let bomb = vec![0x82u8; 10_000];
        assert_eq!(
            d.decode(&bomb, 65536),
            Err(HpackError("header list larger than the limit"))
        );
    }
}
