//! The htpasswd file format, bcrypt entries only (what `htpasswd -B` writes and
//! what CNCF Distribution reads), so existing files and the usual Kubernetes
//! Secret holding one work unchanged.

use std::collections::BTreeMap;

/// bcrypt cost for new entries: about 50 ms per check on current hardware,
/// and berth caches successful checks so requests do not pay it each time.
pub const BCRYPT_COST: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtpasswdError {
    #[error("htpasswd line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{0:?} cannot be a user name: use letters, digits, '.', '_', '-' or '@', without ':'")]
    BadUserName(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error(
        "the password is {0} bytes long, and bcrypt ignores everything after byte 72: choose \
         one of at most 72 bytes"
    )]
    PasswordTooLong(usize),
}

/// The longest password bcrypt reads in full.
const BCRYPT_MAX_PASSWORD: usize = 72;

/// A hash nobody's password matches, checked for unknown users so that a
/// wrong user name takes as long as a wrong password and reveals nothing.
/// bcrypt's time grows with the cost, so the stand-in has the cost of the
/// file's own entries: one per cost, made on first use.
fn stand_in_hash(cost: u32) -> String {
    static BY_COST: std::sync::Mutex<BTreeMap<u32, String>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut hashes = BY_COST.lock().expect("stand-in hash table");
    hashes
        .entry(cost)
        .or_insert_with(|| {
            bcrypt::hash(crate::random_secret(), cost).expect("bcrypt hashes a short secret")
        })
        .clone()
}

/// The cost of a bcrypt hash (`$2y$10$…`).
fn cost_of(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Htpasswd {
    /// In file order, so rewriting the file keeps it recognisable.
    entries: Vec<(String, String)>,
}

/// Names the hash scheme of a non-bcrypt entry, for the error message.
fn scheme_of(hash: &str) -> &'static str {
    if hash.starts_with("$apr1$") {
        "an MD5 ($apr1$) hash"
    } else if hash.starts_with("{SHA}") {
        "a SHA-1 ({SHA}) hash"
    } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
        "a SHA-crypt hash"
    } else if hash.starts_with('$') {
        "an unsupported hash"
    } else {
        "a plain-text or crypt(3) password"
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// The longest user name berth creates or accepts at login.
pub const MAX_USER_NAME: usize = 256;

pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

impl Htpasswd {
    /// Parses a file's text. Blank lines and `#` comments are skipped; any
    /// entry that is not bcrypt is refused, naming its line, since silently
    /// ignoring a user would lock them out with no explanation.
    pub fn parse(text: &str) -> Result<Self, HtpasswdError> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: String| HtpasswdError::Line {
                line: index + 1,
                message,
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad("expected user:hash".to_owned()))?;
            if user.is_empty() {
                return Err(bad("the user name is empty".to_owned()));
            }
            if !is_bcrypt(hash) {
                return Err(bad(format!(
                    "user {user:?} has {}; only bcrypt is accepted: recreate the entry \
                     with `htpasswd -B` or `berth user passwd {user}`",
                    scheme_of(hash)
                )));
            }
            entries.push((user.to_owned(), hash.to_owned()));
        }
        Ok(Htpasswd { entries })
    }

    pub fn render(&self) -> String {
        self.entries
            .iter()
            .map(|(user, hash)| format!("{user}:{hash}\n"))
            .collect()
    }

    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(u, _)| u.as_str())
    }

    /// The stored hash of `user`'s password (the first entry, as
    /// [`Htpasswd::verify`] reads it).
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, hash)| hash.as_str())
    }

    pub fn contains(&self, user: &str) -> bool {
        self.entries.iter().any(|(u, _)| u == user)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks a password; a user listed twice counts by its first entry, as
    /// Distribution reads the file.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.entries.iter().find(|(u, _)| u == user) {
            Some((_, hash)) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &stand_in_hash(self.stand_in_cost()));
                false
            }
        }
    }

    /// The cost most of the file's entries have (the first such, on a tie):
    /// an unknown user then costs what most known ones do.
    fn stand_in_cost(&self) -> u32 {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for cost in self.entries.iter().filter_map(|(_, hash)| cost_of(hash)) {
            *counts.entry(cost).or_default() += 1;
        }
        let most = counts.values().copied().max().unwrap_or(0);
        self.entries
            .iter()
            .filter_map(|(_, hash)| cost_of(hash))
            .find(|cost| counts[cost] == most)
            .unwrap_or(BCRYPT_COST)
    }

    /// Adds a user or replaces their password.
    pub fn set(&mut self, user: &str, password: &str, cost: u32) -> Result<(), HtpasswdError> {
        if !valid_user_name(user) {
            return Err(HtpasswdError::BadUserName(user.to_owned()));
        }
        if password.len() > BCRYPT_MAX_PASSWORD {
            return Err(HtpasswdError::PasswordTooLong(password.len()));
        }
        let hash = bcrypt::hash(password, cost).map_err(|e| HtpasswdError::Hash(e.to_string()))?;
        match self.entries.iter_mut().find(|(u, _)| u == user) {
            Some(entry) => entry.1 = hash,
            None => self.entries.push((user.to_owned(), hash)),
        }
        Ok(())
    }

    /// Removes a user; returns whether they existed.
    pub fn remove(&mut self, user: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(u, _)| u != user);
        self.entries.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_htpasswd_b_writes() {
        // `htpasswd -nbB alice secret`
        let text =
            "# comment\n\nalice:$2y$05$2ZQ8W/3vk0QnnPvEzpNr6.pZGJ2g8qzIuZ8fZ/6aUqSVtq.fWYbhS\n";
        let file = Htpasswd::parse(text).unwrap();
        assert_eq!(file.users().collect::<Vec<_>>(), ["alice"]);
        assert!(!file.verify("alice", "wrong"));
        assert!(!file.verify("bob", "secret"));
    }

    /// An unknown user is checked against a hash of the cost the file's
    /// users have: at cost 5 a wrong password took 3 ms for a real user and
    /// 77 ms (cost 10) for an unknown one, which told the names apart.
    #[test]
    fn unknown_users_cost_what_known_ones_do() {
        let mut file = Htpasswd::default();
        file.set("alice", "a", 5).unwrap();
        file.set("bob", "b", 5).unwrap();
        file.set("carol", "c", 6).unwrap();
        assert_eq!(file.stand_in_cost(), 5);
        assert_eq!(cost_of(&stand_in_hash(5)), Some(5));
        assert!(!file.verify("mallory", "a"));
        assert_eq!(Htpasswd::default().stand_in_cost(), BCRYPT_COST);
        // On a tie, the first entry's cost.
        let mut file = Htpasswd::default();
        file.set("dave", "d", 6).unwrap();
        file.set("erin", "e", 4).unwrap();
        assert_eq!(file.stand_in_cost(), 6);
    }

    #[test]
    fn set_verify_remove_render() {
        let mut file = Htpasswd::default();
        file.set("alice", "pa:ss", 4).unwrap();
        file.set("bob", "x", 4).unwrap();
        assert!(file.verify("alice", "pa:ss"));
        file.set("alice", "new", 4).unwrap();
        assert!(!file.verify("alice", "pa:ss"));
        assert!(file.verify("alice", "new"));
        let reparsed = Htpasswd::parse(&file.render()).unwrap();
        assert!(reparsed.verify("bob", "x"));
        assert!(file.remove("bob"));
        assert!(!file.remove("bob"));
        assert!(file.set("a:b", "x", 4).is_err());
        // bcrypt would silently ignore the tail.
        assert!(file.set("carol", &"p".repeat(72), 4).is_ok());
        assert_eq!(
            file.set("carol", &"p".repeat(73), 4),
            Err(HtpasswdError::PasswordTooLong(73))
        );
    }

    #[test]
    fn refuses_other_hashes_naming_the_line() {
        for (entry, what) in [
            ("bob:$apr1$abc$def", "MD5"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("bob:plaintext", "plain-text"),
            ("bob:$6$salt$hash", "SHA-crypt"),
        ] {
            let text = format!(
                "alice:$2y$05$2ZQ8W/3vk0QnnPvEzpNr6.pZGJ2g8qzIuZ8fZ/6aUqSVtq.fWYbhS\n{entry}\n"
            );
            let err = Htpasswd::parse(&text).unwrap_err().to_string();
            assert!(err.starts_with("htpasswd line 2:"), "{err}");
            assert!(err.contains(what) && err.contains("bob"), "{err}");
        }
        assert!(Htpasswd::parse("nocolon\n").is_err());
    }
}
