//! Robot accounts: credentials for machines (CI, kubelets) limited to some
//! repositories and actions, optionally expiring. Only a hash of each secret
//! is stored; the secret is shown once, when the robot is created.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::policy::RepositoryPattern;
use crate::scope::Action;

/// Robot user names start with this; plain users cannot take such a name.
pub const ROBOT_PREFIX: &str = "robot.";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Robot {
    pub name: String,
    /// Hex SHA-256 of the secret. Secrets are 256 random bits, so a fast hash
    /// is enough: there is nothing to brute-force.
    pub secret_sha256: String,
    pub repositories: Vec<String>,
    pub actions: Vec<Action>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<u64>,
}

/// What an authenticated robot may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotGrant {
    pub username: String,
    pub repositories: Vec<RepositoryPattern>,
    pub actions: Vec<Action>,
    pub expires_at: Option<u64>,
}

impl RobotGrant {
    pub fn allows(&self, repository: &str, action: Action) -> bool {
        self.actions.contains(&action) && self.repositories.iter().any(|p| p.matches(repository))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RobotError {
    #[error("robot name {0:?} is not valid: use lowercase letters, digits, '-' and '_'")]
    BadName(String),
    #[error("a robot named {0:?} already exists: revoke it first or pick another name")]
    Exists(String),
    #[error("no robot is named {0:?}")]
    Unknown(String),
    #[error("robot {0:?} expired")]
    Expired(String),
    #[error("wrong secret for robot {0:?}")]
    WrongSecret(String),
    #[error("a robot needs at least one --repo pattern and one action")]
    NoScope,
    #[error("{0}")]
    BadPattern(String),
    #[error("the robots file is not valid JSON: {0}")]
    File(String),
}

/// The robots file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RobotStore {
    pub robots: Vec<Robot>,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl RobotStore {
    pub fn parse(text: &str) -> Result<Self, RobotError> {
        if text.trim().is_empty() {
            return Ok(RobotStore::default());
        }
        serde_json::from_str(text).map_err(|e| RobotError::File(e.to_string()))
    }

    pub fn render(&self) -> String {
        serde_json::to_string_pretty(self).expect("robots serialise") + "\n"
    }

    /// Creates a robot and returns its user name and secret.
    pub fn create(
        &mut self,
        name: &str,
        repositories: Vec<String>,
        actions: Vec<Action>,
        ttl: Option<Duration>,
        now: u64,
    ) -> Result<(String, String), RobotError> {
        if !valid_name(name) {
            return Err(RobotError::BadName(name.to_owned()));
        }
        if self.robots.iter().any(|r| r.name == name) {
            return Err(RobotError::Exists(name.to_owned()));
        }
        if repositories.is_empty() || actions.is_empty() {
            return Err(RobotError::NoScope);
        }
        for pattern in &repositories {
            RepositoryPattern::parse(pattern).map_err(RobotError::BadPattern)?;
        }
        let secret = crate::random_secret();
        self.robots.push(Robot {
            name: name.to_owned(),
            secret_sha256: sha256_hex(&secret),
            repositories,
            actions,
            created_at: now,
            expires_at: ttl.map(|t| now + t.as_secs()),
        });
        Ok((format!("{ROBOT_PREFIX}{name}"), secret))
    }

    pub fn revoke(&mut self, name: &str) -> Result<(), RobotError> {
        let before = self.robots.len();
        self.robots.retain(|r| r.name != name);
        if self.robots.len() == before {
            return Err(RobotError::Unknown(name.to_owned()));
        }
        Ok(())
    }

    /// Checks `username` (`robot.NAME`) and `secret` at time `now`.
    pub fn verify(&self, username: &str, secret: &str, now: u64) -> Result<RobotGrant, RobotError> {
        let name = username.strip_prefix(ROBOT_PREFIX).unwrap_or(username);
        let robot = self
            .robots
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| RobotError::Unknown(name.to_owned()))?;
        if robot.secret_sha256 != sha256_hex(secret) {
            return Err(RobotError::WrongSecret(name.to_owned()));
        }
        if robot.expires_at.is_some_and(|at| at <= now) {
            return Err(RobotError::Expired(name.to_owned()));
        }
        Ok(RobotGrant {
            username: format!("{ROBOT_PREFIX}{name}"),
            repositories: robot
                .repositories
                .iter()
                .filter_map(|p| RepositoryPattern::parse(p).ok())
                .collect(),
            actions: robot.actions.clone(),
            expires_at: robot.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_verify_expire_revoke() {
        let mut store = RobotStore::default();
        let (user, secret) = store
            .create(
                "ci",
                vec!["team/*".into()],
                vec![Action::Pull],
                Some(Duration::from_secs(60)),
                1000,
            )
            .unwrap();
        assert_eq!(user, "robot.ci");
        assert!(
            !store.render().contains(&secret),
            "the secret is never stored"
        );
        let store = RobotStore::parse(&store.render()).unwrap();
        let grant = store.verify(&user, &secret, 1059).unwrap();
        assert!(grant.allows("team/app", Action::Pull));
        assert!(!grant.allows("team/app", Action::Push));
        assert!(!grant.allows("other/app", Action::Pull));
        assert_eq!(
            store.verify(&user, &secret, 1060),
            Err(RobotError::Expired("ci".into()))
        );
        assert_eq!(
            store.verify(&user, "nope", 1000),
            Err(RobotError::WrongSecret("ci".into()))
        );
        let mut store = store;
        assert_eq!(
            store
                .create("ci", vec!["a".into()], vec![Action::Pull], None, 0)
                .unwrap_err(),
            RobotError::Exists("ci".into())
        );
        store.revoke("ci").unwrap();
        assert!(store.verify(&user, &secret, 1000).is_err());
        assert!(
            store
                .create("Bad Name", vec!["a".into()], vec![Action::Pull], None, 0)
                .is_err()
        );
        assert!(
            store
                .create("x", vec![], vec![Action::Pull], None, 0)
                .is_err()
        );
    }
}
