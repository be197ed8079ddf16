//! Bearer-token users and the kubeconfig that carries their tokens.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;

use super::admission::UserInfo;
use super::util;

/// A user given with `--user NAME:GROUP` (the group may be left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    pub groups: Vec<String>,
}

impl std::str::FromStr for UserSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, groups) = match text.split_once(':') {
            Some((n, g)) => (
                n.trim(),
                g.split('+').map(str::trim).map(str::to_string).collect(),
            ),
            None => (text.trim(), Vec::new()),
        };
        let groups: Vec<String> = groups
            .into_iter()
            .filter(|g: &String| !g.is_empty())
            .collect();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
        {
            return Err(format!(
                "invalid user {text:?}: expected NAME or NAME:GROUP (groups joined with '+')"
            ));
        }
        if name == ADMIN {
            return Err(format!(
                "user name {ADMIN:?} is reserved for the admin user"
            ));
        }
        Ok(Self {
            name: name.to_string(),
            groups,
        })
    }
}

pub const ADMIN: &str = "admin";
pub const CLUSTER: &str = "cce-sim";

/// Tokens and who they authenticate.
#[derive(Debug, Clone)]
pub struct Users {
    by_token: HashMap<String, UserInfo>,
    /// (user, token), admin first.
    pub ordered: Vec<(UserInfo, String)>,
}

impl Users {
    pub fn new(extra: &[UserSpec]) -> Self {
        let mut ordered = vec![(
            UserInfo {
                username: ADMIN.to_string(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            },
            util::token(),
        )];
        for spec in extra {
            let mut groups = spec.groups.clone();
            groups.push("system:authenticated".into());
            ordered.push((
                UserInfo {
                    username: spec.name.clone(),
                    groups,
                },
                util::token(),
            ));
        }
        let by_token = ordered
            .iter()
            .map(|(u, t)| (t.clone(), u.clone()))
            .collect();
        Self { by_token, ordered }
    }

    pub fn authenticate(&self, token: &str) -> Option<&UserInfo> {
        self.by_token.get(token)
    }

    pub fn token_of(&self, username: &str) -> Option<&str> {
        self.ordered
            .iter()
            .find(|(u, _)| u.username == username)
            .map(|(_, t)| t.as_str())
    }
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

/// The kubeconfig text: one cluster, one user and context per token, the admin's current.
pub fn kubeconfig(url: &str, ca_pem: &str, users: &Users) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut out = String::new();
    out.push_str("apiVersion: v1\nkind: Config\npreferences: {}\n");
    out.push_str(&format!(
        "clusters:\n- name: {}\n  cluster:\n    server: {}\n    certificate-authority-data: {}\n",
        quote(CLUSTER),
        quote(url),
        quote(&ca)
    ));
    out.push_str("users:\n");
    for (user, token) in &users.ordered {
        out.push_str(&format!(
            "- name: {}\n  user:\n    token: {}\n",
            quote(&user.username),
            quote(token)
        ));
    }
    out.push_str("contexts:\n");
    for (user, _) in &users.ordered {
        out.push_str(&format!(
            "- name: {}\n  context:\n    cluster: {}\n    user: {}\n",
            quote(&context_name(&user.username)),
            quote(CLUSTER),
            quote(&user.username)
        ));
    }
    out.push_str(&format!(
        "current-context: {}\n",
        quote(&context_name(ADMIN))
    ));
    out
}

/// `admin@cce-sim`, `alice@cce-sim`.
pub fn context_name(user: &str) -> String {
    format!("{user}@{CLUSTER}")
}

/// Writes `text` to `path` atomically: a temp file in the same directory, then a rename.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kubeconfig".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_specs() {
        let u: UserSpec = "alice:dev".parse().unwrap();
        assert_eq!(u.groups, vec!["dev"]);
        let u: UserSpec = "bob".parse().unwrap();
        assert!(u.groups.is_empty());
        let u: UserSpec = "carol:a+b".parse().unwrap();
        assert_eq!(u.groups, vec!["a", "b"]);
        assert!("".parse::<UserSpec>().is_err());
        assert!("admin:x".parse::<UserSpec>().is_err());
        assert!("bad name:x".parse::<UserSpec>().is_err());
    }

    #[test]
    fn tokens_authenticate_their_users() {
        let users = Users::new(&["alice:dev".parse().unwrap()]);
        let admin = users.token_of(ADMIN).unwrap();
        assert_eq!(
            users.authenticate(admin).unwrap().groups[0],
            "system:masters"
        );
        let alice = users.token_of("alice").unwrap();
        assert_ne!(admin, alice);
        assert_eq!(users.authenticate(alice).unwrap().username, "alice");
        assert!(users.authenticate("nope").is_none());
        let text = kubeconfig("https://127.0.0.1:1", "PEM", &users);
        assert!(text.contains("current-context: \"admin@cce-sim\""));
        assert!(text.contains(alice));
    }
}
