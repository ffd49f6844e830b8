//! Manifest parsing of `image`: a reference instead of (or beside) a command.

use paved_types::parse_manifest;

fn parse(extra: &str) -> Result<(Option<String>, Vec<String>), String> {
    let text = format!("name = \"app\"\nkind = \"batch\"\n{extra}");
    parse_manifest("t.toml", &text)
        .map(|spec| (spec.image, spec.command))
        .map_err(|e| e.to_string())
}

#[test]
fn an_image_makes_the_command_optional() {
    let (image, command) = parse("image = \"127.0.0.1:5000/team/app:1.2\"\n").unwrap();
    assert_eq!(image.as_deref(), Some("127.0.0.1:5000/team/app:1.2"));
    assert!(command.is_empty());
    let digest = format!("registry.local/app@sha256:{}", "a".repeat(64));
    let (image, _) = parse(&format!("image = \"{digest}\"\ncommand = [\"/bin/app\"]\n")).unwrap();
    assert_eq!(image, Some(digest));
    let (image, _) = parse("image = \"oci:/srv/images/app:1.2\"\n").unwrap();
    assert_eq!(image.as_deref(), Some("oci:/srv/images/app:1.2"));
    assert!(
        parse("image = \"oci:relative/app\"\n")
            .unwrap_err()
            .contains("absolute path")
    );
}

#[test]
fn without_an_image_the_command_is_required() {
    let err = parse("").unwrap_err();
    assert!(err.contains("missing required key \"command\""), "{err}");
}

#[test]
fn bad_references_name_the_field_and_the_shape() {
    for (bad, why) in [
        ("app", "no registry"),
        ("", "empty"),
        ("reg/app latest", "spaces"),
        ("reg/app@sha256:abc", "64 lowercase hex"),
    ] {
        let err = parse(&format!("image = \"{bad}\"\n")).unwrap_err();
        assert!(err.contains("t.toml:3:9") && err.contains("image"), "{err}");
        assert!(err.contains(why), "{bad:?}: {err}");
    }
    let err = parse("image = 5\n").unwrap_err();
    assert!(err.contains("image") && err.contains("string"), "{err}");
}

#[test]
fn an_image_needs_the_sandbox() {
    let err = parse("image = \"reg/app:1\"\ndriver = \"process\"\n").unwrap_err();
    assert!(err.contains("an image needs the sandbox"), "{err}");
}
