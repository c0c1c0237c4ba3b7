//! What the generator asks for: the operations of the contract ([`Op`]), the data set they run
//! on (keys spread over installations, values of a fixed size) and the request each draw makes.
//!
//! Key `k` (0 ≤ k < keys) is `k{k}` in installation `k % installations`, so every
//! installation holds the same number of keys and a uniform draw of `k` is a uniform draw of
//! both. Values are JSON objects `{"n": 0, "data": "…"}` whose compact encoding is exactly
//! the value size.

use std::fmt::Write as _;

use bytes::Bytes;
use clap::ValueEnum;
use http::{HeaderValue, Method, Uri};
use serde::{Deserialize, Serialize};

use crate::client::Req;

/// An operation (or a mix of them) the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `GET /v1/{store}/{key}` of a preloaded key.
    Get,
    /// `PUT /v1/{store}/{key}` of a preloaded key with a new value of the value size.
    Put,
    /// `PATCH /v1/{store}/{key}` with a small merge patch (`{"n": <seq>}`).
    Patch,
    /// `POST /v1/{store}/{key}/ops` with one `increment` of `n`.
    Ops,
    /// `POST /v1/batch`: an atomic batch of `--batch-size` PUTs in one installation.
    Batch,
    /// 90 % GET, 10 % PUT.
    Mix90,
    /// 50 % GET, 50 % PUT.
    Mix50,
    /// `GET` of `--path` without a token: for baselines such as a static file on nginx.
    Static,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Patch => "patch",
            Op::Ops => "ops",
            Op::Batch => "batch",
            Op::Mix90 => "mix90",
            Op::Mix50 => "mix50",
            Op::Static => "static",
        }
    }

    /// Whether the tool has to create apps, installations and records before running it.
    pub fn needs_preload(self) -> bool {
        self != Op::Static
    }
}

/// The data set: how many keys, in how many installations, of which value size, in which store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataSet {
    pub store: String,
    pub keys: usize,
    pub installations: usize,
    pub value_size: usize,
    /// The records are already in place from an earlier run against the same server: the
    /// preload only mints a token per installation.
    pub reuse: bool,
}

impl DataSet {
    pub fn key_name(k: usize) -> String {
        format!("k{k}")
    }

    /// The installation that holds key `k`.
    pub fn installation_of(&self, k: usize) -> usize {
        k % self.installations
    }

    /// A value whose compact JSON is exactly `value_size` bytes (at least the empty shape's
    /// 17 bytes), with `fill` as the data character.
    pub fn value_json(&self, fill: char) -> String {
        const SHAPE: usize = r#"{"n":0,"data":""}"#.len();
        let data_len = self.value_size.saturating_sub(SHAPE);
        let mut s = String::with_capacity(self.value_size);
        s.push_str(r#"{"n":0,"data":""#);
        s.extend(std::iter::repeat_n(fill, data_len));
        s.push_str(r#""}"#);
        s
    }
}

/// Everything a worker needs to make requests: precomputed paths, tokens and bodies.
pub struct Workload {
    pub op: Op,
    pub data: DataSet,
    pub batch_size: usize,
    record_uris: Vec<Uri>,
    ops_uris: Vec<Uri>,
    tokens: Vec<HeaderValue>,
    put_bodies: Vec<Bytes>,
    values: Vec<String>,
    static_uri: Uri,
    /// When set, draws only keys of these installations ([`Workload::only_installations`]).
    only: Option<Vec<usize>>,
}

impl Workload {
    /// `tokens[i]` is installation `i`'s `Authorization` header (empty for [`Op::Static`]).
    pub fn new(
        op: Op,
        data: DataSet,
        batch_size: usize,
        tokens: Vec<HeaderValue>,
        static_path: &str,
    ) -> anyhow::Result<Workload> {
        let mut record_uris = Vec::new();
        let mut ops_uris = Vec::new();
        if op.needs_preload() {
            anyhow::ensure!(
                tokens.len() == data.installations,
                "one token per installation"
            );
            for k in 0..data.keys {
                let name = DataSet::key_name(k);
                record_uris.push(format!("/v1/{}/{name}", data.store).parse()?);
                ops_uris.push(format!("/v1/{}/{name}/ops", data.store).parse()?);
            }
        }
        // A few different values, so that consecutive writes do not store the same bytes.
        let values: Vec<String> = "abcdefghijklmnop"
            .chars()
            .map(|c| data.value_json(c))
            .collect();
        let put_bodies = values
            .iter()
            .map(|v| Bytes::from(format!(r#"{{"value":{v}}}"#)))
            .collect();
        Ok(Workload {
            op,
            data,
            batch_size: batch_size.max(1),
            record_uris,
            ops_uris,
            tokens,
            put_bodies,
            values,
            static_uri: static_path.parse()?,
            only: None,
        })
    }

    /// Restricts the draws to keys of the installations in `only` (each index below
    /// `data.installations` and holding at least one key): an installation is drawn uniformly
    /// among them, then one of its keys uniformly. Without it every key is drawn uniformly.
    pub fn only_installations(mut self, only: Vec<usize>) -> anyhow::Result<Workload> {
        anyhow::ensure!(!only.is_empty(), "no installation to draw from");
        for &i in &only {
            anyhow::ensure!(
                i < self.data.installations && i < self.data.keys,
                "installation {i} holds no key"
            );
        }
        self.only = Some(only);
        Ok(self)
    }

    /// A key drawn uniformly, among all keys or among those of the allowed installations.
    fn draw_key(&self, rng: &mut Rng) -> usize {
        let Some(only) = &self.only else {
            return rng.below(self.data.keys as u64) as usize;
        };
        let n = self.data.installations;
        let i = only[rng.below(only.len() as u64) as usize];
        // Installation `i` holds keys i, i + n, i + 2n, … below `keys`.
        let held = (self.data.keys - i).div_ceil(n);
        i + n * rng.below(held as u64) as usize
    }

    /// The request for draw number `seq`, with randomness from `rng`.
    pub fn request(&self, rng: &mut Rng, seq: u64) -> Req {
        let op = match self.op {
            Op::Mix90 if rng.below(100) < 90 => Op::Get,
            Op::Mix50 if rng.below(100) < 50 => Op::Get,
            Op::Mix90 | Op::Mix50 => Op::Put,
            other => other,
        };
        if op == Op::Static {
            return Req::new(Method::GET, self.static_uri.clone());
        }
        let k = self.draw_key(rng);
        let token = &self.tokens[self.data.installation_of(k)];
        let uri = || self.record_uris[k].clone();
        match op {
            Op::Get => Req::new(Method::GET, uri()).token(token),
            Op::Put => {
                let body = self.put_bodies[seq as usize % self.put_bodies.len()].clone();
                Req::new(Method::PUT, uri())
                    .token(token)
                    .json("application/json", body)
            }
            Op::Patch => Req::new(Method::PATCH, uri())
                .token(token)
                .json("application/merge-patch+json", format!(r#"{{"n":{seq}}}"#)),
            Op::Ops => Req::new(Method::POST, self.ops_uris[k].clone())
                .token(token)
                .json(
                    "application/json",
                    r#"{"ops":[{"op":"increment","field":"n"}]}"#,
                ),
            Op::Batch => Req::new(Method::POST, Uri::from_static("/v1/batch"))
                .token(token)
                .json("application/json", self.batch_body(rng, k, seq)),
            Op::Mix90 | Op::Mix50 | Op::Static => unreachable!("resolved above"),
        }
    }

    /// An atomic batch of PUTs of keys of the installation that holds `k`.
    fn batch_body(&self, rng: &mut Rng, k: usize, seq: u64) -> String {
        let n = self.data.installations;
        let per_installation = self.data.keys.div_ceil(n);
        let installation = self.data.installation_of(k);
        let value = &self.values[seq as usize % self.values.len()];
        let mut body = String::with_capacity(self.batch_size * (value.len() + 64) + 32);
        body.push_str(r#"{"atomic":true,"ops":["#);
        for i in 0..self.batch_size {
            let mut key = installation + n * rng.below(per_installation as u64) as usize;
            if key >= self.data.keys {
                key = installation;
            }
            if i > 0 {
                body.push(',');
            }
            let _ = write!(
                body,
                r#"{{"op":"put","store":"{}","key":"k{key}","value":{value}}}"#,
                self.data.store
            );
        }
        body.push_str("]}");
        body
    }
}

/// SplitMix64: small, fast, and good enough to pick keys.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_exact_size() {
        for size in [20, 100, 1024, 4096] {
            let d = DataSet {
                store: "secrets".into(),
                keys: 1,
                installations: 1,
                value_size: size,
                reuse: false,
            };
            let v = d.value_json('x');
            assert_eq!(v.len(), size);
            serde_json::from_str::<serde_json::Value>(&v).unwrap();
        }
    }

    #[test]
    fn batch_bodies_are_json_and_stay_in_one_installation() {
        let data = DataSet {
            store: "secrets".into(),
            keys: 10,
            installations: 3,
            value_size: 64,
            reuse: false,
        };
        let tokens = (0..3)
            .map(|i| HeaderValue::from_str(&format!("Bearer t{i}")).unwrap())
            .collect();
        let w = Workload::new(Op::Batch, data, 5, tokens, "/").unwrap();
        let mut rng = Rng::new(1);
        for seq in 0..50 {
            let k = 4;
            let body: serde_json::Value =
                serde_json::from_str(&w.batch_body(&mut rng, k, seq)).unwrap();
            for op in body["ops"].as_array().unwrap() {
                let key: usize = op["key"].as_str().unwrap()[1..].parse().unwrap();
                assert!(key < 10);
                assert_eq!(key % 3, 1);
            }
        }
    }

    fn data(keys: usize, installations: usize) -> DataSet {
        DataSet {
            store: "secrets".into(),
            keys,
            installations,
            value_size: 64,
            reuse: false,
        }
    }

    fn tokens(n: usize) -> Vec<HeaderValue> {
        (0..n)
            .map(|i| HeaderValue::from_str(&format!("Bearer t{i}")).unwrap())
            .collect()
    }

    /// The key (from the URI) and the token of `n` draws.
    fn draws(w: &Workload, n: u64) -> Vec<(usize, HeaderValue)> {
        let mut rng = Rng::new(7);
        (0..n)
            .map(|seq| {
                let req = w.request(&mut rng, seq);
                let key = req.uri.path().rsplit('/').next().unwrap()[1..]
                    .parse()
                    .unwrap();
                let token = req.token.unwrap();
                (key, token)
            })
            .collect()
    }

    #[test]
    fn unrestricted_draws_are_unchanged() {
        // The same keys as a plain uniform draw of 0..keys with the same seed.
        let w = Workload::new(Op::Get, data(10, 3), 1, tokens(3), "/").unwrap();
        let mut rng = Rng::new(7);
        for (key, token) in draws(&w, 200) {
            assert_eq!(key, rng.below(10) as usize);
            assert_eq!(token, tokens(3)[key % 3]);
        }
    }

    #[test]
    fn restricted_draws_stay_in_the_allowed_installations() {
        // 10 keys over 4 installations: 0 and 1 hold three keys, 2 and 3 hold two.
        let w = Workload::new(Op::Get, data(10, 4), 1, tokens(4), "/")
            .unwrap()
            .only_installations(vec![1, 3])
            .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for (key, token) in draws(&w, 500) {
            assert!(key < 10);
            assert!(key % 4 == 1 || key % 4 == 3, "key {key}");
            assert_eq!(token, tokens(4)[key % 4]);
            seen.insert(key);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 3, 5, 7, 9]);
        let only_zero = Workload::new(Op::Put, data(10, 4), 1, tokens(4), "/")
            .unwrap()
            .only_installations(vec![0])
            .unwrap();
        assert!(draws(&only_zero, 100).iter().all(|(k, _)| k % 4 == 0));
    }

    #[test]
    fn restricting_to_an_empty_installation_is_refused() {
        let w = || Workload::new(Op::Get, data(2, 2), 1, tokens(2), "/").unwrap();
        assert!(w().only_installations(vec![]).is_err());
        assert!(w().only_installations(vec![2]).is_err());
        assert!(w().only_installations(vec![1]).is_ok());
    }
}
