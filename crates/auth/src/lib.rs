//! berth-auth: who may pull, push and delete what.
//!
//! * [`htpasswd`]: users in the bcrypt htpasswd format that `htpasswd -B` writes;
//! * [`robots`]: robot accounts with a scope and an expiry, stored hashed;
//! * [`policy`]: which subject may do which action on which repositories;
//! * [`token`]: signed registry tokens (the Docker/OCI token protocol, ES256 JWTs);
//! * [`pull_credential`]: short-lived, pull-only passwords a user or robot
//!   exchanges its own credential for (what kubelets present);
//! * [`throttle`]: slowing down repeated failed logins;
//! * [`files`]: secret files written atomically, privately, one writer at a time;
//! * [`Authenticator`]: all of it behind one decision per request, with files
//!   re-read when they change.
//!
//! Nothing here speaks HTTP; the server crate turns decisions into 401/403/429.

mod authenticator;
pub mod files;
pub mod htpasswd;
pub mod policy;
pub mod pull_credential;
mod reload;
pub mod robots;
pub mod scope;
pub mod throttle;
pub mod token;

pub use authenticator::{
    AuthConfig, AuthError, Authenticator, Credentials, Decision, Principal, Required,
};
pub use policy::{Policy, PolicyConfig, RuleConfig};
pub use scope::{Action, ResourceAccess};

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Anonymous,
    User(String),
    Robot(robots::RobotGrant),
    /// A user or robot that logged in with a pull credential: its holder's
    /// name, and rights narrowed to pulling some repositories until expiry.
    PullCredential(pull_credential::PullGrant),
}

impl Subject {
    /// The name used in tokens (`sub`) and logs; empty for anonymous, as the
    /// token spec asks.
    pub fn name(&self) -> &str {
        match self {
            Subject::Anonymous => "",
            Subject::User(name) => name,
            Subject::Robot(robot) => &robot.username,
            Subject::PullCredential(grant) => grant.holder.name(),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Subject::Anonymous)
    }
}

/// 256 random bits, URL-safe: for generated passwords and robot secrets.
pub fn random_secret() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
