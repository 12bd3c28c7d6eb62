//! `imgd search` and `imgd show`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use imgd_store::report::ImageRef;
use serde_json::Value;

use super::{open_store, print_json};
use crate::cli::{SearchArgs, ShowArgs};

pub fn search(db: &Path, args: SearchArgs) -> Result<ExitCode> {
    let store = open_store(db)?;
    let query = args.query.join(" ");
    let hits = store.search_text(&query, args.limit)?;
    if args.json {
        print_json(&hits)?;
    } else if hits.is_empty() {
        eprintln!("no match for {query:?}");
    } else {
        for hit in &hits {
            println!("{}\n    {}", hit.path, hit.snippet);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(db: &Path, args: ShowArgs) -> Result<ExitCode> {
    let store = open_store(db)?;
    // A path that exists is resolved the way `imgd enqueue` registered it; anything else that
    // is a number is an id.
    let canonical = std::fs::canonicalize(&args.image)
        .ok()
        .and_then(|p| p.to_str().map(str::to_string));
    let value = match (&canonical, args.image.parse::<i64>()) {
        (Some(path), _) => store.show(&ImageRef::Path(path)),
        (None, Ok(id)) => store.show(&ImageRef::Id(id)),
        (None, Err(_)) => store.show(&ImageRef::Path(&args.image)),
    }?;
    if args.json {
        print_json(&value)?;
    } else {
        print_sections(&value);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `show` output as indented sections, skipping empty values.
fn print_sections(value: &Value) {
    let Value::Object(sections) = value else {
        return;
    };
    for (name, section) in sections {
        println!("{name}:");
        match section {
            Value::Object(fields) => {
                for (key, field) in fields {
                    match field {
                        Value::Null => {}
                        Value::String(s) => println!("  {key}: {s}"),
                        Value::Object(o) if o.is_empty() => {}
                        other => println!("  {key}: {other}"),
                    }
                }
            }
            other => println!("  {other}"),
        }
    }
}
