//! `imgd search` and `imgd show`.

use imgd_store::location::Location;
use std::process::ExitCode;

use anyhow::Result;
use imgd_store::Store;
use imgd_store::report::ImageRef;
use imgd_store::vectors::{SearchMode, SearchRequest, SortOrder, VectorCache};
use serde_json::Value;

use super::config::FileConfig;
use super::{embedder, open_store, print_json};
use crate::cli::{SearchArgs, SearchModeArg, ShowArgs, SortArg};

pub fn search(db: &Location, args: SearchArgs) -> Result<ExitCode> {
    let store = open_store(db)?;
    let query = args.query.join(" ");
    let similar_to = match &args.similar {
        Some(image) => Some(resolve_image(&store, image)?),
        None => None,
    };
    let mode = args.mode.map(|m| match m {
        SearchModeArg::Text => SearchMode::Text,
        SearchModeArg::Semantic => SearchMode::Semantic,
        SearchModeArg::Hybrid => SearchMode::Hybrid,
    });
    let mut cache = VectorCache::default();
    // Only query words need the text encoder (--similar uses a stored vector).
    let mut encoder = if !query.trim().is_empty() && mode != Some(SearchMode::Text) {
        let models = store.embedding_models_cached(&mut cache)?;
        match imgd_store::vectors::choose_serving_model(&models) {
            // No vectors yet: no text encoder to load.
            None => None,
            Some(serving) => {
                let config = FileConfig::load(args.config.as_deref())?;
                embedder::text_embedder(Some(&serving.model), &config)
            }
        }
    } else {
        None
    };
    let request = SearchRequest {
        text: Some(query.as_str()),
        similar_to,
        mode,
        sort: match args.sort {
            SortArg::Relevance => SortOrder::Relevance,
            SortArg::Aesthetic => SortOrder::Aesthetic,
        },
        limit: args.limit,
    };
    let encoder = encoder
        .as_mut()
        .map(|e| e.as_mut() as &mut dyn imgd_store::vectors::TextEmbedder);
    let response = store.search(&request, encoder, &mut cache)?;
    if let Some(note) = &response.note {
        eprintln!("note: {note}");
    }
    if args.json {
        print_json(&response.hits)?;
    } else if response.hits.is_empty() {
        eprintln!("no match for {query:?}");
    } else {
        for hit in &response.hits {
            let mut details = Vec::new();
            if !hit.snippet.is_empty() {
                details.push(hit.snippet.replace('\n', " / "));
            }
            if let Some(similarity) = hit.similarity {
                details.push(format!("similarity {similarity:.3}"));
            }
            if let Some(aesthetic) = hit.aesthetic {
                details.push(format!("aesthetic {aesthetic:.2}"));
            }
            println!("{}\n    {}", hit.path, details.join("  ·  "));
        }
        if let Some(mode) = response.mode {
            let model = response
                .model
                .as_ref()
                .map(|m| format!(", {m}"))
                .unwrap_or_default();
            eprintln!("({} search{model})", mode.name());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The id of an image named on the command line: a path that exists is resolved the way
/// `imgd enqueue` registered it; anything else that is a number is an id; else the path as
/// given.
fn resolve_image(store: &Store, image: &str) -> Result<i64> {
    let canonical = std::fs::canonicalize(image)
        .ok()
        .and_then(|p| p.to_str().map(str::to_string));
    let id = match (&canonical, image.parse::<i64>()) {
        (Some(path), _) => store.image_id(&ImageRef::Path(path)),
        (None, Ok(id)) => store.image_id(&ImageRef::Id(id)),
        (None, Err(_)) => store.image_id(&ImageRef::Path(image)),
    }?;
    Ok(id)
}

pub fn show(db: &Location, args: ShowArgs) -> Result<ExitCode> {
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
    let image_size = sections
        .get("image")
        .and_then(|image| Some((image["width"].as_f64()?, image["height"].as_f64()?)));
    for (name, section) in sections {
        println!("{name}:");
        match section {
            Value::Object(fields) => {
                let readable = readable_data(name, fields.get("data"), image_size);
                for line in &readable {
                    println!("  {line}");
                }
                for (key, field) in fields {
                    if (key == "data" || (name == "ocr" && key == "text")) && !readable.is_empty() {
                        continue;
                    }
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

/// One line per face (box, score), per OCR line (text, confidence) or per object (label,
/// score, box in pixels of the image of `image_size` when known), instead of the raw `data`
/// JSON of those sections; empty for other sections.
fn readable_data(
    section: &str,
    data: Option<&Value>,
    image_size: Option<(f64, f64)>,
) -> Vec<String> {
    let Some(data) = data else {
        return Vec::new();
    };
    let number = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    match section {
        "faces" => data["faces"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, face)| {
                let b: Vec<f64> = face["box"]
                    .as_array()
                    .map(|b| b.iter().map(number).collect())
                    .unwrap_or_default();
                let identity = face
                    .get("identity")
                    .filter(|v| !v.is_null())
                    .map(|v| format!("  identity {v}"))
                    .unwrap_or_default();
                match b.as_slice() {
                    [x, y, w, h] => format!(
                        "face {}: box x {x:.0} y {y:.0} w {w:.0} h {h:.0}  score {:.3}{identity}",
                        i + 1,
                        number(&face["score"])
                    ),
                    _ => format!("face {}: {face}", i + 1),
                }
            })
            .collect(),
        "ocr" => data["lines"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|line| {
                format!(
                    "line: {:?}  confidence {:.3}",
                    line["text"].as_str().unwrap_or_default(),
                    number(&line["confidence"])
                )
            })
            .collect(),
        "objects" => data["detections"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|object| {
                let b: Vec<f64> = object["box"]
                    .as_array()
                    .map(|b| b.iter().map(number).collect())
                    .unwrap_or_default();
                let label = object["label"].as_str().unwrap_or_default();
                let score = number(&object["score"]);
                match (b.as_slice(), image_size) {
                    ([x0, y0, x1, y1], Some((w, h))) => format!(
                        "object: {label:?}  score {score:.3}  box x {:.0} y {:.0} w {:.0} h {:.0}",
                        x0 * w,
                        y0 * h,
                        (x1 - x0) * w,
                        (y1 - y0) * h
                    ),
                    ([x0, y0, x1, y1], None) => format!(
                        "object: {label:?}  score {score:.3}  box {x0:.3},{y0:.3} – {x1:.3},{y1:.3} of the image"
                    ),
                    _ => format!("object: {label:?}  score {score:.3}"),
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}
