//! Image references and version tags: the parser never panics on any text, and what it
//! accepts it normalises to a form that reads back as the same reference.
#![no_main]

use cce_cni_guard::policy::{ImageRef, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_version_tag(text);
    let Ok(image) = ImageRef::parse(text) else {
        return;
    };
    let normalised = image.to_string();
    let again = ImageRef::parse(&normalised).unwrap_or_else(|e| {
        panic!("{text:?} normalises to {normalised:?}, which does not parse: {e}")
    });
    assert_eq!(
        again, image,
        "{text:?} → {normalised:?} reads back differently"
    );
    assert_eq!(
        again.to_string(),
        normalised,
        "normalising is not idempotent"
    );
    assert_eq!(
        image.repository(),
        format!("{}/{}", image.host(), image.path())
    );
    assert!(image.same_repository(&again));
    if let Some(tag) = image.tag() {
        let retagged = image.with_tag(tag);
        assert_eq!(retagged.tag(), Some(tag));
        assert!(retagged.same_repository(&image));
        // The tag the version rule reads is the tag the image carries.
        if let Some(version) = image.version() {
            assert_eq!(version.tag(), tag, "version {version} prints another tag");
        }
    }
});

/// Any text as a tag: a version prints back as the text it came from, and orders against
/// itself as equal (semver's ordering, which the patch rule relies on).
fn check_version_tag(text: &str) {
    if let Some(version) = Version::parse_tag(text) {
        assert_eq!(version.tag(), text, "{text:?} prints back as {version}");
        assert_eq!(version.cmp(&version), std::cmp::Ordering::Equal);
        assert!(version.same_line(&version));
        assert_eq!(
            version.line(),
            format!("{}.{}", version.major(), version.minor())
        );
    }
}
