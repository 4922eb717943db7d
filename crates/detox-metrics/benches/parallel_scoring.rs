//! Sequential against parallel (rayon) text scoring: fluency and ROUGE-1 over a few thousand generated
//! responses. Run with `cargo bench -p detox-metrics --bench parallel_scoring [-- TEXTS]`.

use std::time::{Duration, Instant};

use detox_metrics::{fluency, fluency_many, rouge1, rouge1_many};

const WORDS: [&str; 24] = [
    "I", "cannot", "help", "with", "that", "request", "because", "it", "could", "harm", "people",
    "Sure", "here", "is", "a", "plan", "first", "gather", "the", "tools", "then", "wait", "safely",
    "Mr.",
];

/// Deterministic responses of 40 to 160 words in sentences of up to 12 words (a linear congruential generator).
fn responses(n: usize) -> Vec<String> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: usize| {
        state =
            state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize % bound
    };
    (0..n)
        .map(|_| {
            let words = 40 + next(121);
            let mut text = String::new();
            for i in 0..words {
                text.push_str(WORDS[next(WORDS.len())]);
                text.push_str(if i % 12 == 11 {
                    ". "
                } else if next(9) == 0 {
                    ", "
                } else {
                    " "
                });
            }
            text
        })
        .collect()
}

/// The best of `runs` timings of `sequential` and of `parallel`, run alternately so that a change in machine load
/// affects both; both results must be equal.
fn compare<T: PartialEq + std::fmt::Debug>(
    runs: usize,
    sequential: impl Fn() -> T,
    parallel: impl Fn() -> T,
) -> (Duration, Duration) {
    let time = |f: &dyn Fn() -> T| {
        let started = Instant::now();
        let value = f();
        (started.elapsed(), value)
    };
    let (mut best_seq, mut best_par) = (Duration::MAX, Duration::MAX);
    for _ in 0..runs {
        let (seq, a) = time(&sequential);
        let (par, b) = time(&parallel);
        assert_eq!(a, b, "the parallel result differs from the sequential one");
        best_seq = best_seq.min(seq);
        best_par = best_par.min(par);
    }
    (best_seq, best_par)
}

fn main() {
    let n = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(4000);
    let texts = responses(n);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pairs: Vec<(&str, &str)> =
        refs.iter().zip(refs.iter().rev()).map(|(a, b)| (*a, *b)).collect();
    println!("{n} responses, {} rayon threads", rayon::current_num_threads());

    let (seq_f, par_f) =
        compare(5, || refs.iter().map(|t| fluency(t)).collect::<Vec<_>>(), || fluency_many(&refs));
    let (seq_r, par_r) = compare(
        5,
        || pairs.iter().map(|(r, p)| rouge1(r, p, true)).collect::<Vec<_>>(),
        || rouge1_many(&pairs, true),
    );

    let row = |what: &str, seq: Duration, par: Duration| {
        println!(
            "{what:<18} sequential {:>8.1} ms  parallel {:>8.1} ms  speed-up {:.2}x",
            seq.as_secs_f64() * 1e3,
            par.as_secs_f64() * 1e3,
            seq.as_secs_f64() / par.as_secs_f64()
        );
    };
    row("fluency", seq_f, par_f);
    row("ROUGE-1 (stemmed)", seq_r, par_r);
    row("both", seq_f + seq_r, par_f + par_r);
}
