//! One decision per request: who is asking, and may they do what the request needs?

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use berth_api::pull_credentials::IssuedPullCredential;
use quick_cache::sync::Cache;
use sha2::Digest as _;

use crate::Subject;
use crate::htpasswd::Htpasswd;
use crate::policy::{Policy, RepositoryPattern};
use crate::pull_credential::{
    PATTERN_ACCESS_TYPE, PullCredentialError, PullGrant, choose_patterns,
};
use crate::reload::Reloading;
use crate::robots::{ROBOT_PREFIX, RobotStore};
use crate::scope::{Action, ResourceAccess};
use crate::throttle::LoginThrottle;
use crate::token::{Claims, IssuedToken, TokenError, TokenIssuer};

/// Where the authenticator's files are and how it behaves.
pub struct AuthConfig {
    pub htpasswd: PathBuf,
    pub robots: PathBuf,
    pub signing_key: PathBuf,
    pub policy: Policy,
    /// The `service` of challenges and the `aud` of tokens.
    pub service: String,
    pub issuer: String,
    pub token_ttl: Duration,
    pub refresh_ttl: Duration,
    /// The longest life of a pull credential.
    pub pull_credential_ttl: Duration,
}

/// Credentials as presented in an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

impl Credentials {
    /// Parses an `Authorization` header; a malformed one is `Err`.
    pub fn from_header(value: Option<&str>) -> Result<Self, AuthError> {
        let Some(value) = value else {
            return Ok(Credentials::None);
        };
        let (scheme, rest) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| AuthError::Malformed)?;
            let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
            let (user, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
            Ok(Credentials::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Ok(Credentials::Bearer(rest.trim().to_owned()))
        } else {
            Err(AuthError::Malformed)
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    /// Any valid credentials (`GET /v2/`, which `docker login` uses to check them).
    Login,
    Repository {
        name: String,
        action: Action,
    },
    Catalog,
    /// Administering the registry (berth's own API; forced deletes).
    Admin,
}

impl Required {
    /// The scope a client should ask a token for, as put in a challenge. Writes
    /// ask for `pull,push`, as Distribution does, since clients read while pushing.
    pub fn scope(&self) -> Option<String> {
        match self {
            Required::Login => None,
            Required::Catalog => Some("registry:catalog:*".to_owned()),
            // Only Basic credentials administer; no token is issued for it.
            Required::Admin => None,
            Required::Repository { name, action } => Some(match action {
                Action::Pull => format!("repository:{name}:pull"),
                Action::Push => format!("repository:{name}:pull,push"),
                Action::Delete => format!("repository:{name}:delete"),
            }),
        }
    }
}

/// An authenticated (or anonymous) requester and where its rights come from.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Credentials checked now: rights come from the policy.
    Direct(Subject),
    /// A token: rights are what it carries.
    Token(Arc<Claims>),
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Direct(subject) => subject.name(),
            Principal::Token(claims) => &claims.sub,
        }
    }
}

#[derive(Debug)]
pub enum Decision {
    Allow(Principal),
    /// 401: missing, wrong or insufficient credentials; the client should
    /// authenticate (again) for the challenged scope. `error` is the token
    /// spec's `invalid_token` or `insufficient_scope` where one applies.
    Challenge {
        error: Option<&'static str>,
    },
    /// 403: authenticated, and the policy does not allow it.
    Deny(String),
    /// 429: too many failed logins; retry after this long.
    Throttled(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header is malformed")]
    Malformed,
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too many failed logins: retry in {} s", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error("the refresh token is not valid: log in again")]
    BadRefreshToken,
}

/// A successful password check, cached so that Basic authentication on every
/// request does not pay bcrypt every time.
#[derive(Clone)]
struct VerifiedLogin {
    subject: Subject,
    generations: (u64, u64),
    at: Instant,
}

const VERIFIED_LOGIN_TTL: Duration = Duration::from_secs(60);
const CACHE_ENTRIES: usize = 10_000;

/// A password the OAuth2 token form just refused. containerd and docker
/// send the same credentials again at once over `GET /token` when the `POST`
/// is refused: that is one guess, so the retry is answered from here,
/// neither counted by the throttle nor checked by bcrypt again.
#[derive(Clone)]
struct RefusedOAuthLogin {
    client: IpAddr,
    generations: (u64, u64),
    at: Instant,
}

/// How soon after a refused `POST` the `GET` retry comes.
const OAUTH_RETRY_WINDOW: Duration = Duration::from_secs(2);

/// The cache key of a user name and password.
fn login_key(user: &str, password: &str) -> [u8; 32] {
    sha2::Sha256::new()
        .chain_update(user.as_bytes())
        .chain_update([0])
        .chain_update(password.as_bytes())
        .finalize()
        .into()
}

pub struct Authenticator {
    users: Reloading<Htpasswd>,
    robots: Reloading<RobotStore>,
    policy: Policy,
    tokens: TokenIssuer,
    pull_credential_ttl: Duration,
    throttle: LoginThrottle,
    logins: Cache<[u8; 32], VerifiedLogin>,
    refused_oauth: Cache<[u8; 32], RefusedOAuthLogin>,
    /// Verified access tokens: an ES256 check costs far more than a lookup.
    bearers: Cache<String, Arc<Claims>>,
    /// Logins refused for wrong credentials, and for throttling, since start.
    login_failures: AtomicU64,
    logins_throttled: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn audit_login_failure(user: &str, client: IpAddr, reason: &str) {
    tracing::warn!(target: "berth::audit", event = "login_failed", user, %client, reason);
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Result<Self, String> {
        let users = Reloading::open(&config.htpasswd, |t| {
            Htpasswd::parse(t).map_err(|e| e.to_string())
        })?;
        let robots = Reloading::open(&config.robots, |t| {
            RobotStore::parse(t).map_err(|e| e.to_string())
        })?;
        let tokens = TokenIssuer::load_or_create(
            &config.signing_key,
            &config.issuer,
            &config.service,
            config.token_ttl,
            config.refresh_ttl,
        )
        .map_err(|e: TokenError| e.to_string())?;
        Ok(Authenticator {
            users,
            robots,
            policy: config.policy,
            tokens,
            pull_credential_ttl: config.pull_credential_ttl,
            throttle: LoginThrottle::default(),
            logins: Cache::new(CACHE_ENTRIES),
            refused_oauth: Cache::new(CACHE_ENTRIES),
            bearers: Cache::new(CACHE_ENTRIES),
            login_failures: AtomicU64::new(0),
            logins_throttled: AtomicU64::new(0),
        })
    }

    pub fn service(&self) -> &str {
        self.tokens.service()
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.tokens.jwks()
    }

    /// A login verified a moment ago, while the files are unchanged.
    fn cached_login(&self, key: &[u8; 32], generations: (u64, u64)) -> Option<Subject> {
        self.logins
            .get(key)
            .filter(|hit| {
                hit.generations == generations
                    && hit.at.elapsed() < VERIFIED_LOGIN_TTL
                    && !subject_expired(&hit.subject)
            })
            .map(|hit| hit.subject)
    }

    /// Whether checking these credentials may cost a password hash (tens of
    /// milliseconds of CPU): Basic credentials not verified a moment ago.
    /// Callers on an async runtime then run the check on a blocking thread.
    pub fn may_hash(&self, credentials: &Credentials) -> bool {
        match credentials {
            Credentials::Basic { user, password } => self.login_may_hash(user, password),
            Credentials::Bearer(_) | Credentials::None => false,
        }
    }

    /// [`Authenticator::may_hash`] for a user name and password.
    pub fn login_may_hash(&self, user: &str, password: &str) -> bool {
        let generations = (self.users.get().1, self.robots.get().1);
        self.cached_login(&login_key(user, password), generations)
            .is_none()
    }

    /// Whether the htpasswd file has `user`.
    pub fn has_user(&self, user: &str) -> bool {
        self.users.get().0.contains(user)
    }

    /// Logins refused for wrong credentials, and refused for throttling,
    /// since start.
    pub fn login_counts(&self) -> (u64, u64) {
        (
            self.login_failures.load(Ordering::Relaxed),
            self.logins_throttled.load(Ordering::Relaxed),
        )
    }

    /// Checks a user name and password (a user or a robot).
    pub fn login(&self, user: &str, password: &str, client: IpAddr) -> Result<Subject, AuthError> {
        if user.len() > crate::htpasswd::MAX_USER_NAME {
            // No account has such a name; nothing to track or to log at length.
            return Err(AuthError::BadCredentials);
        }
        self.throttle.check(client, user).map_err(|wait| {
            self.logins_throttled.fetch_add(1, Ordering::Relaxed);
            AuthError::Throttled(wait)
        })?;
        let key = login_key(user, password);
        let generations = (self.users.get().1, self.robots.get().1);
        if let Some(subject) = self.cached_login(&key, generations) {
            self.throttle.succeeded(client, user);
            return Ok(subject);
        }
        if let Some(refused) = self.refused_oauth.get(&key)
            && refused.client == client
            && refused.generations == generations
            && refused.at.elapsed() < OAUTH_RETRY_WINDOW
        {
            self.refused_oauth.remove(&key);
            self.login_failures.fetch_add(1, Ordering::Relaxed);
            audit_login_failure(user, client, "the password the OAuth2 form just refused");
            return Err(AuthError::BadCredentials);
        }
        let mut outcome = self.check_password(user, password);
        if outcome.is_err() {
            // The account may have been added or changed a moment ago: look
            // at the files now, and check again only if they changed.
            let fresh = (self.users.get_fresh().1, self.robots.get_fresh().1);
            if fresh != generations {
                outcome = self.check_password(user, password);
            }
        }
        match outcome {
            Ok((subject, generations)) => {
                self.throttle.succeeded(client, user);
                self.logins.insert(
                    key,
                    VerifiedLogin {
                        subject: subject.clone(),
                        generations,
                        at: Instant::now(),
                    },
                );
                Ok(subject)
            }
            Err(reason) => {
                self.throttle.failed(client, user);
                self.login_failures.fetch_add(1, Ordering::Relaxed);
                audit_login_failure(user, client, &reason);
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// [`Authenticator::login`] for the OAuth2 password grant (`POST
    /// /token`): a refused password is remembered for a moment, so that the
    /// `GET` retry clients make with it at once counts as the same guess.
    pub fn login_oauth(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Subject, AuthError> {
        let result = self.login(user, password, client);
        if result == Err(AuthError::BadCredentials) {
            self.refused_oauth.insert(
                login_key(user, password),
                RefusedOAuthLogin {
                    client,
                    generations: (self.users.get().1, self.robots.get().1),
                    at: Instant::now(),
                },
            );
        }
        result
    }

    /// Verifies against the files as currently loaded.
    fn check_password(&self, user: &str, password: &str) -> Result<(Subject, (u64, u64)), String> {
        let ((users, user_generation), (robots, robot_generation)) =
            (self.users.get(), self.robots.get());
        let generations = (user_generation, robot_generation);
        // A password shaped like a JWT is first tried as a pull credential;
        // if it is none, it may still be someone's own password.
        let pull_credential = if looks_like_jwt(password) {
            match self.pull_credential(user, password) {
                Ok(grant) => return Ok((Subject::PullCredential(grant), generations)),
                Err(reason) => Some(reason),
            }
        } else {
            None
        };
        let own_password = if user.starts_with(ROBOT_PREFIX) {
            robots
                .verify(user, password, unix_now())
                .map(Subject::Robot)
                .map_err(|e| e.to_string())
        } else if users.verify(user, password) {
            Ok(Subject::User(user.to_owned()))
        } else {
            Err("wrong user name or password".to_owned())
        };
        let subject = own_password.map_err(|reason| pull_credential.unwrap_or(reason))?;
        Ok((subject, generations))
    }

    /// Checks a pull credential presented as `user`'s password.
    fn pull_credential(&self, user: &str, password: &str) -> Result<PullGrant, String> {
        let claims = self
            .tokens
            .verify_pull_credential(password)
            .map_err(|e| format!("pull credential: {e}"))?;
        if claims.sub != user {
            return Err("pull credential issued to another user".to_owned());
        }
        let holder = self
            .current_subject_with(user, claims.cred.as_deref())
            .ok_or(
                "pull credential of a user or robot that no longer exists or whose password or \
                 secret changed since",
            )?;
        let repositories = claims
            .access
            .iter()
            .map(|a| {
                if a.kind != PATTERN_ACCESS_TYPE || a.actions != ["pull"] {
                    return Err("pull credential with an unexpected access claim".to_owned());
                }
                RepositoryPattern::parse(&a.name)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PullGrant {
            holder: Box::new(holder),
            repositories,
            expires_at: claims.exp,
        })
    }

    /// A pull credential for `subject` (who just logged in with its own
    /// credential): for the `requested` repository patterns (all it may pull
    /// when empty), living `ttl` capped by the configured maximum and by a
    /// robot's own expiry.
    pub fn issue_pull_credential(
        &self,
        subject: &Subject,
        requested: &[String],
        ttl: Option<Duration>,
    ) -> Result<IssuedPullCredential, PullCredentialError> {
        match subject {
            Subject::Anonymous => return Err(PullCredentialError::Anonymous),
            Subject::PullCredential(_) => return Err(PullCredentialError::NotExchangeable),
            Subject::User(_) | Subject::Robot(_) => {}
        }
        let ttl = ttl.map_or(self.pull_credential_ttl, |t| {
            t.min(self.pull_credential_ttl)
        });
        if ttl.as_secs() == 0 {
            return Err(PullCredentialError::ZeroLifetime);
        }
        let allowed = self.policy.pull_patterns(subject);
        let patterns = choose_patterns(subject.name(), &allowed, requested)?;
        let now = unix_now();
        let mut expires_at = now + ttl.as_secs();
        if let Subject::Robot(robot) = subject
            && let Some(robot_expiry) = robot.expires_at
        {
            expires_at = expires_at.min(robot_expiry);
        }
        let texts: Vec<&str> = patterns.iter().map(RepositoryPattern::as_str).collect();
        // Gone since the login a moment ago: as if it had never logged in.
        let credential = self
            .credential_fingerprint(subject.name())
            .ok_or(PullCredentialError::Anonymous)?;
        Ok(IssuedPullCredential {
            username: subject.name().to_owned(),
            password: self.tokens.issue_pull_credential(
                subject.name(),
                &credential,
                &texts,
                expires_at,
            ),
            repositories: texts.iter().map(|t| (*t).to_owned()).collect(),
            expires_in: expires_at.saturating_sub(now),
            expires_at: humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_secs(expires_at),
            )
            .to_string(),
        })
    }

    fn verify_bearer(&self, token: &str) -> Option<Arc<Claims>> {
        if let Some(claims) = self.bearers.get(token) {
            // The cache may outlive a token; its expiry is checked on every use.
            return (claims.exp > unix_now()).then_some(claims);
        }
        let claims = Arc::new(self.tokens.verify_access(token).ok()?);
        self.bearers.insert(token.to_owned(), claims.clone());
        Some(claims)
    }

    /// Which repositories `principal` may see in the catalog: those it may
    /// pull. A token is judged by its subject's rights now (a catalog token
    /// names no repository).
    pub fn catalog_filter(&self, principal: &Principal) -> impl Fn(&str) -> bool + Sync + '_ {
        let subject = match principal {
            Principal::Direct(subject) => Some(subject.clone()),
            Principal::Token(claims) => self.current_subject(&claims.sub),
        };
        move |repository| {
            subject
                .as_ref()
                .is_some_and(|s| self.policy.allows(s, repository, Action::Pull))
        }
    }

    /// Whether `principal` may do what `required` needs.
    pub fn permits(&self, principal: &Principal, required: &Required) -> bool {
        match principal {
            Principal::Direct(subject) => match required {
                Required::Login => !subject.is_anonymous(),
                Required::Catalog => self.policy.allows_catalog(subject),
                Required::Admin => self.policy.allows_admin(subject),
                Required::Repository { name, action } => self.policy.allows(subject, name, *action),
            },
            Principal::Token(claims) => match required {
                Required::Login => !claims.sub.is_empty(),
                Required::Catalog => claims.access.iter().any(|a| {
                    a.kind == "registry"
                        && a.name == "catalog"
                        && a.actions.iter().any(|x| x == "*")
                }),
                // A token's subject administers if it does now.
                Required::Admin => self
                    .current_subject(&claims.sub)
                    .is_some_and(|subject| self.policy.allows_admin(&subject)),
                Required::Repository { name, action } => claims.access.iter().any(|a| {
                    a.kind == "repository"
                        && a.name == *name
                        && a.actions.iter().any(|x| x == action.as_str() || x == "*")
                }),
            },
        }
    }

    /// The subject a token was issued to, as it stands now.
    /// A fingerprint of `name`'s current password hash or robot secret
    /// hash: what refresh tokens and pull credentials are bound to.
    fn credential_fingerprint(&self, name: &str) -> Option<String> {
        let stored = match name.strip_prefix(ROBOT_PREFIX) {
            Some(robot) => {
                let (robots, _) = self.robots.get();
                let robot = robots.robots.iter().find(|r| r.name == robot)?;
                format!("robot:{}:{}", robot.created_at, robot.secret_sha256)
            }
            None => {
                let (users, _) = self.users.get();
                format!("user:{}", users.hash_of(name)?)
            }
        };
        let digest = sha2::Sha256::digest(stored.as_bytes());
        Some(hex::encode(&digest[..16]))
    }

    /// The subject `name` stands for now, if it still exists and its
    /// credential is still the one `fingerprint` was taken from.
    fn current_subject_with(&self, name: &str, fingerprint: Option<&str>) -> Option<Subject> {
        let current = self.credential_fingerprint(name)?;
        (fingerprint == Some(current.as_str()))
            .then(|| self.current_subject(name))
            .flatten()
            .filter(|s| !s.is_anonymous())
    }

    fn current_subject(&self, name: &str) -> Option<Subject> {
        if name.is_empty() {
            return Some(Subject::Anonymous);
        }
        if let Some(robot) = name.strip_prefix(ROBOT_PREFIX) {
            let (robots, _) = self.robots.get();
            let stored = robots.robots.iter().find(|r| r.name == robot)?;
            if stored.expires_at.is_some_and(|at| at <= unix_now()) {
                return None;
            }
            return Some(Subject::Robot(crate::robots::RobotGrant {
                username: name.to_owned(),
                repositories: stored
                    .repositories
                    .iter()
                    .filter_map(|p| crate::policy::RepositoryPattern::parse(p).ok())
                    .collect(),
                actions: stored.actions.clone(),
                expires_at: stored.expires_at,
            }));
        }
        let (users, _) = self.users.get();
        users.contains(name).then(|| Subject::User(name.to_owned()))
    }

    /// The decision for a request presenting `credentials` from `client`.
    pub fn decide(
        &self,
        credentials: &Credentials,
        client: IpAddr,
        required: &Required,
    ) -> Decision {
        let principal = match credentials {
            Credentials::Bearer(token) => match self.verify_bearer(token) {
                Some(claims) => Principal::Token(claims),
                None => {
                    return Decision::Challenge {
                        error: Some("invalid_token"),
                    };
                }
            },
            Credentials::Basic { user, password } => match self.login(user, password, client) {
                Ok(subject) => Principal::Direct(subject),
                Err(AuthError::Throttled(wait)) => return Decision::Throttled(wait),
                Err(_) => return Decision::Challenge { error: None },
            },
            Credentials::None => Principal::Direct(Subject::Anonymous),
        };
        if self.permits(&principal, required) {
            return Decision::Allow(principal);
        }
        // Not allowed. An authenticated subject whom the policy refuses gets a
        // definitive 403; anyone else (anonymous, or a token that merely lacks
        // the scope) is challenged so the client can fetch the right token.
        let subject = match &principal {
            Principal::Direct(subject) => Some(subject.clone()),
            Principal::Token(claims) => self.current_subject(&claims.sub).map(|holder| {
                if claims.pull_only {
                    Subject::PullCredential(PullGrant {
                        holder: Box::new(holder),
                        // The token itself names the repositories.
                        repositories: vec![RepositoryPattern::parse("**").expect("valid")],
                        expires_at: claims.exp,
                    })
                } else {
                    holder
                }
            }),
        };
        match subject {
            Some(subject) if !subject.is_anonymous() => {
                if self.permits(&Principal::Direct(subject.clone()), required) {
                    Decision::Challenge {
                        error: Some("insufficient_scope"),
                    }
                } else {
                    tracing::warn!(
                        target: "berth::audit",
                        event = "denied",
                        subject = subject.name(),
                        %client,
                        required = ?required,
                    );
                    Decision::Deny(subject.name().to_owned())
                }
            }
            _ => Decision::Challenge {
                error: matches!(principal, Principal::Token(_)).then_some("insufficient_scope"),
            },
        }
    }

    /// What `subject` may have of each requested scope: the intersection of
    /// what was asked and what is allowed. Scopes granting nothing are left out;
    /// a partial grant is not an error.
    pub fn grant(&self, subject: &Subject, scopes: &[String]) -> Vec<ResourceAccess> {
        scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter_map(ResourceAccess::parse_scope)
            .filter_map(|requested| {
                let actions: Vec<String> = match requested.kind.as_str() {
                    "repository" => {
                        let mut granted: Vec<Action> = requested
                            .actions
                            .iter()
                            .filter_map(|a| Action::parse_list(a))
                            .flatten()
                            .filter(|a| self.policy.allows(subject, &requested.name, *a))
                            .collect();
                        granted.sort();
                        granted.dedup();
                        granted.iter().map(|a| a.as_str().to_owned()).collect()
                    }
                    "registry"
                        if requested.name == "catalog" && self.policy.allows_catalog(subject) =>
                    {
                        vec!["*".to_owned()]
                    }
                    _ => Vec::new(),
                };
                (!actions.is_empty()).then_some(ResourceAccess {
                    actions,
                    ..requested
                })
            })
            .collect()
    }

    /// A token for `subject` over the requested scopes, and a refresh token
    /// when `offline` and the subject is not anonymous.
    pub fn issue(
        &self,
        subject: &Subject,
        scopes: &[String],
        offline: bool,
    ) -> (IssuedToken, Option<String>) {
        let access = self.grant(subject, scopes);
        if matches!(subject, Subject::PullCredential(_)) {
            // No refresh token: it would outlive the credential and carry
            // the holder's full rights.
            let token =
                self.tokens
                    .issue_limited(subject.name(), access, true, subject_expiry(subject));
            return (token, None);
        }
        let token =
            self.tokens
                .issue_limited(subject.name(), access, false, subject_expiry(subject));
        let refresh = (offline && !subject.is_anonymous())
            .then_some(())
            .and_then(|()| {
                let credential = self.credential_fingerprint(subject.name())?;
                Some(self.tokens.issue_refresh(subject.name(), &credential))
            });
        (token, refresh)
    }

    /// The subject a refresh token stands for, if it is still valid and the
    /// subject still exists (a deleted user or revoked robot cannot refresh).
    pub fn refresh(&self, refresh_token: &str) -> Result<Subject, AuthError> {
        let claims = self
            .tokens
            .verify_refresh(refresh_token)
            .map_err(|_| AuthError::BadRefreshToken)?;
        self.current_subject_with(&claims.sub, claims.cred.as_deref())
            .ok_or(AuthError::BadRefreshToken)
    }
}

/// When `subject`'s credential stops working, if it ever does: tokens it
/// obtains must not outlive it.
fn subject_expiry(subject: &Subject) -> Option<u64> {
    match subject {
        Subject::Robot(r) => r.expires_at,
        Subject::PullCredential(grant) => Some(grant.expires_at),
        Subject::Anonymous | Subject::User(_) => None,
    }
}

fn subject_expired(subject: &Subject) -> bool {
    subject_expiry(subject).is_some_and(|at| at <= unix_now())
}

/// Whether a password has the shape of a JWT, and so may be a pull credential.
fn looks_like_jwt(password: &str) -> bool {
    password.len() > 32 && password.bytes().filter(|b| *b == b'.').count() == 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PolicyConfig, RuleConfig};

    fn authenticator(dir: &std::path::Path, rules: Vec<RuleConfig>) -> Authenticator {
        let mut users = Htpasswd::default();
        users.set("alice", "secret", 4).unwrap();
        users.set("bob", "hunter2", 4).unwrap();
        std::fs::write(dir.join("htpasswd"), users.render()).unwrap();
        Authenticator::new(AuthConfig {
            htpasswd: dir.join("htpasswd"),
            robots: dir.join("robots.json"),
            signing_key: dir.join("key.pem"),
            policy: Policy::new(PolicyConfig {
                groups: Default::default(),
                rules,
            })
            .unwrap(),
            service: "test".into(),
            issuer: "berth".into(),
            token_ttl: Duration::from_secs(60),
            refresh_ttl: Duration::from_secs(600),
            pull_credential_ttl: Duration::from_secs(3600),
        })
        .unwrap()
    }

    fn local() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    fn pull(name: &str) -> Required {
        Required::Repository {
            name: name.into(),
            action: Action::Pull,
        }
    }

    fn push(name: &str) -> Required {
        Required::Repository {
            name: name.into(),
            action: Action::Push,
        }
    }

    #[test]
    fn headers() {
        assert_eq!(Credentials::from_header(None), Ok(Credentials::None));
        assert_eq!(
            Credentials::from_header(Some("Basic YWxpY2U6czpl")),
            Ok(basic("alice", "s:e"))
        );
        assert_eq!(
            Credentials::from_header(Some("bearer abc")),
            Ok(Credentials::Bearer("abc".into()))
        );
        assert!(Credentials::from_header(Some("Basic !!!")).is_err());
        assert!(Credentials::from_header(Some("Digest x")).is_err());
    }

    #[test]
    fn decisions_distinguish_401_403() {
        let dir = tempfile::tempdir().unwrap();
        let rule = RuleConfig {
            subjects: vec!["user:alice".into()],
            repositories: vec!["a/*".into()],
            actions: vec!["pull".into()],
            catalog: false,
            admin: false,
        };
        let auth = authenticator(dir.path(), vec![rule]);
        assert!(matches!(
            auth.decide(&basic("alice", "secret"), local(), &pull("a/x")),
            Decision::Allow(_)
        ));
        assert!(matches!(
            auth.decide(&basic("alice", "secret"), local(), &pull("b/x")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            auth.decide(&basic("alice", "bad"), local(), &pull("a/x")),
            Decision::Challenge { .. }
        ));
        assert!(matches!(
            auth.decide(&Credentials::None, local(), &pull("a/x")),
            Decision::Challenge { .. }
        ));
        assert!(matches!(
            auth.decide(&Credentials::None, local(), &Required::Login),
            Decision::Challenge { .. }
        ));
        assert!(matches!(
            auth.decide(&basic("bob", "hunter2"), local(), &Required::Login),
            Decision::Allow(_)
        ));
    }

    #[test]
    fn tokens_carry_the_granted_intersection() {
        let dir = tempfile::tempdir().unwrap();
        let rule = RuleConfig {
            subjects: vec!["user:alice".into()],
            repositories: vec!["a/*".into()],
            actions: vec!["pull".into()],
            catalog: false,
            admin: false,
        };
        let auth = authenticator(dir.path(), vec![rule]);
        let alice = Subject::User("alice".into());
        let granted = auth.grant(
            &alice,
            &[
                "repository:a/x:pull,push".into(),
                "repository:b/x:pull".into(),
            ],
        );
        assert_eq!(granted.len(), 1);
        assert_eq!(granted[0].actions, ["pull"]);
        let (token, refresh) = auth.issue(&alice, &["repository:a/x:pull,push".into()], true);
        let bearer = Credentials::Bearer(token.token);
        assert!(matches!(
            auth.decide(&bearer, local(), &pull("a/x")),
            Decision::Allow(_)
        ));
        assert!(matches!(
            auth.decide(&bearer, local(), &push("a/x")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            auth.decide(&bearer, local(), &pull("a/y")),
            Decision::Challenge {
                error: Some("insufficient_scope")
            }
        ));
        assert_eq!(auth.refresh(&refresh.unwrap()), Ok(alice));
        let (anonymous, refresh) =
            auth.issue(&Subject::Anonymous, &["repository:a/x:pull".into()], true);
        assert!(refresh.is_none());
        assert!(
            auth.tokens
                .verify_access(&anonymous.token)
                .unwrap()
                .access
                .is_empty()
        );
    }

    #[test]
    fn pull_credentials_pull_only_what_was_granted() {
        let dir = tempfile::tempdir().unwrap();
        let rules = vec![
            RuleConfig {
                subjects: vec!["user:alice".into()],
                repositories: vec!["a/*".into()],
                actions: vec!["pull".into(), "push".into()],
                catalog: true,
                admin: false,
            },
            RuleConfig {
                subjects: vec!["user:bob".into()],
                repositories: vec!["b/*".into()],
                actions: vec!["push".into()],
                catalog: false,
                admin: false,
            },
        ];
        let auth = authenticator(dir.path(), rules);
        let alice = auth.login("alice", "secret", local()).unwrap();
        let credential = auth.issue_pull_credential(&alice, &[], None).unwrap();
        assert_eq!(credential.username, "alice");
        assert_eq!(credential.repositories, ["a/*"]);
        assert_eq!(credential.expires_in, 3600);
        let basic = basic("alice", &credential.password);
        assert!(matches!(
            auth.decide(&basic, local(), &pull("a/x")),
            Decision::Allow(_)
        ));
        assert!(matches!(
            auth.decide(&basic, local(), &push("a/x")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            auth.decide(&basic, local(), &pull("b/x")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            auth.decide(&basic, local(), &Required::Catalog),
            Decision::Deny(_)
        ));
        // Another user's name, or the credential as a bearer token: refused.
        assert_eq!(
            auth.login("bob", &credential.password, local()),
            Err(AuthError::BadCredentials)
        );
        assert!(matches!(
            auth.decide(
                &Credentials::Bearer(credential.password.clone()),
                local(),
                &pull("a/x")
            ),
            Decision::Challenge {
                error: Some("invalid_token")
            }
        ));
        // Through the token flow: pull only, no refresh token, and a push
        // is refused outright although alice herself may push.
        let subject = auth.login("alice", &credential.password, local()).unwrap();
        assert!(matches!(subject, Subject::PullCredential(_)));
        let (token, refresh) = auth.issue(&subject, &["repository:a/x:pull,push".into()], true);
        assert!(refresh.is_none());
        let bearer = Credentials::Bearer(token.token);
        assert!(matches!(
            auth.decide(&bearer, local(), &pull("a/x")),
            Decision::Allow(_)
        ));
        assert!(matches!(
            auth.decide(&bearer, local(), &push("a/x")),
            Decision::Deny(_)
        ));
        // It cannot be renewed with itself, nor widened.
        assert_eq!(
            auth.issue_pull_credential(&subject, &[], None),
            Err(PullCredentialError::NotExchangeable)
        );
        assert!(matches!(
            auth.issue_pull_credential(&alice, &["a/**".into()], None),
            Err(PullCredentialError::Wider { .. })
        ));
        let narrow = auth
            .issue_pull_credential(&alice, &["a/x".into()], Some(Duration::from_secs(9000)))
            .unwrap();
        assert_eq!(narrow.expires_in, 3600, "capped by the configured maximum");
        assert!(matches!(
            auth.decide(&basic_of(&narrow), local(), &pull("a/y")),
            Decision::Deny(_)
        ));
        // bob may push but not pull: nothing to issue.
        let bob = auth.login("bob", "hunter2", local()).unwrap();
        assert!(matches!(
            auth.issue_pull_credential(&bob, &[], None),
            Err(PullCredentialError::NoPullRights(_))
        ));
        assert_eq!(
            auth.issue_pull_credential(&Subject::Anonymous, &[], None),
            Err(PullCredentialError::Anonymous)
        );
    }

    fn basic_of(credential: &IssuedPullCredential) -> Credentials {
        basic(&credential.username, &credential.password)
    }

    #[test]
    fn pull_credentials_expire() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), vec![]);
        let alice = auth.login("alice", "secret", local()).unwrap();
        let credential = auth
            .issue_pull_credential(&alice, &[], Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!(credential.repositories, ["**"]);
        // Logged in once, so the expiry must also end the cached login.
        assert!(auth.login("alice", &credential.password, local()).is_ok());
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(
            auth.login("alice", &credential.password, local()),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            auth.issue_pull_credential(&alice, &[], Some(Duration::ZERO)),
            Err(PullCredentialError::ZeroLifetime)
        );
    }

    #[test]
    fn pull_credentials_end_with_their_robot() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), vec![]);
        let mut store = crate::robots::RobotStore::default();
        let (name, secret) = store
            .create(
                "node",
                vec!["team/**".into()],
                vec![Action::Pull, Action::Push],
                Some(Duration::from_secs(100)),
                unix_now(),
            )
            .unwrap();
        std::fs::write(dir.path().join("robots.json"), store.render()).unwrap();
        let robot = auth.login(&name, &secret, local()).unwrap();
        // Capped by the robot's own expiry; its push right is not carried.
        let credential = auth.issue_pull_credential(&robot, &[], None).unwrap();
        assert!(credential.expires_in <= 100, "{credential:?}");
        assert_eq!(credential.repositories, ["team/**"]);
        let basic = basic_of(&credential);
        assert!(matches!(
            auth.decide(&basic, local(), &pull("team/a/b")),
            Decision::Allow(_)
        ));
        // Revoking the robot revokes the credentials issued to it.
        std::thread::sleep(Duration::from_millis(1100));
        store.revoke("node").unwrap();
        std::fs::write(dir.path().join("robots.json"), store.render()).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            auth.login(&name, &credential.password, local()),
            Err(AuthError::BadCredentials)
        );
    }

    /// Refresh tokens and pull credentials stand for the password or robot
    /// secret they were obtained with: rotating it ends them, even when the
    /// name lives on (a new password; a robot revoked and created again).
    #[test]
    fn rotating_a_credential_ends_what_was_obtained_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), vec![]);
        let alice = auth.login("alice", "secret", local()).unwrap();
        let (_, refresh) = auth.issue(&alice, &[], true);
        let refresh = refresh.expect("offline: a refresh token");
        let credential = auth.issue_pull_credential(&alice, &[], None).unwrap();
        assert!(auth.refresh(&refresh).is_ok());
        assert!(auth.login("alice", &credential.password, local()).is_ok());

        let mut store = crate::robots::RobotStore::default();
        let create = |store: &mut crate::robots::RobotStore| {
            store
                .create(
                    "ci",
                    vec!["**".into()],
                    vec![Action::Pull],
                    None,
                    unix_now(),
                )
                .unwrap()
        };
        let (robot_name, secret) = create(&mut store);
        std::fs::write(dir.path().join("robots.json"), store.render()).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let robot = auth.login(&robot_name, &secret, local()).unwrap();
        let (_, robot_refresh) = auth.issue(&robot, &[], true);
        let robot_refresh = robot_refresh.unwrap();
        let robot_credential = auth.issue_pull_credential(&robot, &[], None).unwrap();

        // New password for alice; robot.ci revoked and created again.
        let mut users = Htpasswd::default();
        users.set("alice", "new secret", 4).unwrap();
        users.set("bob", "hunter2", 4).unwrap();
        std::fs::write(dir.path().join("htpasswd"), users.render()).unwrap();
        store.revoke("ci").unwrap();
        let (_, new_secret) = create(&mut store);
        std::fs::write(dir.path().join("robots.json"), store.render()).unwrap();
        std::thread::sleep(Duration::from_millis(1100));

        assert_eq!(auth.refresh(&refresh), Err(AuthError::BadRefreshToken));
        assert_eq!(
            auth.refresh(&robot_refresh),
            Err(AuthError::BadRefreshToken)
        );
        for (name, password) in [
            ("alice", &credential.password),
            (robot_name.as_str(), &robot_credential.password),
        ] {
            assert_eq!(
                auth.login(name, password, local()),
                Err(AuthError::BadCredentials),
                "{name}"
            );
        }
        // What the new credentials obtain works.
        let robot = auth.login(&robot_name, &new_secret, local()).unwrap();
        let (_, fresh) = auth.issue(&robot, &[], true);
        assert!(auth.refresh(&fresh.unwrap()).is_ok());
    }

    #[test]
    fn htpasswd_changes_apply_without_restart() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), vec![]);
        assert!(auth.login("alice", "secret", local()).is_ok());
        let mut users = Htpasswd::default();
        users.set("carol", "pw", 4).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(dir.path().join("htpasswd"), users.render()).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(auth.login("carol", "pw", local()).is_ok());
        assert_eq!(
            auth.login("alice", "secret", local()),
            Err(AuthError::BadCredentials)
        );
    }

    #[test]
    fn a_get_retry_after_a_refused_oauth_post_is_one_guess() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), vec![]);
        // Four rounds of POST-then-GET with a wrong password, as containerd
        // makes them: four guesses, under the limit of five.
        for _ in 0..4 {
            assert_eq!(
                auth.login_oauth("alice", "bad", local()),
                Err(AuthError::BadCredentials)
            );
            assert_eq!(
                auth.login("alice", "bad", local()),
                Err(AuthError::BadCredentials)
            );
        }
        assert!(auth.login("alice", "secret", local()).is_ok());
        // Only the retry right after the POST is free: GETs alone count.
        for _ in 0..5 {
            let _ = auth.login("alice", "bad", local());
        }
        assert!(matches!(
            auth.login("alice", "secret", local()),
            Err(AuthError::Throttled(_))
        ));
    }

    #[test]
    fn only_unverified_passwords_may_cost_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), vec![]);
        assert!(auth.may_hash(&basic("alice", "secret")));
        auth.login("alice", "secret", local()).unwrap();
        assert!(
            !auth.may_hash(&basic("alice", "secret")),
            "verified a moment ago"
        );
        assert!(auth.may_hash(&basic("alice", "other")));
        assert!(!auth.may_hash(&Credentials::None));
        assert!(!auth.may_hash(&Credentials::Bearer("t".into())));
    }

    #[test]
    fn failed_logins_are_throttled() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path(), vec![]);
        for _ in 0..5 {
            assert_eq!(
                auth.login("alice", "bad", local()),
                Err(AuthError::BadCredentials)
            );
        }
        assert!(matches!(
            auth.login("alice", "secret", local()),
            Err(AuthError::Throttled(_))
        ));
        assert!(matches!(
            auth.decide(&basic("alice", "secret"), local(), &Required::Login),
            Decision::Throttled(_)
        ));
    }
}
