//! A small, deterministic YAML writer for the JSON values the generators build.
//!
//! Block style for mappings and sequences, double-quoted scalars (a JSON
//! string is a valid YAML double-quoted scalar), literal blocks for
//! multi-line text. It covers exactly what `asyncapi.yaml` needs, so the
//! output stays stable and readable without a YAML serializer dependency.

use serde_json::Value;

/// `value` as a YAML document, after `# ` comment lines from `header`.
pub(super) fn to_yaml(header: &str, value: &Value) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    node(&mut out, value, 0, false);
    out
}

/// Writes a block node at `indent`; `inline_first` when a `- ` already sits
/// where its first line starts.
fn node(out: &mut String, value: &Value, indent: usize, inline_first: bool) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (i, (key, child)) in map.iter().enumerate() {
                if i > 0 || !inline_first {
                    pad(out, indent);
                }
                out.push_str(&key_text(key));
                out.push(':');
                child_after_colon(out, child, indent);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 || !inline_first {
                    pad(out, indent);
                }
                out.push_str("- ");
                match item {
                    Value::Object(m) if !m.is_empty() => node(out, item, indent + 2, true),
                    Value::Array(a) if !a.is_empty() => node(out, item, indent + 2, true),
                    _ => {
                        scalar(out, item, indent + 2);
                        out.push('\n');
                    }
                }
            }
        }
        _ => {
            scalar(out, value, indent);
            out.push('\n');
        }
    }
}

fn child_after_colon(out: &mut String, child: &Value, indent: usize) {
    match child {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            node(out, child, indent + 2, false);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            node(out, child, indent + 2, false);
        }
        _ => {
            out.push(' ');
            scalar(out, child, indent + 2);
            out.push('\n');
        }
    }
}

/// A scalar or an empty collection; multi-line text becomes a literal block
/// whose lines sit at `indent`.
fn scalar(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::String(s) if literal_block_fits(s) => {
            out.push_str(if s.ends_with('\n') { "|" } else { "|-" });
            for line in s.trim_end_matches('\n').split('\n') {
                out.push('\n');
                if !line.is_empty() {
                    pad(out, indent);
                    out.push_str(line);
                }
            }
        }
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
        other => out.push_str(&serde_json::to_string(other).expect("a JSON value always serializes")),
    }
}

/// Literal blocks keep text verbatim, as long as it has no characters that
/// YAML would not keep (control characters, a leading space that would read
/// as indentation, more than one final line break).
fn literal_block_fits(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s.ends_with("\n\n")
        && !s.chars().any(|c| c.is_control() && c != '\n')
}

fn key_text(key: &str) -> String {
    let plain = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '$' || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "$_.-".contains(c))
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        );
    if plain { key.to_owned() } else { serde_json::to_string(key).expect("a string always serializes") }
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_collections_are_written_in_block_style() {
        let value = json!({
            "asyncapi": "3.0.0",
            "list": [{"a": 1, "b": [true, null]}, "x", [], {}],
            "on": "quoted key",
            "text": "two\nlines",
        });
        let expected = "# made here\nasyncapi: \"3.0.0\"\nlist:\n  - a: 1\n    b:\n      - true\n      - null\n  - \"x\"\n  - []\n  - {}\n\"on\": \"quoted key\"\ntext: |-\n  two\n  lines\n";
        assert_eq!(to_yaml("made here", &value), expected);
    }
}
