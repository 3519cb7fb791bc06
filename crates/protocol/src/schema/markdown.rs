//! The generated parts of the docs: message reference, close and error code tables.

use schemars::generate::SchemaSettings;

use super::{Direction, Example, GENERATED_NOTICE, messages};
use crate::close::CloseCode;
use crate::error::ErrorCode;

/// The message reference of `docs/protocol.md`: every message with its doc and
/// its golden example, then the close and error code tables.
pub fn protocol_doc_section(examples: &[Example]) -> String {
    let mut out = format!("<!-- {GENERATED_NOTICE} -->\n");
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    for direction in [Direction::Client, Direction::Server] {
        out.push_str(match direction {
            Direction::Client => "\n### Client to server\n",
            Direction::Server => "\n### Server to client\n",
        });
        for message in messages(direction, &mut generator) {
            out.push_str(&format!("\n#### `{}`\n\n{}\n", message.wire_type, message.description()));
            // The plain example (no `--variant`) shows the message best.
            let of_type = |e: &&Example| e.direction == direction && e.wire_type == message.wire_type;
            let example = examples.iter().filter(of_type).min_by_key(|e| e.name.contains("--"));
            if let Some(example) = example {
                let json = serde_json::to_string_pretty(&example.value).expect("a JSON value always serializes");
                out.push_str(&format!(
                    "\n```json\n{json}\n```\n\n(`schemas/examples/valid/{}.json`; schema \
                     `schemas/{}/{}.schema.json`)\n",
                    example.name,
                    direction.as_str(),
                    message.wire_type
                ));
            }
        }
    }
    out.push_str("\n### Close codes\n\n");
    out.push_str(&close_code_table());
    out.push_str("\n### Error codes\n\n");
    out.push_str(&error_code_table());
    out
}

/// SPEC §4 as a markdown table, from [`CloseCode`].
pub(super) fn close_code_table() -> String {
    let mut out = String::from("| code | name | reconnect | meaning |\n|---|---|---|---|\n");
    for code in CloseCode::ALL {
        out.push_str(&format!(
            "| {} | `{}` | {:?} | {} |\n",
            code.code(),
            code.name().unwrap_or_default(),
            code.reconnect(),
            code.description()
        ));
    }
    out
}

/// The error codes as a markdown table, from [`ErrorCode`].
pub(super) fn error_code_table() -> String {
    let mut out = String::from("| code | meaning |\n|---|---|\n");
    for code in ErrorCode::ALL {
        out.push_str(&format!("| `{}` | {} |\n", code.as_str(), code.description()));
    }
    out
}
