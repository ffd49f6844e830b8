//! Property tests: `parse_manifest` never panics, whatever it is given, and every problem it
//! reports points inside the text.

use paved_types::{ManifestError, parse_manifest};
use proptest::prelude::*;

const VALID: &str = r#"name = "web"
kind = "service"
instances = 2
command = ["/bin/sh", "-c", "exec ./server --port $PORT"]
env = { RUST_LOG = "info", GREETING = "héllo" }
network = "host"
driver = "sandbox"

[resources]
cpu = 0.5
memory = "128MiB"
pids = 256

[restart]
policy = "on-failure"
attempts = 5
delay = "1s"

[[ports]]
name = "http"

[[ports]]
name = "admin"

[health]
http = "/healthz"
port = "admin"
interval = "10s"
timeout = "2s"
grace = "5s"
threshold = 3
"#;

/// One edit to a manifest, at a character position taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    Replace { at: usize, with: char },
}

fn edit() -> impl Strategy<Value = Edit> {
    // Inserts favour TOML's own punctuation, which reaches deeper into the parser.
    let text = prop_oneof![any::<String>(), "[\\[\\]{}=\",.'#\n a-z0-9_-]{1,12}"];
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), text).prop_map(|(at, text)| Edit::Insert { at, text }),
        (any::<usize>(), any::<char>()).prop_map(|(at, with)| Edit::Replace { at, with }),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = |i: usize| i % (chars.len() + 1);
    match edit {
        Edit::Delete { at: i, len } => {
            let start = at(*i);
            let end = (start + len).min(chars.len());
            chars.drain(start..end);
        }
        Edit::Insert { at: i, text } => {
            let start = at(*i);
            chars.splice(start..start, text.chars());
        }
        Edit::Replace { at: i, with } => {
            let i = at(*i);
            if let Some(c) = chars.get_mut(i) {
                *c = *with;
            }
        }
    }
    chars.into_iter().collect()
}

/// Parses `text` and checks that every reported position lies within it.
fn parse_and_check_positions(text: &str) -> Result<(), TestCaseError> {
    let Err(ManifestError { problems }) = parse_manifest("p.toml", text) else {
        return Ok(());
    };
    prop_assert!(!problems.is_empty());
    let lines: Vec<&str> = text.split('\n').collect();
    for p in &problems {
        prop_assert_eq!(&p.file, "p.toml");
        prop_assert!(!p.message.is_empty());
        let line = lines.get(p.line as usize - 1);
        prop_assert!(line.is_some(), "line {} of {}", p.line, lines.len());
        let width = line.map_or(0, |l| l.chars().count());
        prop_assert!(p.column >= 1 && p.column as usize <= width + 1, "{p:?}");
    }
    let sorted = problems
        .windows(2)
        .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column));
    prop_assert!(sorted, "problems out of order: {problems:?}");
    Ok(())
}

#[test]
fn the_base_manifest_is_valid() {
    assert!(parse_manifest("p.toml", VALID).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text(text in any::<String>()) {
        parse_and_check_positions(&text)?;
    }

    #[test]
    fn toml_shaped_text(text in "[\\[\\]{}=\",.'#\n a-z0-9_-]{0,200}") {
        parse_and_check_positions(&text)?;
    }

    #[test]
    fn mutated_manifest(edits in prop::collection::vec(edit(), 1..6)) {
        let text = edits.iter().fold(VALID.to_owned(), |text, e| apply(&text, e));
        parse_and_check_positions(&text)?;
    }
}
