//! The fuzz entry points on stable: seeded random bytes, plus mutations of
//! valid inputs, through every target. (libFuzzer runs them for real:
//! `cd fuzz && cargo +nightly fuzz run headers -- -max_total_time=60`.)

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SEEDS: &[&[u8]] = &[
    b"503\x00120\x00\x00true\x00{\"error\":{\"code\":\"context_length_exceeded\"}}",
    b"429\0Wed, 21 Oct 2015 07:28:00 GMT\x001500.5\x00false\x00",
    b"[router]\norder = [\"a\"]\n[providers.a.breaker]\nfailure_rate = 0.5\n",
    b"{\"providers\":{\"a\":{\"retry\":{\"max_attempts\":3}}}}",
    b"99999999H",
    b"1500m",
];

fn inputs(n: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    (0..n).map(move |i| {
        if i % 2 == 0 {
            let len = rng.random_range(0..64);
            (0..len).map(|_| rng.random()).collect()
        } else {
            let mut v = SEEDS[rng.random_range(0..SEEDS.len())].to_vec();
            for _ in 0..rng.random_range(1..6) {
                match rng.random_range(0..3) {
                    0 if !v.is_empty() => {
                        let i = rng.random_range(0..v.len());
                        v[i] = rng.random();
                    }
                    1 => {
                        let i = rng.random_range(0..=v.len());
                        v.insert(i, rng.random());
                    }
                    _ if !v.is_empty() => {
                        let i = rng.random_range(0..v.len());
                        v.remove(i);
                    }
                    _ => {}
                }
            }
            v
        }
    })
}

#[test]
fn headers_never_panic() {
    inputs(20_000).for_each(|i| tests::fuzz::headers(&i));
}

#[test]
fn grpc_headers_never_panic() {
    inputs(20_000).for_each(|i| tests::fuzz::grpc_headers(&i));
}

#[test]
fn config_never_panics() {
    inputs(5_000).for_each(|i| tests::fuzz::config(&i));
}

#[test]
fn grpc_timeout_never_panics() {
    inputs(20_000).for_each(|i| tests::fuzz::grpc_timeout(&i));
}
