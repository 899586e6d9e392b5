//! Content digests (`algorithm:encoded`) as defined by the OCI image spec.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use sha2::Digest as _;
use sha2::digest::common::hazmat::SerializableState as _;

/// The digest algorithms berth can verify. The spec registers exactly these two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest such as `sha256:2c26b4…`. Cheap to clone and compare;
/// displays as its canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("{0:?} is not a digest: expected algorithm:hex, e.g. sha256:<64 hex digits>")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported: use sha256 or sha512")]
    UnsupportedAlgorithm(String),
    #[error("{algorithm} digest must be {expected} lowercase hex digits, got {got:?}")]
    BadEncoding {
        algorithm: &'static str,
        expected: usize,
        got: String,
    },
}

/// The spec's general digest grammar; the registered algorithms are then checked
/// strictly (lowercase hex of the exact length).
static GRAMMAR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$").expect("digest grammar")
});

impl Digest {
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        if !GRAMMAR.is_match(text) {
            return Err(DigestError::Malformed(text.to_owned()));
        }
        let (algorithm, encoded) = text.split_once(':').expect("grammar has a colon");
        let algorithm = match algorithm {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_owned())),
        };
        let hex_ok = encoded.len() == algorithm.hex_len()
            && encoded
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_ok {
            return Err(DigestError::BadEncoding {
                algorithm: algorithm.name(),
                expected: algorithm.hex_len(),
                got: encoded.to_owned(),
            });
        }
        Ok(Digest(text.to_owned()))
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        let mut hasher = Hasher::new(Algorithm::Sha256);
        hasher.update(bytes);
        hasher.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The hex part after the colon.
    pub fn encoded(&self) -> &str {
        &self.0[self.algorithm().name().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

/// An incremental hasher for either supported algorithm. The hash state is
/// `Clone`, so an upload can keep it between chunks.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The hash state as bytes, so that another process can resume it
    /// ([`Hasher::resume`]): an upload continued on another replica is not
    /// read again to be hashed.
    pub fn state(&self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// A hasher continuing from a [`Hasher::state`]; `None` if `state` is
    /// not one of `algorithm`.
    pub fn resume(algorithm: Algorithm, state: &[u8]) -> Option<Self> {
        Some(match algorithm {
            Algorithm::Sha256 => {
                Hasher::Sha256(sha2::Sha256::deserialize(state.try_into().ok()?).ok()?)
            }
            Algorithm::Sha512 => {
                Hasher::Sha512(sha2::Sha512::deserialize(state.try_into().ok()?).ok()?)
            }
        })
    }

    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest(format!("sha256:{}", hex::encode(h.finalize()))),
            Hasher::Sha512(h) => Digest(format!("sha512:{}", hex::encode(h.finalize()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn computes_and_parses_sha256() {
        let d = Digest::sha256_of(b"");
        assert_eq!(d.as_str(), EMPTY);
        assert_eq!(Digest::parse(EMPTY).unwrap(), d);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.encoded().len(), 64);
    }

    #[test]
    fn a_hash_resumes_from_its_state() {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut whole = Hasher::new(algorithm);
            whole.update(b"hello, resumable world");
            let mut first = Hasher::new(algorithm);
            first.update(b"hello, ");
            let state = first.state();
            let mut second = Hasher::resume(algorithm, &state).unwrap();
            second.update(b"resumable world");
            assert_eq!(second.finish(), whole.finish());
            assert!(Hasher::resume(algorithm, &state[1..]).is_none());
        }
    }

    #[test]
    fn sha512_round_trip() {
        let mut h = Hasher::new(Algorithm::Sha512);
        h.update(b"abc");
        let d = h.finish();
        assert!(d.as_str().starts_with("sha512:ddaf35a1"));
        assert_eq!(
            Digest::parse(d.as_str()).unwrap().algorithm(),
            Algorithm::Sha512
        );
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:abc",
            "sha256:xyz/..",
            "sha256:a b",
        ] {
            assert!(
                matches!(Digest::parse(bad), Err(DigestError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Digest::parse("md5:d41d8cd98f00b204e9800998ecf8427e"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse(&EMPTY.to_uppercase().replace("SHA256", "sha256")),
            Err(DigestError::BadEncoding { .. })
        ));
        assert!(matches!(
            Digest::parse("sha256:abc"),
            Err(DigestError::BadEncoding { .. })
        ));
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"hello ");
        let snapshot = h.clone();
        h.update(b"world");
        assert_eq!(h.finish(), Digest::sha256_of(b"hello world"));
        assert_eq!(snapshot.finish(), Digest::sha256_of(b"hello "));
    }
}
