//! The compressed encoding of one block of one series: the samples of consecutive steps.
//!
//! # Why this encoding
//!
//! The store samples on a fixed step, so a sample's timestamp is implied by its position in the
//! block: no timestamp is stored at all, where Gorilla spends at least a bit per sample on its
//! delta-of-delta. A step without a sample costs one code in the stream (3 or 6 bits); steps after
//! the last sample cost nothing. Values get one of two encodings, chosen per block:
//!
//! - **Decimal integers** (*int mode*): a value that is exactly `n / 10^s` for an integer
//!   `|n| ≤ 2^53` and a scale `0 ≤ s ≤ 9` (counts, bytes, pids, and seconds read from a
//!   microsecond or nanosecond clock) is stored as the delta-of-delta of `n`: 1 bit when it is
//!   0 (a steady counter, a constant gauge), 9 or 15 bits when small; a larger one (a noisy
//!   counter) takes its significant bits plus 4, reusing the width of the previous large one
//!   when it fits, as Gorilla reuses its XOR window, or plus 11 to set a new width. The scale only grows
//!   within a block (a code rescales the running state, which is exact because IEEE division is
//!   correctly rounded); a value with no such form switches the block to float mode for good.
//! - **Floats** (*float mode*), Gorilla's XOR coding: 1 bit when the value repeats, else the
//!   meaningful bits of the XOR with the previous value, reusing the previous window of leading
//!   and trailing zeros when it fits. It wins for page-aligned byte counts, whose XORs are narrow.
//!
//! A block starts in int mode when its first value has a decimal form; when the block is sealed
//! it is also encoded in float mode, and the shorter encoding is kept. Every value round-trips
//! bit for bit, NaN payloads, infinities and -0.0 included.
//!
//! With the step implied, a constant series costs 1 bit per sample, a steady counter 1 to 10:
//! the mix measured in `tests/memory.rs` holds well under the 2 bytes per sample the issue asks for.
//!
//! # Layout
//!
//! First sample: `1` + 4-bit scale + 64-bit `n` (int mode), or `0` + 64-bit value (float mode).
//! Then one code per step, in int mode (`1ⁿ0` is n ones then a zero):
//!
//! | code | meaning |
//! |---|---|
//! | `0` | delta-of-delta 0 |
//! | `10` + 7 bits, `110` + 12 bits | signed delta-of-delta |
//! | `1110` + width bits | zigzag-encoded delta-of-delta in the last width set |
//! | `11110` + 6-bit width-1 + bits | zigzag-encoded delta-of-delta, setting the width |
//! | `111110` | no sample this step |
//! | `1111110` + 4 bits | rescale to a larger scale; a sample code follows |
//! | `1111111` | switch to float mode; a float sample code follows |
//!
//! and in float mode:
//!
//! | code | meaning |
//! |---|---|
//! | `0` | same value |
//! | `10` + bits | XOR within the previous leading/trailing window |
//! | `110` + 5-bit leading + 6-bit length-1 + bits | XOR with a new window |
//! | `111` | no sample this step |

use super::bits::{BitReader, BitWriter};

/// Encodes one block, sample by sample.
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    bits: BitWriter,
    mode: Mode,
}

/// Decodes a block written by an [`Encoder`]; never panics on damaged input.
pub(crate) struct Decoder<'a> {
    bits: BitReader<'a>,
    mode: Option<Mode>,
}

/// One step of a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step {
    Sample(f64),
    Skip,
}

/// The stream does not decode: damaged or not a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("compressed block is damaged: {0}")]
pub(crate) struct CodecError(&'static str);

impl CodecError {
    pub(crate) fn new(reason: &'static str) -> Self {
        CodecError(reason)
    }
}

impl Encoder {
    /// Starts a block with its first sample, in int mode when the value has a decimal form and
    /// `float_only` is false.
    pub(crate) fn new(first: f64, float_only: bool) -> Self {
        Self::with_capacity(first, float_only, 0)
    }

    /// As [`Encoder::new`], with room for `words` 64-bit words before the buffer grows.
    pub(crate) fn with_capacity(first: f64, float_only: bool, words: usize) -> Self {
        let mut bits = BitWriter::with_capacity(words);
        let int = if float_only {
            None
        } else {
            (0..=MAX_SCALE).find_map(|s| to_int(first, s).map(|n| (s, n)))
        };
        let mode = match int {
            Some((scale, n)) => {
                bits.bit(true);
                bits.write(u64::from(scale), 4);
                bits.write(n as u64, 64);
                Mode::Int {
                    scale,
                    prev: n,
                    delta: 0,
                    width: 0,
                }
            }
            None => {
                bits.bit(false);
                bits.write(first.to_bits(), 64);
                Mode::float(first)
            }
        };
        Encoder { bits, mode }
    }

    /// Records the next step's sample.
    pub(crate) fn push(&mut self, v: f64) {
        match self.mode {
            Mode::Int { scale, .. } => {
                if let Some(n) = to_int(v, scale) {
                    self.push_int(n);
                } else if let Some((to, n)) = self.rescale_for(v) {
                    self.bits.ones(RESCALE, INT_MAX_CODE);
                    self.bits.write(u64::from(to), 4);
                    self.mode = self.mode.rescaled(to);
                    self.push_int(n);
                } else {
                    self.bits.ones(SWITCH, INT_MAX_CODE);
                    self.mode = Mode::float(self.mode.value());
                    self.push_float(v);
                }
            }
            Mode::Float { .. } => self.push_float(v),
        }
    }

    /// Records that the next step has no sample.
    pub(crate) fn skip(&mut self) {
        match self.mode {
            Mode::Int { .. } => self.bits.ones(INT_SKIP, INT_MAX_CODE),
            Mode::Float { .. } => self.bits.ones(FLOAT_SKIP, FLOAT_SKIP),
        }
    }

    pub(crate) fn is_float(&self) -> bool {
        matches!(self.mode, Mode::Float { .. })
    }

    pub(crate) fn bits(&self) -> &BitWriter {
        &self.bits
    }

    fn push_int(&mut self, n: i64) {
        let Mode::Int {
            prev, delta, width, ..
        } = &mut self.mode
        else {
            return;
        };
        let d = n.wrapping_sub(*prev);
        let dod = d.wrapping_sub(*delta);
        *prev = n;
        *delta = d;
        if dod == 0 {
            self.bits.bit(false);
            return;
        }
        match SMALL_DOD_BITS.iter().position(|&b| fits(dod, b)) {
            Some(class) => {
                self.bits.ones(class as u32 + 1, INT_MAX_CODE);
                self.bits.write(dod as u64, SMALL_DOD_BITS[class]);
            }
            None => {
                let zigzag = ((dod << 1) ^ (dod >> 63)) as u64;
                let len = 64 - zigzag.leading_zeros();
                let reuse = u32::from(*width);
                if reuse >= len && REUSE_DOD + 1 + reuse <= WIDE_DOD + 1 + 6 + len {
                    self.bits.ones(REUSE_DOD, INT_MAX_CODE);
                    self.bits.write(zigzag, reuse);
                } else {
                    self.bits.ones(WIDE_DOD, INT_MAX_CODE);
                    self.bits.write(u64::from(len - 1), 6);
                    self.bits.write(zigzag, len);
                    *width = len as u8;
                }
            }
        }
    }

    fn push_float(&mut self, v: f64) {
        let Mode::Float {
            prev,
            leading,
            trailing,
        } = &mut self.mode
        else {
            return;
        };
        let xor = v.to_bits() ^ *prev;
        *prev = v.to_bits();
        if xor == 0 {
            self.bits.bit(false);
            return;
        }
        let lz = xor.leading_zeros().min(31) as u8;
        let tz = xor.trailing_zeros() as u8;
        if *leading != NO_WINDOW && lz >= *leading && tz >= *trailing {
            self.bits.ones(1, FLOAT_SKIP);
            self.bits
                .write(xor >> *trailing, u32::from(64 - *leading - *trailing));
        } else {
            let significant = 64 - lz - tz;
            self.bits.ones(2, FLOAT_SKIP);
            self.bits.write(u64::from(lz), 5);
            self.bits.write(u64::from(significant - 1), 6);
            self.bits.write(xor >> tz, u32::from(significant));
            *leading = lz;
            *trailing = tz;
        }
    }

    /// A larger scale at which `v` has a decimal form and the running state still fits.
    fn rescale_for(&self, v: f64) -> Option<(u8, i64)> {
        let Mode::Int { scale, prev, .. } = self.mode else {
            return None;
        };
        (scale + 1..=MAX_SCALE).find_map(|to| {
            let n = to_int(v, to)?;
            let p = prev.checked_mul(POW10_I64[usize::from(to - scale)])?;
            (p.unsigned_abs() <= INT_LIMIT).then_some((to, n))
        })
    }
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(words: &'a [u64], len: u64) -> Self {
        Decoder {
            bits: BitReader::new(words, len),
            mode: None,
        }
    }

    /// The next step, `None` at the end of the block.
    #[inline]
    pub(crate) fn next_step(&mut self) -> Result<Option<Step>, CodecError> {
        if self.bits.at_end() {
            return Ok(None);
        }
        let Some(mode) = self.mode else {
            return self.first().map(Some);
        };
        match mode {
            Mode::Int { .. } => self.int_step(),
            Mode::Float { .. } => self.float_step(),
        }
        .map(Some)
    }

    fn first(&mut self) -> Result<Step, CodecError> {
        let mode = if self.read(1)? == 1 {
            let scale = self.read(4)? as u8;
            if scale > MAX_SCALE {
                return Err(CodecError("scale out of range"));
            }
            Mode::Int {
                scale,
                prev: self.read(64)? as i64,
                delta: 0,
                width: 0,
            }
        } else {
            Mode::float(f64::from_bits(self.read(64)?))
        };
        self.mode = Some(mode);
        Ok(Step::Sample(mode.value()))
    }

    #[inline]
    fn int_step(&mut self) -> Result<Step, CodecError> {
        let code = self.ones(INT_MAX_CODE)?;
        let dod = match code {
            0 => 0,
            1 | 2 => {
                let bits = SMALL_DOD_BITS[code as usize - 1];
                let raw = self.read(bits)?;
                ((raw << (64 - bits)) as i64) >> (64 - bits)
            }
            REUSE_DOD => match self.mode {
                Some(Mode::Int { width, .. }) if width > 0 => unzigzag(self.read(u32::from(width))?),
                _ => return Err(CodecError("delta width reused before one was set")),
            },
            WIDE_DOD => {
                let len = self.read(6)? as u32 + 1;
                let dod = unzigzag(self.read(len)?);
                if let Some(Mode::Int { width, .. }) = &mut self.mode {
                    *width = len as u8;
                }
                dod
            }
            INT_SKIP => return Ok(Step::Skip),
            RESCALE => {
                let to = self.read(4)? as u8;
                match self.mode {
                    Some(m @ Mode::Int { scale, .. }) if to > scale && to <= MAX_SCALE => {
                        self.mode = Some(m.rescaled(to));
                    }
                    _ => return Err(CodecError("rescale to a smaller or unknown scale")),
                }
                return self.int_step();
            }
            _ => {
                let value = self.mode.map_or(0.0, |m| m.value());
                self.mode = Some(Mode::float(value));
                return self.float_step();
            }
        };
        let Some(Mode::Int {
            scale, prev, delta, ..
        }) = &mut self.mode
        else {
            return Err(CodecError("int code outside int mode"));
        };
        *delta = delta.wrapping_add(dod);
        *prev = prev.wrapping_add(*delta);
        Ok(Step::Sample(int_value(*prev, *scale)))
    }

    #[inline]
    fn float_step(&mut self) -> Result<Step, CodecError> {
        let code = self.ones(FLOAT_SKIP)?;
        if code == FLOAT_SKIP {
            return Ok(Step::Skip);
        }
        let (xor, window) = match (code, self.mode) {
            (0, _) => (0, None),
            (
                1,
                Some(Mode::Float {
                    leading, trailing, ..
                }),
            ) if leading != NO_WINDOW => {
                let significant = 64 - u32::from(leading) - u32::from(trailing);
                (self.read(significant)? << trailing, None)
            }
            (2, _) => {
                let lz = self.read(5)? as u8;
                let significant = self.read(6)? as u8 + 1;
                if lz + significant > 64 {
                    return Err(CodecError("xor window wider than 64 bits"));
                }
                let tz = 64 - lz - significant;
                (self.read(u32::from(significant))? << tz, Some((lz, tz)))
            }
            _ => return Err(CodecError("xor window reused before one was set")),
        };
        let Some(Mode::Float {
            prev,
            leading,
            trailing,
        }) = &mut self.mode
        else {
            return Err(CodecError("float code outside float mode"));
        };
        *prev ^= xor;
        if let Some((lz, tz)) = window {
            *leading = lz;
            *trailing = tz;
        }
        Ok(Step::Sample(f64::from_bits(*prev)))
    }

    #[inline(always)]
    fn read(&mut self, n: u32) -> Result<u64, CodecError> {
        self.bits.read(n).ok_or(CodecError("ends inside a sample"))
    }

    #[inline(always)]
    fn consume(&mut self, n: u32) -> Result<(), CodecError> {
        self.bits.consume(n).ok_or(CodecError("ends inside a sample"))
    }

    #[inline(always)]
    fn ones(&mut self, max: u32) -> Result<u32, CodecError> {
        self.bits.ones(max).ok_or(CodecError("ends inside a code"))
    }
}

/// Decodes a whole block, calling `f(step, value)` for each sample (`step` counts from the
/// block's first sample); returns how many steps it holds. The same as calling
/// [`Decoder::next_step`] to the end, with the running state in locals: queries spend most of
/// their time here.
pub(crate) fn decode_all(words: &[u64], len: u64, mut f: impl FnMut(u64, f64)) -> Result<u64, CodecError> {
    let mut d = Decoder::new(words, len);
    if d.bits.at_end() {
        return Ok(0);
    }
    if let Step::Sample(v) = d.first()? {
        f(0, v);
    }
    let mut step = 1;
    let mut code_due = false;
    if let Some(Mode::Int {
        mut scale,
        mut prev,
        mut delta,
        mut width,
    }) = d.mode
    {
        loop {
            if !code_due && d.bits.at_end() {
                return Ok(step);
            }
            code_due = false;
            // Fast path: the common codes decoded from one 64-bit window.
            let w = d.bits.peek();
            let fast = match w.leading_ones() {
                0 => Some((1, 0)),
                1 => Some((9, sign_extend((w << 2) >> 57, 7))),
                2 => Some((15, sign_extend((w << 3) >> 52, 12))),
                REUSE_DOD if (1..=60).contains(&width) => {
                    let width = u32::from(width);
                    Some((4 + width, unzigzag((w << 4) >> (64 - width))))
                }
                WIDE_DOD => {
                    let len = ((w << 5) >> 58) as u32 + 1;
                    (len <= 53).then(|| (11 + len, unzigzag((w << 11) >> (64 - len))))
                }
                _ => None,
            };
            if let Some((used, dod)) = fast {
                d.consume(used)?;
                if w.leading_ones() == WIDE_DOD {
                    width = (used - 11) as u8;
                }
                delta = delta.wrapping_add(dod);
                prev = prev.wrapping_add(delta);
                f(step, int_value(prev, scale));
                step += 1;
                continue;
            }
            let dod = match d.ones(INT_MAX_CODE)? {
                0 => 0,
                1 => sign_extend(d.read(7)?, 7),
                2 => sign_extend(d.read(12)?, 12),
                REUSE_DOD if width > 0 => unzigzag(d.read(u32::from(width))?),
                REUSE_DOD => return Err(CodecError("delta width reused before one was set")),
                WIDE_DOD => {
                    let len = d.read(6)? as u32 + 1;
                    width = len as u8;
                    unzigzag(d.read(len)?)
                }
                INT_SKIP => {
                    step += 1;
                    continue;
                }
                RESCALE => {
                    let to = d.read(4)? as u8;
                    if to <= scale || to > MAX_SCALE {
                        return Err(CodecError("rescale to a smaller or unknown scale"));
                    }
                    let m = POW10_I64[usize::from(to - scale)];
                    (prev, delta, scale) = (prev.wrapping_mul(m), delta.wrapping_mul(m), to);
                    code_due = true;
                    continue;
                }
                _ => {
                    d.mode = Some(Mode::float(int_value(prev, scale)));
                    code_due = true;
                    break;
                }
            };
            delta = delta.wrapping_add(dod);
            prev = prev.wrapping_add(delta);
            f(step, int_value(prev, scale));
            step += 1;
        }
    }
    let Some(Mode::Float {
        mut prev,
        mut leading,
        mut trailing,
    }) = d.mode
    else {
        return Ok(step);
    };
    loop {
        if !code_due && d.bits.at_end() {
            return Ok(step);
        }
        code_due = false;
        // Fast path: the common codes decoded from one 64-bit window.
        let w = d.bits.peek();
        let fast = match w.leading_ones() {
            0 => Some((1, 0, leading, trailing)),
            1 if leading != NO_WINDOW && leading + trailing >= 2 => {
                let significant = 64 - u32::from(leading) - u32::from(trailing);
                Some((
                    2 + significant,
                    ((w << 2) >> (64 - significant)) << trailing,
                    leading,
                    trailing,
                ))
            }
            2 => {
                let lz = ((w << 3) >> 59) as u32;
                let significant = ((w << 8) >> 58) as u32 + 1;
                if lz + significant > 64 {
                    return Err(CodecError("xor window wider than 64 bits"));
                }
                let tz = 64 - lz - significant;
                (significant <= 50).then(|| {
                    (
                        14 + significant,
                        ((w << 14) >> (64 - significant)) << tz,
                        lz as u8,
                        tz as u8,
                    )
                })
            }
            _ => None,
        };
        if let Some((used, xor, lz, tz)) = fast {
            d.consume(used)?;
            prev ^= xor;
            (leading, trailing) = (lz, tz);
            f(step, f64::from_bits(prev));
            step += 1;
            continue;
        }
        match d.ones(FLOAT_SKIP)? {
            0 => {}
            1 if leading != NO_WINDOW => {
                let significant = 64 - u32::from(leading) - u32::from(trailing);
                prev ^= d.read(significant)? << trailing;
            }
            1 => return Err(CodecError("xor window reused before one was set")),
            2 => {
                let lz = d.read(5)? as u8;
                let significant = d.read(6)? as u8 + 1;
                if lz + significant > 64 {
                    return Err(CodecError("xor window wider than 64 bits"));
                }
                (leading, trailing) = (lz, 64 - lz - significant);
                prev ^= d.read(u32::from(significant))? << trailing;
            }
            _ => {
                step += 1;
                continue;
            }
        }
        f(step, f64::from_bits(prev));
        step += 1;
    }
}

/// Re-encodes a block's steps in float mode; `None` when the block does not decode.
pub(crate) fn reencode_float(words: &[u64], len: u64) -> Option<Encoder> {
    let mut decoder = Decoder::new(words, len);
    let Ok(Some(Step::Sample(first))) = decoder.next_step() else {
        return None;
    };
    let mut encoder = Encoder::new(first, true);
    loop {
        match decoder.next_step() {
            Ok(Some(Step::Sample(v))) => encoder.push(v),
            Ok(Some(Step::Skip)) => encoder.skip(),
            Ok(None) => return Some(encoder),
            Err(_) => return None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `width`: the bit width of the last wide delta-of-delta, 0 before the first.
    Int {
        scale: u8,
        prev: i64,
        delta: i64,
        width: u8,
    },
    Float {
        prev: u64,
        leading: u8,
        trailing: u8,
    },
}

impl Mode {
    fn float(value: f64) -> Self {
        Mode::Float {
            prev: value.to_bits(),
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    fn value(self) -> f64 {
        match self {
            Mode::Int { scale, prev, .. } => int_value(prev, scale),
            Mode::Float { prev, .. } => f64::from_bits(prev),
        }
    }

    /// The same running state at scale `to` (> the current one); the encoder has checked that
    /// the values stay in range, the decoder wraps as the encoder did.
    fn rescaled(self, to: u8) -> Self {
        match self {
            Mode::Int {
                scale,
                prev,
                delta,
                width,
            } => {
                let m = POW10_I64[usize::from(to.saturating_sub(scale).min(MAX_SCALE))];
                Mode::Int {
                    scale: to,
                    prev: prev.wrapping_mul(m),
                    delta: delta.wrapping_mul(m),
                    width,
                }
            }
            float => float,
        }
    }
}

const MAX_SCALE: u8 = 9;
const INT_LIMIT: u64 = 1 << 53;
const POW10: [f64; 10] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
const POW10_I64: [i64; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];
/// Payload widths of the delta-of-delta classes `10` and `110`.
const SMALL_DOD_BITS: [u32; 2] = [7, 12];
/// `1110` + the zigzag-encoded delta-of-delta in as many bits as the last `WIDE_DOD` took.
const REUSE_DOD: u32 = 3;
/// `11110` + 6-bit length-1 + the zigzag-encoded delta-of-delta in that many bits.
const WIDE_DOD: u32 = 4;
const INT_SKIP: u32 = 5;
const RESCALE: u32 = 6;
const SWITCH: u32 = 7;
const INT_MAX_CODE: u32 = SWITCH;
const FLOAT_SKIP: u32 = 3;
const NO_WINDOW: u8 = u8::MAX;

/// `n` with `v == n / 10^scale` bit for bit, if there is one with `|n| ≤ 2^53`.
fn to_int(v: f64, scale: u8) -> Option<i64> {
    let scaled = v * POW10[usize::from(scale)];
    if scaled.is_nan() || scaled.abs() > INT_LIMIT as f64 {
        return None;
    }
    let n = scaled.round() as i64;
    (int_value(n, scale).to_bits() == v.to_bits()).then_some(n)
}

#[inline]
fn int_value(n: i64, scale: u8) -> f64 {
    n as f64 / POW10[usize::from(scale.min(MAX_SCALE))]
}

#[inline]
fn sign_extend(raw: u64, bits: u32) -> i64 {
    ((raw << (64 - bits)) as i64) >> (64 - bits)
}

#[inline]
fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

fn fits(v: i64, bits: u32) -> bool {
    bits >= 64 || (-(1i64 << (bits - 1))..(1i64 << (bits - 1))).contains(&v)
}

#[cfg(test)]
mod tests;
