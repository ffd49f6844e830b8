//! Bit streams over 64-bit words, most significant bit first: the storage of compressed blocks.
//! The reader never panics, whatever the words and length it is given.

/// Appends bits.
#[derive(Debug, Clone, Default)]
pub(crate) struct BitWriter {
    words: Vec<u64>,
    len: u64,
}

/// Reads bits written by a [`BitWriter`]; every read past the end is `None`.
#[derive(Debug, Clone)]
pub(crate) struct BitReader<'a> {
    words: &'a [u64],
    pos: u64,
    len: u64,
    /// The bits actually there: `len`, or fewer when the words are short.
    held: u64,
}

impl BitWriter {
    pub(crate) fn with_capacity(words: usize) -> Self {
        BitWriter {
            words: Vec::with_capacity(words),
            len: 0,
        }
    }

    /// Appends the low `n` bits of `value`, `n` ≤ 64.
    #[inline]
    pub(crate) fn write(&mut self, value: u64, n: u32) {
        if n == 0 {
            return;
        }
        let n = n.min(64);
        let value = if n == 64 { value } else { value & ((1 << n) - 1) };
        let used = (self.len & 63) as u32;
        match self.words.last_mut() {
            Some(last) if used != 0 => {
                let free = 64 - used;
                if n <= free {
                    *last |= value << (free - n);
                } else {
                    *last |= value >> (n - free);
                    self.words.push(value << (64 - (n - free)));
                }
            }
            _ => self.words.push(value << (64 - n)),
        }
        self.len += u64::from(n);
    }

    pub(crate) fn bit(&mut self, bit: bool) {
        self.write(u64::from(bit), 1);
    }

    /// `count` one bits, then a zero unless `count` is the code's maximum.
    pub(crate) fn ones(&mut self, count: u32, max: u32) {
        let terminated = count < max;
        let n = count + u32::from(terminated);
        let value = if count == 64 {
            u64::MAX
        } else {
            ((1u64 << count) - 1) << u32::from(terminated)
        };
        self.write(value, n);
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    pub(crate) fn capacity_bytes(&self) -> usize {
        self.words.capacity() * 8
    }
}

impl<'a> BitReader<'a> {
    /// Reads `len` bits of `words`; a `len` longer than the words makes the reads past them fail.
    pub(crate) fn new(words: &'a [u64], len: u64) -> Self {
        let held = (words.len() as u64).saturating_mul(64);
        BitReader {
            words,
            pos: 0,
            len,
            held: len.min(held),
        }
    }

    /// The next `n` bits (`n` ≤ 64) as the low bits of the result.
    #[inline(always)]
    pub(crate) fn read(&mut self, n: u32) -> Option<u64> {
        if n == 0 {
            return Some(0);
        }
        if n > 64 || self.held.saturating_sub(self.pos) < u64::from(n) {
            return None;
        }
        let index = (self.pos >> 6) as usize;
        let used = (self.pos & 63) as u32;
        let first = *self.words.get(index)?;
        let value = if used + n <= 64 {
            (first << used) >> (64 - n)
        } else {
            let second = *self.words.get(index + 1)?;
            ((first << used) >> (64 - n)) | (second >> (128 - used - n))
        };
        self.pos += u64::from(n);
        Some(value)
    }

    /// Counts one bits up to `max` (≤ 63), consuming the zero that ends a shorter run.
    #[inline(always)]
    pub(crate) fn ones(&mut self, max: u32) -> Option<u32> {
        let count = self.peek().leading_ones().min(max);
        let used = u64::from(count + u32::from(count < max));
        if self.held.saturating_sub(self.pos) < used {
            return None;
        }
        self.pos += used;
        Some(count)
    }

    /// Skips `n` bits already looked at with [`BitReader::peek`].
    #[inline(always)]
    pub(crate) fn consume(&mut self, n: u32) -> Option<()> {
        if self.held.saturating_sub(self.pos) < u64::from(n) {
            return None;
        }
        self.pos += u64::from(n);
        Some(())
    }

    /// The next 64 bits, zeros past the end.
    #[inline(always)]
    pub(crate) fn peek(&self) -> u64 {
        let index = (self.pos >> 6) as usize;
        let used = (self.pos & 63) as u32;
        let first = self.words.get(index).copied().unwrap_or(0) << used;
        let second = match used {
            0 => 0,
            _ => self.words.get(index + 1).copied().unwrap_or(0) >> (64 - used),
        };
        let bits = first | second;
        let left = self.held.saturating_sub(self.pos);
        if left < 64 {
            bits & !(u64::MAX >> left)
        } else {
            bits
        }
    }

    #[inline]
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.len
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn what_is_written_reads_back(fields in prop::collection::vec((any::<u64>(), 0u32..=64), 0..200)) {
            let mut w = BitWriter::default();
            for (value, n) in &fields {
                w.write(*value, *n);
            }
            prop_assert_eq!(w.len(), fields.iter().map(|(_, n)| u64::from(*n)).sum::<u64>());
            let mut r = BitReader::new(w.words(), w.len());
            for (value, n) in &fields {
                let mask = if *n == 64 { u64::MAX } else { (1u64 << n) - 1 };
                prop_assert_eq!(r.read(*n), Some(value & mask));
            }
            prop_assert!(r.at_end());
            prop_assert_eq!(r.read(1), None);
        }

        #[test]
        fn unary_codes_read_back(counts in prop::collection::vec(0u32..=8, 0..100)) {
            let mut w = BitWriter::default();
            for c in &counts {
                w.ones(*c, 8);
            }
            let mut r = BitReader::new(w.words(), w.len());
            for c in &counts {
                prop_assert_eq!(r.ones(8), Some(*c));
            }
            prop_assert!(r.at_end());
        }

        #[test]
        fn lies_about_length_never_panic(words in prop::collection::vec(any::<u64>(), 0..4), len in any::<u64>(), reads in prop::collection::vec(0u32..=70, 0..50)) {
            let mut r = BitReader::new(&words, len);
            for n in reads {
                let _ = r.read(n);
            }
        }
    }
}
