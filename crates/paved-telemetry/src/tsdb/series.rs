//! One series' samples: sealed compressed blocks, oldest first, and the head block being
//! appended to. A block covers a fixed run of steps (block number × steps per block onwards), so
//! retention drops whole blocks and a query decodes only the blocks that overlap its range.

use std::collections::VecDeque;
use std::sync::Arc;

use super::codec::{CodecError, Encoder, decode_all, reencode_float};

/// The samples of one series.
#[derive(Debug, Default)]
pub(crate) struct SeriesData {
    sealed: VecDeque<Block>,
    head: Option<Head>,
    /// The slot (step number) of the newest sample ever appended.
    last_slot: Option<u64>,
}

/// A compressed block, shareable with readers without copying.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    /// Which run of steps: it covers slots `number * steps .. (number + 1) * steps`.
    pub(crate) number: u64,
    /// Offset of the first sample within the block.
    pub(crate) start: u16,
    pub(crate) samples: u16,
    pub(crate) len_bits: u32,
    pub(crate) words: Arc<[u64]>,
}

#[derive(Debug)]
struct Head {
    number: u64,
    start: u16,
    /// Offset of the newest sample within the block.
    last: u16,
    samples: u16,
    encoder: Encoder,
}

/// Why an append was refused: the series already has a sample at or after that step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotNewer {
    pub(crate) last_slot: u64,
}

impl SeriesData {
    /// Appends `value` at `slot`, which must be newer than every sample held.
    pub(crate) fn append(&mut self, slot: u64, value: f64, steps: u64) -> Result<(), NotNewer> {
        if let Some(last_slot) = self.last_slot
            && slot <= last_slot
        {
            return Err(NotNewer { last_slot });
        }
        self.last_slot = Some(slot);
        let (number, offset) = (slot / steps, (slot % steps) as u16);
        match &mut self.head {
            Some(head) if head.number == number => head.push(offset, value),
            _ => {
                if let Some(head) = self.head.take() {
                    self.sealed.push_back(head.seal());
                }
                self.head = Some(Head::new(number, offset, value, 0));
            }
        }
        Ok(())
    }

    /// Drops blocks that end at or before `slot`; true when nothing is left of a series that had
    /// samples (one just created, not yet appended to, stays).
    pub(crate) fn drop_before(&mut self, slot: u64, steps: u64) -> bool {
        let ends_by = |number: u64| number.saturating_add(1).saturating_mul(steps) <= slot;
        while self.sealed.front().is_some_and(|b| ends_by(b.number)) {
            self.sealed.pop_front();
        }
        if self.head.as_ref().is_some_and(|h| ends_by(h.number)) {
            self.head = None;
        }
        self.sealed.is_empty() && self.head.is_none() && self.last_slot.is_some()
    }

    /// The blocks that may hold samples in slots `from..=to`, the head copied as a sealed-like
    /// block, so they decode without holding the series' lock.
    pub(crate) fn blocks(&self, from: u64, to: u64, steps: u64) -> Vec<Block> {
        let overlaps = |number: u64| {
            let first = number.saturating_mul(steps);
            first <= to && first.saturating_add(steps) > from
        };
        let mut out: Vec<Block> = self
            .sealed
            .iter()
            .filter(|b| overlaps(b.number))
            .cloned()
            .collect();
        if let Some(head) = self.head.as_ref().filter(|h| overlaps(h.number)) {
            out.push(head.snapshot());
        }
        out
    }

    /// Every block, the head last, for snapshots.
    pub(crate) fn all_blocks(&self) -> Vec<Block> {
        self.blocks(0, u64::MAX, 1)
    }

    /// Rebuilds a series from blocks read back from a snapshot, oldest first. The last one
    /// becomes the head again (re-encoded from its samples), so appends continue in it.
    pub(crate) fn from_blocks(mut blocks: Vec<Block>, steps: u64) -> Result<Self, CodecError> {
        let mut data = SeriesData::default();
        let Some(last) = blocks.pop() else { return Ok(data) };
        for block in &blocks {
            block.check(steps)?;
        }
        data.sealed = blocks.into();
        let mut slot = None;
        last.decode(steps, |s, v| {
            slot = Some(s);
            match &mut data.head {
                Some(head) => head.push((s % steps) as u16, v),
                None => data.head = Some(Head::new(s / steps, (s % steps) as u16, v, last.words.len())),
            }
        })?;
        data.last_slot = slot;
        Ok(data)
    }

    pub(crate) fn samples(&self) -> u64 {
        let sealed: u64 = self.sealed.iter().map(|b| u64::from(b.samples)).sum();
        sealed + self.head.as_ref().map_or(0, |h| u64::from(h.samples))
    }

    /// Heap bytes held (blocks, the head's buffer, the block list).
    pub(crate) fn heap_bytes(&self) -> usize {
        let sealed: usize = self.sealed.iter().map(|b| b.words.len() * 8 + ARC_HEADER).sum();
        let head = self
            .head
            .as_ref()
            .map_or(0, |h| h.encoder.bits().capacity_bytes());
        sealed + head + self.sealed.capacity() * size_of::<Block>()
    }
}

impl Block {
    /// Calls `f(slot, value)` for each sample, in order.
    pub(crate) fn decode(&self, steps: u64, mut f: impl FnMut(u64, f64)) -> Result<(), CodecError> {
        let first = self
            .number
            .saturating_mul(steps)
            .saturating_add(u64::from(self.start));
        let end = self.number.saturating_add(1).saturating_mul(steps);
        let mut samples = 0u64;
        let held = decode_all(&self.words, u64::from(self.len_bits), |step, v| {
            let slot = first.saturating_add(step);
            if slot < end {
                f(slot, v);
                samples += 1;
            }
        })?;
        if first.saturating_add(held) > end {
            return Err(CodecError::new("more steps than a block holds"));
        }
        if samples != u64::from(self.samples) {
            return Err(CodecError::new("sample count does not match the block header"));
        }
        Ok(())
    }

    /// Decodes without keeping anything: whether the block is sound.
    pub(crate) fn check(&self, steps: u64) -> Result<(), CodecError> {
        if u64::from(self.start) >= steps {
            return Err(CodecError::new("first sample beyond the block"));
        }
        self.decode(steps, |_, _| {})
    }
}

impl Head {
    fn new(number: u64, offset: u16, value: f64, capacity: usize) -> Self {
        Head {
            number,
            start: offset,
            last: offset,
            samples: 1,
            encoder: Encoder::with_capacity(value, false, capacity),
        }
    }

    fn push(&mut self, offset: u16, value: f64) {
        for _ in self.last + 1..offset {
            self.encoder.skip();
        }
        self.encoder.push(value);
        self.last = offset;
        self.samples += 1;
    }

    /// The finished block, in whichever mode encodes it shorter.
    fn seal(self) -> Block {
        let bits = self.encoder.bits();
        let shorter = (!self.encoder.is_float())
            .then(|| reencode_float(bits.words(), bits.len()))
            .flatten()
            .filter(|float| float.bits().len() < bits.len());
        let bits = shorter.as_ref().map_or(bits, |float| float.bits());
        Block {
            number: self.number,
            start: self.start,
            samples: self.samples,
            len_bits: bits.len() as u32,
            words: bits.words().into(),
        }
    }

    fn snapshot(&self) -> Block {
        let bits = self.encoder.bits();
        Block {
            number: self.number,
            start: self.start,
            samples: self.samples,
            len_bits: bits.len() as u32,
            words: bits.words().into(),
        }
    }
}

/// The two reference counts in front of an `Arc`'s data.
const ARC_HEADER: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: u64 = 360;

    fn collect(data: &SeriesData, from: u64, to: u64) -> Vec<(u64, f64)> {
        let mut out = Vec::new();
        for block in data.blocks(from, to, STEPS) {
            block.decode(STEPS, |s, v| out.push((s, v))).expect("decodes");
        }
        out.retain(|(s, _)| (from..=to).contains(s));
        out
    }

    #[test]
    fn appends_across_blocks_with_gaps_read_back() {
        let mut data = SeriesData::default();
        let samples: Vec<(u64, f64)> = (0..2000u64)
            .filter(|s| s % 7 != 3)
            .map(|s| (1_000_000 + s, (s as f64) * 0.5))
            .collect();
        for (slot, v) in &samples {
            data.append(*slot, *v, STEPS).expect("newer");
        }
        assert_eq!(collect(&data, 0, u64::MAX), samples);
        assert_eq!(data.samples(), samples.len() as u64);
        let window = collect(&data, 1_000_501, 1_000_900);
        assert_eq!(window.first().map(|s| s.0), Some(1_000_501));
        assert_eq!(window.last().map(|s| s.0), Some(1_000_900));
    }

    #[test]
    fn old_and_repeated_slots_are_refused() {
        let mut data = SeriesData::default();
        data.append(10, 1.0, STEPS).expect("first");
        assert_eq!(data.append(10, 2.0, STEPS), Err(NotNewer { last_slot: 10 }));
        assert_eq!(data.append(9, 2.0, STEPS), Err(NotNewer { last_slot: 10 }));
        data.append(11, 2.0, STEPS).expect("newer");
    }

    #[test]
    fn retention_drops_whole_blocks() {
        let mut data = SeriesData::default();
        for slot in 0..(STEPS * 3) {
            data.append(slot, 1.0, STEPS).expect("newer");
        }
        assert!(!data.drop_before(STEPS + 5, STEPS));
        assert_eq!(collect(&data, 0, u64::MAX).first().map(|s| s.0), Some(STEPS));
        assert!(data.drop_before(STEPS * 3, STEPS), "everything is older");
    }

    #[test]
    fn a_rebuilt_series_keeps_appending() {
        let mut data = SeriesData::default();
        for slot in 0..500 {
            data.append(slot, slot as f64, STEPS).expect("newer");
        }
        let mut rebuilt = SeriesData::from_blocks(data.all_blocks(), STEPS).expect("sound");
        assert_eq!(rebuilt.append(499, 0.0, STEPS), Err(NotNewer { last_slot: 499 }));
        rebuilt.append(500, 500.0, STEPS).expect("newer");
        let expected: Vec<(u64, f64)> = (0..=500).map(|s| (s, s as f64)).collect();
        assert_eq!(collect(&rebuilt, 0, u64::MAX), expected);
    }
}
