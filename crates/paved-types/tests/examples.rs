//! Every example manifest at the repository root parses: they teach the format, so they must
//! stay valid as it changes.

use std::path::Path;

use paved_types::parse_manifest;

#[test]
fn every_example_manifest_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    let mut checked = Vec::new();
    for entry in entries {
        let path = entry.expect("listing examples").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let text = std::fs::read_to_string(&path).expect("reading an example");
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Err(e) = parse_manifest(&name, &text) {
                panic!("{name} does not parse:\n{e}");
            }
            checked.push(name);
        }
    }
    checked.sort();
    assert!(
        ["countdown.toml", "hello-web.toml"]
            .iter()
            .all(|n| checked.iter().any(|c| c == n)),
        "missing examples; found {checked:?}"
    );
}
