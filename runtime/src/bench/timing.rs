//! Wall-clock timing of prefill and decode on a loaded CPU model (the protocol of
//! llama.cpp's `llama-bench`), the process's peak resident memory, and the small helpers
//! both benchmarks share: the fixed pseudo-random tokens they feed, the median they report
//! and the check that a timed run computed finite logits.

use super::{BenchError, Step};
use crate::exec::cpu::{CpuModel, KvState, Phase};
use std::time::Instant;

/// The peak resident set size of this process so far (`VmHWM`), or `None` where
/// `/proc/self/status` does not say (not Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib_field(&status, "VmHWM:")
}

/// The current resident set size (`VmRSS`), or `None` off Linux.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib_field(&status, "VmRSS:")
}

/// Resets the peak resident set size to the current one (Linux `clear_refs` value 5);
/// false where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The value of a `Name:   1234 kB` line of `/proc/self/status`, in bytes.
fn parse_kib_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `n` pseudo-random token ids below `vocab` from a fixed seed (xorshift64*), so that
/// every run feeds the same tokens.
pub fn random_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed | 1;
    let vocab = vocab.clamp(1, u32::MAX as usize) as u64;
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            ((r >> 32) % vocab) as u32
        })
        .collect()
}

/// Seconds per repetition of each timed phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timings {
    /// One prefill of the whole prompt from an empty cache, per repetition.
    pub prefill_s: Vec<f64>,
    /// All decode steps from an empty cache, per repetition.
    pub decode_s: Vec<f64>,
}

/// Times `model`: a warm-up (a short prefill and a few decode steps, so that every weight
/// page and every kernel has been touched), then `repeats` times a prefill of `prompt`
/// tokens from an empty cache and `gen` single-token decode steps from an empty cache
/// (the way llama.cpp's `llama-bench` measures `pp` and `tg`). Logits that are not finite
/// fail the run (checked after the clock stops).
pub fn time_model(
    model: &mut CpuModel<'_>,
    vocab: usize,
    prompt: usize,
    gen: usize,
    repeats: usize,
) -> Result<Timings, BenchError> {
    check_counts(prompt, gen, repeats)?;
    let prompt_tokens = random_tokens(prompt, vocab, 0x5eed_0001);
    let gen_tokens = random_tokens(gen, vocab, 0x5eed_0002);
    let mut cache: KvState = model.new_cache();
    model
        .run(Phase::Prefill, &mut cache, &prompt_tokens[..prompt.min(8)])
        .map_err(|e| Step::WarmUpPrefill.failed(e))?;
    for &t in gen_tokens.iter().take(4) {
        model
            .run(Phase::Decode, &mut cache, &[t])
            .map_err(|e| Step::WarmUpDecode.failed(e))?;
    }
    let mut timings = Timings::default();
    for r in 0..repeats {
        cache.clear();
        let start = Instant::now();
        let logits = model
            .run(Phase::Prefill, &mut cache, &prompt_tokens)
            .map_err(|e| Step::Prefill { repetition: r }.failed(e))?;
        timings.prefill_s.push(start.elapsed().as_secs_f64());
        check_finite(&logits, Phase::Prefill)?;

        cache.clear();
        let start = Instant::now();
        for (i, &t) in gen_tokens.iter().enumerate() {
            let logits = model.run(Phase::Decode, &mut cache, &[t]).map_err(|e| {
                Step::Decode {
                    step: i,
                    repetition: r,
                }
                .failed(e)
            })?;
            if i + 1 == gen_tokens.len() {
                check_finite(&logits, Phase::Decode)?;
            }
        }
        timings.decode_s.push(start.elapsed().as_secs_f64());
    }
    Ok(timings)
}

/// Refuses a run with nothing to time.
pub(super) fn check_counts(prompt: usize, gen: usize, repeats: usize) -> Result<(), BenchError> {
    if prompt == 0 || gen == 0 || repeats == 0 {
        return Err(BenchError::EmptyRun {
            prompt,
            gen,
            repeats,
        });
    }
    Ok(())
}

/// An error when the logits of `phase` hold a NaN or an infinity: numbers from a broken
/// run are not worth timing.
pub fn check_finite(logits: &[f32], phase: Phase) -> Result<(), BenchError> {
    match logits.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(BenchError::NonFinite {
            phase,
            index,
            value: logits[index],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_logits_are_refused() {
        assert!(check_finite(&[1.0, -2.0], Phase::Prefill).is_ok());
        let e = check_finite(&[1.0, f32::NAN], Phase::Decode).expect_err("NaN");
        assert_eq!(
            e.to_string(),
            "decode: logit 1 is NaN (the run is broken; its timing would mean nothing)"
        );
    }

    #[test]
    fn empty_runs_are_refused_with_the_counts() {
        assert!(check_counts(1, 1, 1).is_ok());
        let e = check_counts(8, 0, 3).expect_err("no decode steps");
        assert_eq!(
            e.to_string(),
            "the prompt, the generated length and the repetitions must be at least 1 (found \
             8, 0 and 3)"
        );
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn status_fields_parse_in_bytes() {
        let status = "Name:\tarchc\nVmHWM:\t  2048 kB\nVmRSS:\t    12 kB\n";
        assert_eq!(parse_kib_field(status, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(parse_kib_field(status, "VmRSS:"), Some(12 * 1024));
        assert_eq!(parse_kib_field(status, "VmPeak:"), None);
        assert_eq!(parse_kib_field("VmHWM: lots kB", "VmHWM:"), None);
    }

    #[test]
    fn random_tokens_are_fixed_and_in_range() {
        let a = random_tokens(1000, 7, 42);
        assert_eq!(a, random_tokens(1000, 7, 42));
        assert!(a.iter().all(|&t| t < 7));
        // Every id of a small vocabulary shows up: the generator is not stuck.
        for id in 0..7 {
            assert!(a.contains(&id), "id {id} never drawn");
        }
        assert_ne!(random_tokens(16, 1000, 1), random_tokens(16, 1000, 2));
    }
}
