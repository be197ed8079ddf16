//! Fault injection for tests: fail chosen requests (before or after carrying them out), add
//! latency.

use std::time::Duration;

/// Fail the next `count` requests whose method and path match with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    /// `GET`, `PATCH`, …; `None` matches any method.
    pub method: Option<String>,
    /// A substring of the request path (without the query); empty matches every path.
    pub path_contains: String,
    /// 409, 429, 500, 503, …
    pub status: u16,
    pub count: usize,
    /// Carry the request out, then answer with `status`: a response lost after the write was
    /// committed, which a client can only find out by reading again.
    pub applied: bool,
}

/// What to do to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injected {
    pub status: u16,
    /// The request is carried out before the failure is answered.
    pub applied: bool,
}

impl std::str::FromStr for FaultRule {
    type Err = String;

    /// `METHOD:PATH:STATUS:COUNT[:applied]`, e.g. `PATCH:/daemonsets/:500:2`; METHOD may be
    /// `*`; `applied` carries the request out before failing it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split(':').collect();
        let (method, path, status, count, applied) = match parts.as_slice() {
            [method, path, status, count] => (method, path, status, count, false),
            [method, path, status, count, "applied"] => (method, path, status, count, true),
            _ => {
                return Err(format!(
                    "invalid fault {text:?}: expected METHOD:PATH:STATUS:COUNT[:applied]"
                ));
            }
        };
        let status: u16 = status
            .parse()
            .ok()
            .filter(|s| (400..600).contains(s))
            .ok_or_else(|| format!("invalid fault {text:?}: status must be 400-599"))?;
        let count = count
            .parse()
            .map_err(|_| format!("invalid fault {text:?}: count must be a number"))?;
        Ok(Self {
            method: (*method != "*" && !method.is_empty()).then(|| method.to_ascii_uppercase()),
            path_contains: (*path).to_string(),
            status,
            count,
            applied,
        })
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
    pub latency: Duration,
}

impl Faults {
    pub fn add(&mut self, rule: FaultRule) {
        if rule.count > 0 {
            self.rules.push(rule);
        }
    }

    pub fn clear(&mut self) {
        self.rules.clear();
        self.latency = Duration::ZERO;
    }

    /// How to fail this request, consuming one use of the first matching rule.
    pub fn take(&mut self, method: &str, path: &str) -> Option<Injected> {
        let index = self.rules.iter().position(|r| {
            r.method.as_deref().is_none_or(|m| m == method) && path.contains(&r.path_contains)
        })?;
        let rule = &mut self.rules[index];
        let injected = Injected {
            status: rule.status,
            applied: rule.applied,
        };
        rule.count -= 1;
        if rule.count == 0 {
            self.rules.remove(index);
        }
        Some(injected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(injected: Option<Injected>) -> Option<u16> {
        injected.map(|i| i.status)
    }

    #[test]
    fn rules_are_used_up() {
        let mut faults = Faults::default();
        faults.add("PATCH:/daemonsets/:500:2".parse().unwrap());
        assert_eq!(faults.take("GET", "/apis/apps/v1/daemonsets/x"), None);
        assert_eq!(
            status(faults.take("PATCH", "/apis/apps/v1/daemonsets/x")),
            Some(500)
        );
        assert_eq!(
            status(faults.take("PATCH", "/apis/apps/v1/daemonsets/x")),
            Some(500)
        );
        assert_eq!(faults.take("PATCH", "/apis/apps/v1/daemonsets/x"), None);
        faults.add("*::429:1".parse().unwrap());
        assert_eq!(status(faults.take("GET", "/api")), Some(429));
        assert!("GET:/x:200:1".parse::<FaultRule>().is_err());
        assert!("GET:/x".parse::<FaultRule>().is_err());
    }

    #[test]
    fn applied_faults_carry_the_request_out_first() {
        let mut faults = Faults::default();
        faults.add("PATCH:/daemonsets/:504:1:applied".parse().unwrap());
        faults.add("PUT:/leases/:500:1".parse().unwrap());
        assert_eq!(
            faults.take("PATCH", "/apis/apps/v1/daemonsets/x"),
            Some(Injected {
                status: 504,
                applied: true
            })
        );
        assert_eq!(
            faults.take("PUT", "/leases/x"),
            Some(Injected {
                status: 500,
                applied: false
            })
        );
        assert!("PUT:/x:500:1:later".parse::<FaultRule>().is_err());
    }
}
