//! The HPACK Huffman code (RFC 7541 Appendix B), decoding only: the gateway
//! writes its literals raw, but peers may Huffman-code any string they send.
//!
//! Decoding walks the code tree four bits at a time through a state table
//! built at compile time, so the hot loop is two table loads per input byte
//! and no branch per bit. A state is an internal node of the tree (there are
//! exactly 256: the code is complete over 257 symbols), so it fits in a `u8`.

use super::DecodeError;

/// `(code, length in bits)` for the 256 octets and EOS (index 256), the code
/// right-aligned, as listed in RFC 7541 Appendix B.
pub(super) const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),     // 0
    (0x7fffd8, 23),   // 1
    (0xfffffe2, 28),  // 2
    (0xfffffe3, 28),  // 3
    (0xfffffe4, 28),  // 4
    (0xfffffe5, 28),  // 5
    (0xfffffe6, 28),  // 6
    (0xfffffe7, 28),  // 7
    (0xfffffe8, 28),  // 8
    (0xffffea, 24),   // 9
    (0x3ffffffc, 30), // 10
    (0xfffffe9, 28),  // 11
    (0xfffffea, 28),  // 12
    (0x3ffffffd, 30), // 13
    (0xfffffeb, 28),  // 14
    (0xfffffec, 28),  // 15
    (0xfffffed, 28),  // 16
    (0xfffffee, 28),  // 17
    (0xfffffef, 28),  // 18
    (0xffffff0, 28),  // 19
    (0xffffff1, 28),  // 20
    (0xffffff2, 28),  // 21
    (0x3ffffffe, 30), // 22
    (0xffffff3, 28),  // 23
    (0xffffff4, 28),  // 24
    (0xffffff5, 28),  // 25
    (0xffffff6, 28),  // 26
    (0xffffff7, 28),  // 27
    (0xffffff8, 28),  // 28
    (0xffffff9, 28),  // 29
    (0xffffffa, 28),  // 30
    (0xffffffb, 28),  // 31
    (0x14, 6),        // ' '
    (0x3f8, 10),      // '!'
    (0x3f9, 10),      // '"'
    (0xffa, 12),      // '#'
    (0x1ff9, 13),     // '$'
    (0x15, 6),        // '%'
    (0xf8, 8),        // '&'
    (0x7fa, 11),      // "'"
    (0x3fa, 10),      // '('
    (0x3fb, 10),      // ')'
    (0xf9, 8),        // '*'
    (0x7fb, 11),      // '+'
    (0xfa, 8),        // ','
    (0x16, 6),        // '-'
    (0x17, 6),        // '.'
    (0x18, 6),        // '/'
    (0x0, 5),         // '0'
    (0x1, 5),         // '1'
    (0x2, 5),         // '2'
    (0x19, 6),        // '3'
    (0x1a, 6),        // '4'
    (0x1b, 6),        // '5'
    (0x1c, 6),        // '6'
    (0x1d, 6),        // '7'
    (0x1e, 6),        // '8'
    (0x1f, 6),        // '9'
    (0x5c, 7),        // ':'
    (0xfb, 8),        // ';'
    (0x7ffc, 15),     // '<'
    (0x20, 6),        // '='
    (0xffb, 12),      // '>'
    (0x3fc, 10),      // '?'
    (0x1ffa, 13),     // '@'
    (0x21, 6),        // 'A'
    (0x5d, 7),        // 'B'
    (0x5e, 7),        // 'C'
    (0x5f, 7),        // 'D'
    (0x60, 7),        // 'E'
    (0x61, 7),        // 'F'
    (0x62, 7),        // 'G'
    (0x63, 7),        // 'H'
    (0x64, 7),        // 'I'
    (0x65, 7),        // 'J'
    (0x66, 7),        // 'K'
    (0x67, 7),        // 'L'
    (0x68, 7),        // 'M'
    (0x69, 7),        // 'N'
    (0x6a, 7),        // 'O'
    (0x6b, 7),        // 'P'
    (0x6c, 7),        // 'Q'
    (0x6d, 7),        // 'R'
    (0x6e, 7),        // 'S'
    (0x6f, 7),        // 'T'
    (0x70, 7),        // 'U'
    (0x71, 7),        // 'V'
    (0x72, 7),        // 'W'
    (0xfc, 8),        // 'X'
    (0x73, 7),        // 'Y'
    (0xfd, 8),        // 'Z'
    (0x1ffb, 13),     // '['
    (0x7fff0, 19),    // '\\'
    (0x1ffc, 13),     // ']'
    (0x3ffc, 14),     // '^'
    (0x22, 6),        // '_'
    (0x7ffd, 15),     // '`'
    (0x3, 5),         // 'a'
    (0x23, 6),        // 'b'
    (0x4, 5),         // 'c'
    (0x24, 6),        // 'd'
    (0x5, 5),         // 'e'
    (0x25, 6),        // 'f'
    (0x26, 6),        // 'g'
    (0x27, 6),        // 'h'
    (0x6, 5),         // 'i'
    (0x74, 7),        // 'j'
    (0x75, 7),        // 'k'
    (0x28, 6),        // 'l'
    (0x29, 6),        // 'm'
    (0x2a, 6),        // 'n'
    (0x7, 5),         // 'o'
    (0x2b, 6),        // 'p'
    (0x76, 7),        // 'q'
    (0x2c, 6),        // 'r'
    (0x8, 5),         // 's'
    (0x9, 5),         // 't'
    (0x2d, 6),        // 'u'
    (0x77, 7),        // 'v'
    (0x78, 7),        // 'w'
    (0x79, 7),        // 'x'
    (0x7a, 7),        // 'y'
    (0x7b, 7),        // 'z'
    (0x7ffe, 15),     // '{'
    (0x7fc, 11),      // '|'
    (0x3ffd, 14),     // '}'
    (0x1ffd, 13),     // '~'
    (0xffffffc, 28),  // 127
    (0xfffe6, 20),    // 128
    (0x3fffd2, 22),   // 129
    (0xfffe7, 20),    // 130
    (0xfffe8, 20),    // 131
    (0x3fffd3, 22),   // 132
    (0x3fffd4, 22),   // 133
    (0x3fffd5, 22),   // 134
    (0x7fffd9, 23),   // 135
    (0x3fffd6, 22),   // 136
    (0x7fffda, 23),   // 137
    (0x7fffdb, 23),   // 138
    (0x7fffdc, 23),   // 139
    (0x7fffdd, 23),   // 140
    (0x7fffde, 23),   // 141
    (0xffffeb, 24),   // 142
    (0x7fffdf, 23),   // 143
    (0xffffec, 24),   // 144
    (0xffffed, 24),   // 145
    (0x3fffd7, 22),   // 146
    (0x7fffe0, 23),   // 147
    (0xffffee, 24),   // 148
    (0x7fffe1, 23),   // 149
    (0x7fffe2, 23),   // 150
    (0x7fffe3, 23),   // 151
    (0x7fffe4, 23),   // 152
    (0x1fffdc, 21),   // 153
    (0x3fffd8, 22),   // 154
    (0x7fffe5, 23),   // 155
    (0x3fffd9, 22),   // 156
    (0x7fffe6, 23),   // 157
    (0x7fffe7, 23),   // 158
    (0xffffef, 24),   // 159
    (0x3fffda, 22),   // 160
    (0x1fffdd, 21),   // 161
    (0xfffe9, 20),    // 162
    (0x3fffdb, 22),   // 163
    (0x3fffdc, 22),   // 164
    (0x7fffe8, 23),   // 165
    (0x7fffe9, 23),   // 166
    (0x1fffde, 21),   // 167
    (0x7fffea, 23),   // 168
    (0x3fffdd, 22),   // 169
    (0x3fffde, 22),   // 170
    (0xfffff0, 24),   // 171
    (0x1fffdf, 21),   // 172
    (0x3fffdf, 22),   // 173
    (0x7fffeb, 23),   // 174
    (0x7fffec, 23),   // 175
    (0x1fffe0, 21),   // 176
    (0x1fffe1, 21),   // 177
    (0x3fffe0, 22),   // 178
    (0x1fffe2, 21),   // 179
    (0x7fffed, 23),   // 180
    (0x3fffe1, 22),   // 181
    (0x7fffee, 23),   // 182
    (0x7fffef, 23),   // 183
    (0xfffea, 20),    // 184
    (0x3fffe2, 22),   // 185
    (0x3fffe3, 22),   // 186
    (0x3fffe4, 22),   // 187
    (0x7ffff0, 23),   // 188
    (0x3fffe5, 22),   // 189
    (0x3fffe6, 22),   // 190
    (0x7ffff1, 23),   // 191
    (0x3ffffe0, 26),  // 192
    (0x3ffffe1, 26),  // 193
    (0xfffeb, 20),    // 194
    (0x7fff1, 19),    // 195
    (0x3fffe7, 22),   // 196
    (0x7ffff2, 23),   // 197
    (0x3fffe8, 22),   // 198
    (0x1ffffec, 25),  // 199
    (0x3ffffe2, 26),  // 200
    (0x3ffffe3, 26),  // 201
    (0x3ffffe4, 26),  // 202
    (0x7ffffde, 27),  // 203
    (0x7ffffdf, 27),  // 204
    (0x3ffffe5, 26),  // 205
    (0xfffff1, 24),   // 206
    (0x1ffffed, 25),  // 207
    (0x7fff2, 19),    // 208
    (0x1fffe3, 21),   // 209
    (0x3ffffe6, 26),  // 210
    (0x7ffffe0, 27),  // 211
    (0x7ffffe1, 27),  // 212
    (0x3ffffe7, 26),  // 213
    (0x7ffffe2, 27),  // 214
    (0xfffff2, 24),   // 215
    (0x1fffe4, 21),   // 216
    (0x1fffe5, 21),   // 217
    (0x3ffffe8, 26),  // 218
    (0x3ffffe9, 26),  // 219
    (0xffffffd, 28),  // 220
    (0x7ffffe3, 27),  // 221
    (0x7ffffe4, 27),  // 222
    (0x7ffffe5, 27),  // 223
    (0xfffec, 20),    // 224
    (0xfffff3, 24),   // 225
    (0xfffed, 20),    // 226
    (0x1fffe6, 21),   // 227
    (0x3fffe9, 22),   // 228
    (0x1fffe7, 21),   // 229
    (0x1fffe8, 21),   // 230
    (0x7ffff3, 23),   // 231
    (0x3fffea, 22),   // 232
    (0x3fffeb, 22),   // 233
    (0x1ffffee, 25),  // 234
    (0x1ffffef, 25),  // 235
    (0xfffff4, 24),   // 236
    (0xfffff5, 24),   // 237
    (0x3ffffea, 26),  // 238
    (0x7ffff4, 23),   // 239
    (0x3ffffeb, 26),  // 240
    (0x7ffffe6, 27),  // 241
    (0x3ffffec, 26),  // 242
    (0x3ffffed, 26),  // 243
    (0x7ffffe7, 27),  // 244
    (0x7ffffe8, 27),  // 245
    (0x7ffffe9, 27),  // 246
    (0x7ffffea, 27),  // 247
    (0x7ffffeb, 27),  // 248
    (0xffffffe, 28),  // 249
    (0x7ffffec, 27),  // 250
    (0x7ffffed, 27),  // 251
    (0x7ffffee, 27),  // 252
    (0x7ffffef, 27),  // 253
    (0x7fffff0, 27),  // 254
    (0x3ffffee, 26),  // 255
    (0x3fffffff, 30), // EOS
];

const EOS: u16 = 256;

/// The code tree: `NODES[n][bit]` is the child of internal node `n` (root 0).
/// A child is another internal node's number, or `LEAF | symbol`.
const LEAF: u16 = 0x8000;

const fn build_tree() -> [[u16; 2]; 256] {
    // 0 means "no child yet": the root is never anyone's child.
    let mut nodes = [[0u16; 2]; 256];
    let mut count = 1usize;
    let mut sym = 0usize;
    while sym < CODES.len() {
        let (code, len) = CODES[sym];
        let mut node = 0usize;
        let mut depth = 1u8;
        while depth <= len {
            let bit = ((code >> (len - depth)) & 1) as usize;
            let child = nodes[node][bit];
            if depth == len {
                assert!(child == 0, "Huffman code is not prefix-free");
                nodes[node][bit] = LEAF | sym as u16;
            } else if child == 0 {
                assert!(count < 256, "Huffman code has too many internal nodes");
                nodes[node][bit] = count as u16;
                node = count;
                count += 1;
            } else {
                assert!(child & LEAF == 0, "Huffman code is not prefix-free");
                node = child as usize;
            }
            depth += 1;
        }
        sym += 1;
    }
    // A complete code has no dangling branch: every bit string decodes to
    // something, so the decoder never needs a "no such code" state.
    let mut n = 0;
    while n < count {
        assert!(
            nodes[n][0] != 0 && nodes[n][1] != 0,
            "Huffman code is not complete"
        );
        n += 1;
    }
    assert!(count == 256, "Huffman code is not complete");
    nodes
}

const NODES: [[u16; 2]; 256] = build_tree();

/// One transition of the 4-bit state machine, 4 bytes so that indexing the
/// table is a shift.
#[derive(Clone, Copy)]
#[repr(align(4))]
struct Step {
    /// The state after the nibble.
    next: u8,
    /// The symbol completed inside the nibble, when `EMIT` is set. A code is at
    /// least 5 bits long, so a nibble completes at most one.
    sym: u8,
    flags: u8,
}

const EMIT: u8 = 1;
/// The nibble completes EOS, which RFC 7541 §5.2 makes a decoding error.
const FAIL: u8 = 2;

const fn build_steps() -> [[Step; 16]; 256] {
    let mut steps = [[Step {
        next: 0,
        sym: 0,
        flags: 0,
    }; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut step = Step {
                next: 0,
                sym: 0,
                flags: 0,
            };
            let mut i = 4;
            while i > 0 {
                i -= 1;
                let child = NODES[node][(nibble >> i) & 1];
                if child & LEAF != 0 {
                    let sym = child & !LEAF;
                    if sym == EOS {
                        step.flags = FAIL;
                        break;
                    }
                    step.sym = sym as u8;
                    step.flags = EMIT;
                    node = 0;
                } else {
                    node = child as usize;
                }
            }
            step.next = node as u8;
            steps[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    steps
}

static STEPS: [[Step; 16]; 256] = build_steps();

/// States a string may end in: the root (ended on a symbol boundary) or the
/// first 7 nodes on the all-ones path, i.e. padding that is a prefix of EOS
/// and shorter than 8 bits (RFC 7541 §5.2).
const fn build_accepting() -> [bool; 256] {
    let mut accepting = [false; 256];
    accepting[0] = true;
    let mut node = 0usize;
    let mut depth = 0;
    while depth < 7 {
        node = NODES[node][1] as usize;
        assert!(node as u16 & LEAF == 0);
        accepting[node] = true;
        depth += 1;
    }
    accepting
}

static ACCEPTING: [bool; 256] = build_accepting();

/// Appends the decoded form of `src` to `dst`.
pub(super) fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), DecodeError> {
    // Every symbol is at least 5 bits: this is the most `src` can produce.
    dst.reserve(src.len() * 8 / 5);
    let mut state = 0u8;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = STEPS[state as usize][nibble as usize];
            if step.flags != 0 {
                if step.flags == FAIL {
                    return Err(DecodeError::BadHuffman);
                }
                dst.push(step.sym);
            }
            state = step.next;
        }
    }
    if ACCEPTING[state as usize] {
        Ok(())
    } else {
        Err(DecodeError::BadHuffman)
    }
}

/// The encoder writes raw literals; this exists to test the decoder.
#[cfg(test)]
pub(super) fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &b in src {
        let (code, len) = CODES[b as usize];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            dst.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        // Pad with the most significant bits of EOS, i.e. ones.
        dst.push(((acc << (8 - bits)) as u8) | (0xff >> bits));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_table_is_prefix_free_and_complete() {
        // Kraft's sum is exactly 1 for a complete code.
        let kraft: u64 = CODES.iter().map(|&(_, len)| 1u64 << (30 - len)).sum();
        assert_eq!(kraft, 1 << 30);
        for (a, &(ca, la)) in CODES.iter().enumerate() {
            assert!((5..=30).contains(&la), "symbol {a}");
            assert!(u64::from(ca) < 1u64 << la, "symbol {a}");
            for (b, &(cb, lb)) in CODES.iter().enumerate() {
                if a != b && la <= lb {
                    assert_ne!(cb >> (lb - la), ca, "{a} is a prefix of {b}");
                }
            }
        }
        assert_eq!(CODES[256], (0x3fff_ffff, 30), "EOS is 30 ones");
        // The const build also checks prefix-freedom and completeness: it
        // would not compile otherwise. 256 internal nodes for 257 leaves.
        assert_eq!(
            NODES.iter().flatten().filter(|&&c| c & LEAF != 0).count(),
            257
        );
    }

    #[test]
    fn every_symbol_decodes_back() {
        let mut enc = Vec::new();
        let mut dec = Vec::new();
        for sym in 0..=255u8 {
            enc.clear();
            dec.clear();
            encode(&[sym], &mut enc);
            decode(&enc, &mut dec).unwrap();
            assert_eq!(dec, [sym]);
        }
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        enc.clear();
        dec.clear();
        encode(&all, &mut enc);
        decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, all);
    }

    #[test]
    fn padding_and_eos() {
        let mut out = Vec::new();
        // 'a' is 00011: three bits of ones padding are fine.
        decode(&[0x1f], &mut out).unwrap();
        assert_eq!(out, b"a");
        // Nothing at all is the empty string.
        out.clear();
        decode(&[], &mut out).unwrap();
        assert!(out.is_empty());
        // Eight bits of padding.
        assert_eq!(decode(&[0xff], &mut out), Err(DecodeError::BadHuffman));
        // 'a' then 11 bits of ones.
        assert_eq!(
            decode(&[0x1f, 0xff], &mut out),
            Err(DecodeError::BadHuffman)
        );
        // Padding that is not all ones: 'a' then 000, 'a' then 101.
        assert_eq!(decode(&[0x18], &mut out), Err(DecodeError::BadHuffman));
        assert_eq!(decode(&[0x1d], &mut out), Err(DecodeError::BadHuffman));
        // EOS (30 ones) then two bits of padding.
        assert_eq!(decode(&[0xff; 4], &mut out), Err(DecodeError::BadHuffman));
        // EOS in the middle, followed by more symbols: 'a' (5 bits), EOS (30),
        // 'a' (5) is exactly 5 bytes.
        let acc: u64 = (((0x3 << 30) | 0x3fff_ffff) << 5) | 0x3;
        let bad: Vec<u8> = (0..5).rev().map(|i| (acc >> (i * 8)) as u8).collect();
        assert_eq!(decode(&bad, &mut out), Err(DecodeError::BadHuffman));
    }
}
