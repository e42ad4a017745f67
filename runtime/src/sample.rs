//! Token sampling: greedy, temperature, top-k and top-p over one row of logits, driven by a
//! small seeded PRNG so that a seed reproduces a generation exactly on every machine.
//!
//! The order of the steps is HF transformers': temperature scales the logits, top-k keeps
//! the `k` most likely tokens, top-p keeps the smallest set of those whose probability
//! reaches `p`, and one token is drawn from what is left. Temperature 0 is greedy decoding
//! and ignores the other settings.

use std::fmt;

/// A setting that cannot mean anything, with the value given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleError {
    /// A negative, infinite or NaN temperature.
    Temperature(f32),
    /// A top-p outside `(0, 1]`.
    TopP(f32),
}

impl fmt::Display for SampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleError::Temperature(t) => write!(
                f,
                "temperature {t} is not allowed: use 0 for greedy decoding or a positive number such as 0.8"
            ),
            SampleError::TopP(p) => write!(
                f,
                "top-p {p} is not allowed: use a probability in (0, 1], 1 keeps every token"
            ),
        }
    }
}

impl std::error::Error for SampleError {}

/// xoshiro256** seeded through SplitMix64: fast, small, and fixed here so that a seed
/// means the same stream of numbers in every version of every dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut split = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [split(), split(), split(), split()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// 0 is greedy; otherwise logits are divided by it before the softmax.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1
    /// keeps all.
    pub top_p: f32,
    pub seed: u64,
}

impl SamplerConfig {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> SamplerConfig {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Refuses settings that cannot mean anything (negative or NaN temperature, top-p
    /// outside `(0, 1]`).
    pub fn validate(&self) -> Result<(), SampleError> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(SampleError::Temperature(t));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(SampleError::TopP(p));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// The index of the largest logit; the lowest index among equal ones, NaN never wins.
/// An empty or all-NaN row gives 0.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

/// The distribution a sampler with `config` draws from: `(token, probability)` pairs,
/// most likely first (ties by lower id), probabilities summing to 1. NaN logits are never
/// candidates. Greedy gives the argmax with probability 1.
pub fn candidates(logits: &[f32], config: &SamplerConfig) -> Vec<(u32, f64)> {
    if config.is_greedy() {
        return vec![(argmax(logits), 1.0)];
    }
    let t = f64::from(config.temperature);
    let mut c: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .map(|(i, &v)| (i as u32, f64::from(v) / t))
        .collect();
    if c.is_empty() {
        return vec![(0, 1.0)];
    }
    let order = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    // Selecting the top k before sorting keeps a 100k-token vocabulary cheap per step.
    if config.top_k > 0 && config.top_k < c.len() {
        c.select_nth_unstable_by(config.top_k - 1, order);
        c.truncate(config.top_k);
    }
    c.sort_by(order);
    // Softmax in f64 over the survivors, shifted by the maximum so nothing overflows.
    let max = c[0].1;
    if max == f64::INFINITY {
        // Infinite logits share all the mass.
        c.retain(|x| x.1 == f64::INFINITY);
        let n = c.len() as f64;
        return c.into_iter().map(|(i, _)| (i, 1.0 / n)).collect();
    }
    let mut sum = 0.0;
    for x in &mut c {
        x.1 = (x.1 - max).exp();
        sum += x.1;
    }
    for x in &mut c {
        x.1 /= sum;
    }
    let p = f64::from(config.top_p);
    if p < 1.0 {
        let mut acc = 0.0;
        let mut keep = c.len();
        for (i, x) in c.iter().enumerate() {
            acc += x.1;
            if acc >= p {
                keep = i + 1;
                break;
            }
        }
        c.truncate(keep);
        let kept: f64 = c.iter().map(|x| x.1).sum();
        for x in &mut c {
            x.1 /= kept;
        }
    }
    c
}

/// Chooses tokens from logits with a config and its own PRNG stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    rng: Rng,
}

impl Sampler {
    /// A sampler for `config`; errors when the settings are invalid (see
    /// [`SamplerConfig::validate`]).
    pub fn new(config: SamplerConfig) -> Result<Sampler, SampleError> {
        config.validate()?;
        Ok(Sampler {
            config,
            rng: Rng::new(config.seed),
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    /// The next token for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.config.is_greedy() {
            return argmax(logits);
        }
        let c = candidates(logits, &self.config);
        let r = self.rng.next_f64();
        let mut acc = 0.0;
        for &(id, p) in &c {
            acc += p;
            if r < acc {
                return id;
            }
        }
        // Rounding can leave the sum a hair below 1: the last candidate takes the rest.
        c.last().map_or(0, |x| x.0)
    }
}
