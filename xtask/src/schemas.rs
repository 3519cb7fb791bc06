//! `cargo xtask schemas [--check]`: writes or checks every generated file.
//!
//! The generated set is `schemas/` (less the hand-written `examples/` and
//! `README.md`), the marked message reference inside docs/protocol.md, and the
//! browser package's TypeScript declarations of the messages, which
//! crates/web/src/lib.rs includes in its `typescript_custom_section`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use petchat_protocol::schema::{self, Example};

/// Marks the start of the generated part of docs/protocol.md.
const DOC_BEGIN: &str = "<!-- BEGIN GENERATED: message reference (cargo xtask schemas) -->";
/// Marks its end.
const DOC_END: &str = "<!-- END GENERATED -->";
/// The protocol guide, relative to the workspace root.
const PROTOCOL_DOC: &str = "docs/protocol.md";
/// The messages as TypeScript, beside the web crate's source that includes it.
const TYPESCRIPT: &str = "crates/web/src/protocol.d.ts";

/// The workspace root: xtask lives one level below it.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits inside the workspace").to_path_buf()
}

/// Every generated file, keyed by its path relative to the root, with its
/// expected contents.
fn expected(root: &Path) -> Result<BTreeMap<PathBuf, String>> {
    let examples = valid_examples(root)?;
    let mut files: BTreeMap<PathBuf, String> = schema::generate(&examples)
        .into_iter()
        .map(|file| (Path::new("schemas").join(file.path), file.contents))
        .collect();
    let doc_path = root.join(PROTOCOL_DOC);
    let doc = fs::read_to_string(&doc_path).with_context(|| format!("reading {}", doc_path.display()))?;
    files.insert(PROTOCOL_DOC.into(), splice(&doc, &schema::protocol_doc_section(&examples))?);
    files.insert(TYPESCRIPT.into(), schema::typescript_declarations());
    Ok(files)
}

/// The golden examples of `schemas/examples/valid`, in file name order.
pub(crate) fn valid_examples(root: &Path) -> Result<Vec<Example>> {
    let dir = root.join("schemas/examples/valid");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let text = fs::read_to_string(dir.join(&name)).with_context(|| format!("reading {name}"))?;
            let value = serde_json::from_str(&text).with_context(|| format!("{name} is not JSON"))?;
            Example::from_file(&name, value).with_context(|| {
                format!("{name}: expected <client|server>.<type>[--<variant>].json naming a known type")
            })
        })
        .collect()
}

/// Replaces the marked region of the protocol guide.
fn splice(doc: &str, section: &str) -> Result<String> {
    let (Some(begin), Some(end)) = (doc.find(DOC_BEGIN), doc.find(DOC_END)) else {
        bail!("{PROTOCOL_DOC} must contain the markers {DOC_BEGIN} and {DOC_END}");
    };
    let start = begin + DOC_BEGIN.len();
    if end < start {
        bail!("{PROTOCOL_DOC}: {DOC_END} comes before {DOC_BEGIN}");
    }
    Ok(format!("{}\n{section}\n{}", &doc[..start], &doc[end..]))
}

/// Generated files on disk that the generator no longer makes.
fn leftovers(root: &Path, expected: &BTreeMap<PathBuf, String>) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for dir in ["schemas", "schemas/client", "schemas/server"] {
        let Ok(entries) = fs::read_dir(root.join(dir)) else { continue };
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let path = Path::new(dir).join(&name);
            let generated = name.ends_with(".schema.json") || name == "asyncapi.yaml" || name == "openapi.json";
            if generated && !expected.contains_key(&path) {
                found.push(path);
            }
        }
    }
    Ok(found)
}

/// Writes every generated file and removes the ones no longer generated.
pub(crate) fn write(root: &Path) -> Result<()> {
    let expected = expected(root)?;
    for path in leftovers(root, &expected)? {
        fs::remove_file(root.join(&path)).with_context(|| format!("removing {}", path.display()))?;
        println!("removed {}", path.display());
    }
    let mut written = 0;
    for (path, contents) in &expected {
        let full = root.join(path);
        if fs::read_to_string(&full).ok().as_deref() == Some(contents.as_str()) {
            continue;
        }
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&full, contents).with_context(|| format!("writing {}", full.display()))?;
        println!("wrote {}", path.display());
        written += 1;
    }
    println!("{written} of {} generated files changed", expected.len());
    Ok(())
}

/// A report of every stale generated file with its diff; empty when all are fresh.
pub(crate) fn check(root: &Path) -> Result<String> {
    let expected = expected(root)?;
    let mut report = String::new();
    for (path, contents) in &expected {
        let actual = fs::read_to_string(root.join(path)).unwrap_or_default();
        if actual != *contents {
            let diff = similar::TextDiff::from_lines(&actual, contents);
            let name = path.display().to_string();
            report.push_str(&format!(
                "{}\n",
                diff.unified_diff().context_radius(3).header(&name, &format!("{name} (expected)"))
            ));
        }
    }
    for path in leftovers(root, &expected)? {
        report.push_str(&format!("{} is no longer generated\n", path.display()));
    }
    if !report.is_empty() {
        report.push_str("generated files are stale: run `cargo xtask schemas` and commit the result\n");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changing a wire type in Rust without regenerating fails here.
    #[test]
    fn generated_files_are_fresh() {
        let report = check(&workspace_root()).expect("the generator runs");
        assert!(report.is_empty(), "{report}");
    }

    #[test]
    fn the_doc_region_is_replaced_and_nothing_else() {
        let doc = format!("intro\n{DOC_BEGIN}\nold\n{DOC_END}\noutro\n");
        assert_eq!(splice(&doc, "new").ok(), Some(format!("intro\n{DOC_BEGIN}\nnew\n{DOC_END}\noutro\n")));
        assert!(splice("no markers", "new").is_err());
    }

    #[test]
    fn every_message_type_has_a_golden_example() {
        let examples = valid_examples(&workspace_root()).expect("examples load");
        for direction in [schema::Direction::Client, schema::Direction::Server] {
            for wire_type in direction.wire_types() {
                assert!(
                    examples.iter().any(|e| e.direction == direction && e.wire_type == *wire_type),
                    "no example for {} {wire_type}",
                    direction.as_str()
                );
            }
        }
    }
}
