//! AFL-style havoc mutation of byte strings: bit flips, interesting values, deleted,
//! duplicated and inserted ranges, dictionary tokens and splices from another input.

use train::rng::Rng;

/// Inputs never grow past this: readers of large inputs are covered by the tests on real data.
const MAX_LEN: usize = 64 << 10;

const INTERESTING_BYTES: [u8; 12] = [0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'\n', b'{', b'}', b'[', b'='];
const INTERESTING_U32: [u32; 8] = [0, 1, 0x7f, 0x80, 0xffff, 0x1_0000, 0x7fff_ffff, u32::MAX];

/// Mutates seeds with a seeded generator: the same seed gives the same inputs.
pub struct Mutator {
    rng: Rng,
    dictionary: Vec<Vec<u8>>,
}

impl Mutator {
    pub fn new(seed: u64, dictionary: &[&[u8]]) -> Mutator {
        Mutator { rng: Rng::new(seed), dictionary: dictionary.iter().map(|t| t.to_vec()).collect() }
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.rng.below(n.max(1))
    }

    /// One to sixteen stacked mutations of `seed`; `other` is spliced from.
    pub fn mutate(&mut self, seed: &[u8], other: &[u8]) -> Vec<u8> {
        let mut data = seed.to_vec();
        let rounds = 1 << self.below(5);
        for _ in 0..rounds {
            self.one(&mut data, other);
        }
        data.truncate(MAX_LEN);
        data
    }

    fn one(&mut self, data: &mut Vec<u8>, other: &[u8]) {
        let len = data.len();
        match self.below(11) {
            0 if len > 0 => {
                let i = self.below(len);
                data[i] ^= 1 << self.below(8);
            }
            1 if len > 0 => {
                let i = self.below(len);
                data[i] = self.rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let i = self.below(len);
                data[i] = INTERESTING_BYTES[self.below(INTERESTING_BYTES.len())];
            }
            3 if len > 0 => {
                let start = self.below(len);
                let n = 1 + self.below((len - start).min(64));
                data.drain(start..start + n);
            }
            4 if len > 0 => {
                let start = self.below(len);
                let n = 1 + self.below((len - start).min(256));
                let piece = data[start..start + n].to_vec();
                let at = self.below(len + 1);
                data.splice(at..at, piece);
            }
            5 => {
                let n = 1 + self.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                let at = self.below(len + 1);
                data.splice(at..at, bytes);
            }
            6 | 7 if !self.dictionary.is_empty() => {
                let pick = self.below(self.dictionary.len());
                let token = self.dictionary[pick].clone();
                let at = self.below(len + 1);
                if self.below(2) == 0 || at + token.len() > len {
                    data.splice(at..at, token);
                } else {
                    data[at..at + token.len()].copy_from_slice(&token);
                }
            }
            8 if !other.is_empty() => {
                let start = self.below(other.len());
                let n = 1 + self.below((other.len() - start).min(512));
                let at = self.below(len + 1);
                let end = (at + self.below(64)).min(len);
                data.splice(at..end, other[start..start + n].iter().copied());
            }
            9 if len >= 4 => {
                let i = self.below(len - 3);
                let v = INTERESTING_U32[self.below(INTERESTING_U32.len())];
                data[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            10 if len > 0 => {
                data.truncate(self.below(len));
            }
            _ => {}
        }
    }
}
