//! Retries with capped exponential backoff and jitter on 429, 5xx and transport errors.
//! Conflicts (409) are not retried here: the caller re-reads and re-plans.

use std::future::Future;
use std::time::Duration;

use super::ClusterError;

/// How often and how long to retry one request.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// The HTTP status of an API error, if the server answered.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

pub fn is_conflict(err: &kube::Error) -> bool {
    status_code(err) == Some(409)
}

pub fn is_not_found(err: &kube::Error) -> bool {
    status_code(err) == Some(404)
}

/// Whether trying the same request again may succeed.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => true,
        _ => false,
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt` (1-based retries), with up to 50 % jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .first_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let jitter = jitter_fraction();
        exp.mul_f64(0.5 + jitter / 2.0)
    }

    /// Runs `request` until it succeeds, fails permanently, or attempts run out. `what` says
    /// which object and what was attempted, for the error.
    pub async fn run<T, F, Fut>(&self, what: &str, mut request: F) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 0;
        loop {
            match request().await {
                Ok(value) => return Ok(value),
                Err(err) if is_transient(&err) && attempt + 1 < self.attempts => {
                    let delay = self.delay(attempt);
                    tracing::warn!("{what}: {err}; retrying in {delay:?}");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                }
                Err(err) => return Err(ClusterError::api(what, &err)),
            }
        }
    }
}

/// A number in [0, 1) that differs between calls, without a random-number crate.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() % 10_000) as f64 / 10_000.0
}

/// A short random hex string (Lease holder identities, Event names).
pub fn random_suffix() -> String {
    format!("{:08x}", (jitter_fraction() * f64::from(u32::MAX)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "m".into(),
            ..Default::default()
        }))
    }

    #[test]
    fn retries_only_what_may_pass() {
        assert!(is_transient(&api_error(429)));
        assert!(is_transient(&api_error(500)));
        assert!(is_transient(&api_error(503)));
        assert!(!is_transient(&api_error(409)));
        assert!(!is_transient(&api_error(422)));
        assert!(!is_transient(&api_error(404)));
        assert!(is_conflict(&api_error(409)));
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let p = RetryPolicy::default();
        assert!(p.delay(0) <= Duration::from_millis(100));
        assert!(p.delay(0) >= Duration::from_millis(50));
        assert!(p.delay(10) <= p.max_delay);
        assert!(p.delay(10) >= p.max_delay / 2);
    }

    #[tokio::test]
    async fn gives_up_with_the_object_named() {
        let p = RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let mut calls = 0;
        let err = p
            .run("patching DaemonSet kube-system/x", || {
                calls += 1;
                async { Err::<(), _>(api_error(503)) }
            })
            .await
            .unwrap_err();
        assert_eq!(calls, 3);
        assert!(
            err.to_string()
                .starts_with("patching DaemonSet kube-system/x: ")
        );
        let mut calls = 0;
        let ok = p
            .run("x", || {
                calls += 1;
                let fail = calls < 2;
                async move { if fail { Err(api_error(429)) } else { Ok(7) } }
            })
            .await
            .unwrap();
        assert_eq!((ok, calls), (7, 2));
    }
}
