//! Slowing down password guessing: after repeated failed logins from one
//! client for one user name, further attempts are refused for a while (429
//! with Retry-After), even with the right password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts tolerated within [`WINDOW`].
const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(60);
const LOCKOUT: Duration = Duration::from_secs(30);
/// Entries kept before stale ones are swept.
const SWEEP_ABOVE: usize = 10_000;
/// Entries kept at most, bounding memory under a flood of distinct names or
/// addresses; beyond it, new pairs are not tracked until old ones expire.
const MAX_TRACKED: usize = 200_000;

#[derive(Debug)]
struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Tracked {
    failures: HashMap<(IpAddr, String), Failures>,
    /// The size that triggers the next sweep: twice what the last one left,
    /// so sweeping stays a constant cost per failure, not a scan each time.
    sweep_at: usize,
}

#[derive(Debug, Default)]
pub struct LoginThrottle {
    tracked: Mutex<Tracked>,
}

impl LoginThrottle {
    /// `Err(retry_after)` while `user` from `client` is locked out.
    pub fn check(&self, client: IpAddr, user: &str) -> Result<(), Duration> {
        let tracked = self.tracked.lock().expect("throttle lock");
        match tracked
            .failures
            .get(&(client, user.to_owned()))
            .and_then(|f| f.locked_until)
        {
            Some(until) if until > Instant::now() => Err(until - Instant::now()),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, client: IpAddr, user: &str) {
        let now = Instant::now();
        let mut tracked = self.tracked.lock().expect("throttle lock");
        if tracked.failures.len() > tracked.sweep_at.max(SWEEP_ABOVE) {
            tracked.failures.retain(|_, f| {
                now.duration_since(f.since) < WINDOW || f.locked_until.is_some_and(|u| u > now)
            });
            tracked.sweep_at = tracked.failures.len() * 2;
        }
        let key = (client, user.to_owned());
        if tracked.failures.len() >= MAX_TRACKED && !tracked.failures.contains_key(&key) {
            return;
        }
        let entry = tracked.failures.entry(key).or_insert(Failures {
            count: 0,
            since: now,
            locked_until: None,
        });
        if now.duration_since(entry.since) > WINDOW {
            *entry = Failures {
                count: 0,
                since: now,
                locked_until: None,
            };
        }
        entry.count += 1;
        if entry.count >= MAX_FAILURES {
            entry.locked_until = Some(now + LOCKOUT);
        }
    }

    /// Forgets `user`'s failures from `client`. Called on every successful
    /// login, cached ones included, so it costs nothing while nobody fails.
    pub fn succeeded(&self, client: IpAddr, user: &str) {
        let mut tracked = self.tracked.lock().expect("throttle lock");
        if !tracked.failures.is_empty() {
            tracked.failures.remove(&(client, user.to_owned()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_repeated_failures_per_client_and_user() {
        let throttle = LoginThrottle::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.failed(a, "alice");
            assert!(throttle.check(a, "alice").is_ok());
        }
        throttle.failed(a, "alice");
        let wait = throttle.check(a, "alice").unwrap_err();
        assert!(wait <= LOCKOUT && wait > Duration::ZERO);
        assert!(
            throttle.check(b, "alice").is_ok(),
            "another client is not locked"
        );
        assert!(
            throttle.check(a, "bob").is_ok(),
            "another user is not locked"
        );
        throttle.succeeded(a, "alice");
        assert!(throttle.check(a, "alice").is_ok());
    }
}
