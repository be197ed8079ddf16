//! Inputs the fuzz targets (fuzz/, docs/fuzzing.md) found failing, kept so the fixes stay
//! fixed. Each test names the target that found it and the property it broke.

use cce_cni_guard::policy::{ImageRef, ImageRefError};

/// Asserts the image_ref property: an accepted reference's normalised form parses back to
/// the same reference.
#[track_caller]
fn assert_round_trips(reference: &str) {
    let image = ImageRef::parse(reference).unwrap_or_else(|e| panic!("{reference:?}: {e}"));
    let normalised = image.to_string();
    let again = ImageRef::parse(&normalised)
        .unwrap_or_else(|e| panic!("{reference:?} → {normalised:?} does not parse: {e}"));
    assert_eq!(again, image);
}

/// image_ref: a 249-character Docker Hub path was accepted, but its normalised form
/// (`docker.io/` added) is over the 255-character limit and was refused. The limit now
/// applies to the normalised name, as Docker applies it.
#[test]
fn image_ref_length_limit_applies_to_the_normalised_name() {
    let found = "cce-plugincce-p-pro/cce-cnie-cngin-opr/cco/cce-cine-cngin-pro/cce-cnnlugincce-p-pro/\
                 cce-cnie-cngin-opr/cco/cce-cnie-cngin-pro/cinnigo-pr/cco/cce-cine-cngin-pgin-pro/\
                 cce-cnnlugincce-p-pro/cce-cnie-cngin-op888888888888888r/cco/cce-cniegin-opr/cco/3rpn";
    assert_eq!(found.len(), 249);
    assert!(matches!(
        ImageRef::parse(found),
        Err(ImageRefError::TooLong(_))
    ));
    // One segment gains `docker.io/library/` (18 characters): 237 is the longest that fits.
    let longest = "a".repeat(255 - "docker.io/library/".len());
    assert_round_trips(&longest);
    assert_round_trips(&format!("{longest}:v1.9.3"));
    let err = ImageRef::parse(&format!("{longest}a")).unwrap_err();
    assert!(matches!(err, ImageRefError::TooLong(_)), "{err}");
    assert!(err.to_string().contains("docker.io/library/"), "{err}");
    // A name with its own host is counted as written.
    let host = "registry.baidubce.com/";
    assert_round_trips(&format!("{host}{}", "a".repeat(255 - host.len())));
    assert!(ImageRef::parse(&format!("{host}{}", "a".repeat(256 - host.len()))).is_err());
}
