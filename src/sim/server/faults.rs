//! Fault injection for tests: fail chosen requests, add latency.

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
}

impl std::str::FromStr for FaultRule {
    type Err = String;

    /// `METHOD:PATH:STATUS:COUNT`, e.g. `PATCH:/daemonsets/:500:2`; METHOD may be `*`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split(':').collect();
        let [method, path, status, count] = parts.as_slice() else {
            return Err(format!(
                "invalid fault {text:?}: expected METHOD:PATH:STATUS:COUNT"
            ));
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

    /// The status to fail this request with, consuming one use of the first matching rule.
    pub fn take(&mut self, method: &str, path: &str) -> Option<u16> {
        let index = self.rules.iter().position(|r| {
            r.method.as_deref().is_none_or(|m| m == method) && path.contains(&r.path_contains)
        })?;
        let rule = &mut self.rules[index];
        let status = rule.status;
        rule.count -= 1;
        if rule.count == 0 {
            self.rules.remove(index);
        }
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_used_up() {
        let mut faults = Faults::default();
        faults.add("PATCH:/daemonsets/:500:2".parse().unwrap());
        assert_eq!(faults.take("GET", "/apis/apps/v1/daemonsets/x"), None);
        assert_eq!(
            faults.take("PATCH", "/apis/apps/v1/daemonsets/x"),
            Some(500)
        );
        assert_eq!(
            faults.take("PATCH", "/apis/apps/v1/daemonsets/x"),
            Some(500)
        );
        assert_eq!(faults.take("PATCH", "/apis/apps/v1/daemonsets/x"), None);
        faults.add("*::429:1".parse().unwrap());
        assert_eq!(faults.take("GET", "/api"), Some(429));
        assert!("GET:/x:200:1".parse::<FaultRule>().is_err());
        assert!("GET:/x".parse::<FaultRule>().is_err());
    }
}
