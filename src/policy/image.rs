//! Container image references (`[host[:port]/]path[:tag][@digest]`) and version tags.
//!
//! Follows the distribution reference grammar that container runtimes use, with Docker's
//! normalisation: no host means `docker.io`, and a one-segment Docker Hub path means
//! `library/NAME`. Two references name the same image when their normalised forms are equal.

use std::cmp::Ordering;
use std::fmt;

/// Longest repository name the grammar allows (host + path).
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;
const DOCKER_HUB: &str = "docker.io";

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("the image reference is empty")]
    Empty,
    #[error(
        "image reference {0:?} names a repository longer than {MAX_NAME_LEN} characters \
         (counting the docker.io/library/ that a short name stands for)"
    )]
    TooLong(String),
    #[error("image reference {reference:?} has an invalid registry host {host:?}")]
    InvalidHost { reference: String, host: String },
    #[error(
        "image reference {reference:?} has an invalid path component {component:?} \
         (lower-case letters, digits and single . _ __ or - separators)"
    )]
    InvalidPath {
        reference: String,
        component: String,
    },
    #[error(
        "image reference {reference:?} has an invalid tag {tag:?} \
         (up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)"
    )]
    InvalidTag { reference: String, tag: String },
    #[error("image reference {reference:?} has an invalid digest {digest:?} (ALGORITHM:HEX)")]
    InvalidDigest { reference: String, digest: String },
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    host: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises a reference as a container runtime would.
    pub fn parse(reference: &str) -> Result<Self, ImageRefError> {
        if reference.is_empty() {
            return Err(ImageRefError::Empty);
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                check_digest(reference, digest)?;
                (rest, Some(digest.to_owned()))
            }
            None => (reference, None),
        };
        // A ':' after the last '/' separates the tag; one before it belongs to a host port.
        let last_slash = rest.rfind('/');
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
                let tag = &rest[colon + 1..];
                check_tag(reference, tag)?;
                (&rest[..colon], Some(tag.to_owned()))
            }
            _ => (rest, None),
        };
        let (host, path) = split_host(name);
        if let Some(host) = host {
            check_host(reference, host)?;
        }
        if path.is_empty() {
            return Err(ImageRefError::InvalidPath {
                reference: reference.to_owned(),
                component: String::new(),
            });
        }
        for component in path.split('/') {
            if !is_path_component(component) {
                return Err(ImageRefError::InvalidPath {
                    reference: reference.to_owned(),
                    component: component.to_owned(),
                });
            }
        }
        let host = match host {
            None | Some("index.docker.io") => DOCKER_HUB.to_owned(),
            Some(host) => host.to_owned(),
        };
        let path = if host == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        // The limit is on the normalised name, as Docker applies it: checking the name as
        // written would accept `nginx`-style names whose normalised form then fails to parse.
        if host.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(ImageRefError::TooLong(reference.to_owned()));
        }
        Ok(Self {
            host,
            path,
            tag,
            digest,
        })
    }

    /// Registry host, with port if any (`registry.baidubce.com`, `10.0.0.1:5000`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Repository path inside the registry (`cce-plugin-pro/cce-cni`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host/path`: what "the same repository" compares.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.host, self.path)
    }

    /// Same host and path, compared without building `repository()` strings.
    pub fn same_repository(&self, other: &ImageRef) -> bool {
        self.host == other.host && self.path == other.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The tag read as a version, if it is one.
    pub fn version(&self) -> Option<Version> {
        self.tag.as_deref().and_then(Version::parse_tag)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            host: self.host.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_owned()),
            digest: None,
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits off the registry host the way Docker does: the first segment is a host only if it
/// looks like one (has a '.' or ':', is `localhost`, or has upper-case letters).
fn split_host(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_host(reference: &str, host: &str) -> Result<(), ImageRefError> {
    let invalid = || ImageRefError::InvalidHost {
        reference: reference.to_owned(),
        host: host.to_owned(),
    };
    let (name, port) = if let Some(inner) = host.strip_prefix('[') {
        // [IPv6]:port
        let (ip, after) = inner.split_once(']').ok_or_else(invalid)?;
        if ip.is_empty()
            || !ip
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err(invalid());
        }
        match after {
            "" => return Ok(()),
            _ => (None, after.strip_prefix(':').ok_or_else(invalid)?),
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (Some(name), port),
            None => (Some(host), ""),
        }
    };
    if let Some(name) = name {
        let components_ok = !name.is_empty()
            && name.split('.').all(|c| {
                !c.is_empty()
                    && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                    && !c.starts_with('-')
                    && !c.ends_with('-')
            });
        if !components_ok {
            return Err(invalid());
        }
    }
    // A ':' promises a port: digits only, not empty.
    let has_port = host.starts_with('[') || host.contains(':');
    if has_port && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit())) {
        return Err(invalid());
    }
    Ok(())
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn check_tag(reference: &str, tag: &str) -> Result<(), ImageRefError> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag.chars().next().is_some_and(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ImageRefError::InvalidTag {
            reference: reference.to_owned(),
            tag: tag.to_owned(),
        })
    }
}

fn check_digest(reference: &str, digest: &str) -> Result<(), ImageRefError> {
    let invalid = || ImageRefError::InvalidDigest {
        reference: reference.to_owned(),
        digest: digest.to_owned(),
    };
    let (algorithm, hex) = digest.split_once(':').ok_or_else(invalid)?;
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '-', '_']).all(|c| {
            c.chars().next().is_some_and(|f| f.is_ascii_alphabetic())
                && c.chars().all(|ch| ch.is_ascii_alphanumeric())
        });
    let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
    // The well-known algorithms have fixed lengths; runtimes reject anything else.
    let length_ok = match algorithm {
        "sha256" => hex.len() == 64,
        "sha512" => hex.len() == 128,
        _ => true,
    };
    if algorithm_ok && hex_ok && length_ok {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// A version tag: `MAJOR.MINOR.PATCH` with an optional leading `v` and optional `-pre` and
/// `+build` parts (semver). Orders as semver does: pre-releases sort below their release.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    semver: semver::Version,
    v_prefix: bool,
}

impl Version {
    /// Reads a tag as a version; `None` for tags such as `latest` or `host-local`.
    pub fn parse_tag(tag: &str) -> Option<Self> {
        let (v_prefix, bare) = match tag.strip_prefix('v') {
            Some(bare) => (true, bare),
            None => (false, tag),
        };
        // semver accepts only the strict three-number form, which is what we want.
        semver::Version::parse(bare)
            .ok()
            .map(|semver| Self { semver, v_prefix })
    }

    pub fn major(&self) -> u64 {
        self.semver.major
    }

    pub fn minor(&self) -> u64 {
        self.semver.minor
    }

    pub fn patch(&self) -> u64 {
        self.semver.patch
    }

    pub fn is_prerelease(&self) -> bool {
        !self.semver.pre.is_empty()
    }

    /// Same MAJOR and MINOR: a change between the two is a patch change.
    pub fn same_line(&self, other: &Version) -> bool {
        self.major() == other.major() && self.minor() == other.minor()
    }

    /// `MAJOR.MINOR`, as messages print the release line.
    pub fn line(&self) -> String {
        format!("{}.{}", self.major(), self.minor())
    }

    /// The tag form, with the `v` if it had one.
    pub fn tag(&self) -> String {
        if self.v_prefix {
            format!("v{}", self.semver)
        } else {
            self.semver.to_string()
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.semver.cmp(&other.semver)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CCE: &str = "registry.baidubce.com/cce-plugin-pro/cce-cni";

    #[track_caller]
    fn parsed(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_the_upstream_image() {
        let r = parsed(&format!("{CCE}:v1.9.3"));
        assert_eq!(r.host(), "registry.baidubce.com");
        assert_eq!(r.path(), "cce-plugin-pro/cce-cni");
        assert_eq!(r.tag(), Some("v1.9.3"));
        assert_eq!(r.digest(), None);
        assert_eq!(r.repository(), CCE);
        let v = r.version().unwrap();
        assert_eq!((v.major(), v.minor(), v.patch()), (1, 9, 3));
        assert_eq!(r.to_string(), format!("{CCE}:v1.9.3"));
    }

    #[test]
    fn normalises_docker_hub() {
        assert_eq!(parsed("nginx").to_string(), "docker.io/library/nginx");
        assert_eq!(
            parsed("nginx:1.25").to_string(),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(
            parsed("index.docker.io/library/nginx").to_string(),
            "docker.io/library/nginx"
        );
        assert_eq!(
            parsed("docker.io/nginx:1.25").to_string(),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(
            parsed("bitnami/redis:7.2.0").to_string(),
            "docker.io/bitnami/redis:7.2.0"
        );
        assert_eq!(parsed("nginx"), parsed("docker.io/library/nginx"));
    }

    #[test]
    fn host_with_port_is_not_a_tag() {
        let r = parsed("10.0.0.5:5000/cce/cce-cni");
        assert_eq!(r.host(), "10.0.0.5:5000");
        assert_eq!(r.tag(), None);
        let r = parsed("localhost:5000/cce-cni:1.2.1");
        assert_eq!(r.host(), "localhost:5000");
        assert_eq!(r.tag(), Some("1.2.1"));
        let r = parsed("[fd00::1]:5000/cce/cce-cni:v1.9.3");
        assert_eq!(r.host(), "[fd00::1]:5000");
        assert_eq!(r.path(), "cce/cce-cni");
    }

    #[test]
    fn digests() {
        let hex = "a".repeat(64);
        let r = parsed(&format!("{CCE}@sha256:{hex}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(format!("sha256:{hex}").as_str()));
        assert!(r.version().is_none());
        let r = parsed(&format!("{CCE}:v1.9.3@sha256:{hex}"));
        assert_eq!(r.tag(), Some("v1.9.3"));
        assert!(ImageRef::parse(&format!("{CCE}@sha256:abc")).is_err());
        assert!(ImageRef::parse(&format!("{CCE}@sha256")).is_err());
    }

    #[test]
    fn tags_seen_upstream() {
        for (tag, version) in [
            ("v1.9.3", Some((1, 9, 3))),
            ("1.2.1", Some((1, 2, 1))),
            ("host-local", None),
            ("host-local-eri", None),
            ("test", None),
            ("latest", None),
            ("v1.10.0-rc.1", Some((1, 10, 0))),
            ("v1.9", None),
            ("v01.9.3", None),
        ] {
            let r = parsed(&format!("{CCE}:{tag}"));
            assert_eq!(
                r.version().map(|v| (v.major(), v.minor(), v.patch())),
                version,
                "{tag}"
            );
        }
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            ":v1",
            "registry.baidubce.com/",
            "registry.baidubce.com/CCE/cni:v1",
            "registry.baidubce.com/cce//cni",
            "registry.baidubce.com/cce/cni:",
            "registry.baidubce.com/cce/cni:-bad",
            "registry.baidubce.com/cce/cni:v1.9.3+build",
            "bad_host.com:x/cce:v1",
            "-host.com/cce:v1",
            "cce cni:v1",
            "cce/cni@",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("registry.example.com/{}", "a".repeat(300));
        assert!(matches!(
            ImageRef::parse(&long),
            Err(ImageRefError::TooLong(_))
        ));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = ImageRef::parse("registry.baidubce.com/cce/cni:").unwrap_err();
        assert!(err.to_string().contains("invalid tag"), "{err}");
        let err = ImageRef::parse("registry.baidubce.com/CCE/cni").unwrap_err();
        assert!(err.to_string().contains("\"CCE\""), "{err}");
    }

    #[test]
    fn versions_order_as_semver() {
        let v = |s| Version::parse_tag(s).unwrap();
        assert!(v("v1.9.4") > v("v1.9.3"));
        assert!(v("v1.9.4-rc.1") < v("v1.9.4"));
        assert!(v("1.9.10") > v("v1.9.9"));
        assert!(v("v1.9.3").same_line(&v("1.9.7")));
        assert!(!v("v1.9.3").same_line(&v("v1.10.0")));
        assert_eq!(v("v1.9.3").tag(), "v1.9.3");
        assert_eq!(v("1.2.1").tag(), "1.2.1");
        assert_eq!(v("v1.9.3").line(), "1.9");
        assert!(Version::parse_tag("v1.9.3+b7").is_some());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = ImageRef::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_reference_like_input(s in "[a-zA-Z0-9:/@._\\-\\[\\]]{0,80}") {
            let _ = ImageRef::parse(&s);
        }

        #[test]
        fn normalised_form_round_trips(
            host in proptest::option::of("[a-z][a-z0-9]{0,8}(\\.[a-z0-9]{1,6}){1,2}(:[0-9]{2,5})?"),
            // A first segment with a '.' would be read as a host, as Docker does.
            path in "[a-z0-9]{1,6}([_-][a-z0-9]{1,6}){0,2}(/[a-z0-9]{1,8}([._-][a-z0-9]{1,4})?){0,2}",
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            digest in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let mut s = match &host { Some(h) => format!("{h}/{path}"), None => path.clone() };
            if let Some(t) = &tag { s.push(':'); s.push_str(t); }
            if let Some(d) = &digest { s.push_str("@sha256:"); s.push_str(d); }
            let first = ImageRef::parse(&s).unwrap();
            let again = ImageRef::parse(&first.to_string()).unwrap();
            prop_assert_eq!(&first, &again);
            prop_assert_eq!(first.tag(), tag.as_deref());
        }
    }
}
