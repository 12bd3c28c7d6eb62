//! The web page the daemon serves beside `/metrics`: a live dashboard, search with
//! thumbnails and filters, one image with its boxes drawn, and people to name.
//!
//! Pages are rendered on the server from the store with askama templates (`templates/`, HTML
//! escaped by default: file names and OCR text are user data); the CSS and the little
//! JavaScript (`static/`) are compiled into the binary. Images are served by id only, never
//! by a path from the request, and a page never decodes an original: grids and crops show the
//! `thumbnail` module's JPEG; the image page shows the original file only in a format the
//! browser decodes itself.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the dashboard ([`dashboard`]), updated live from `/api/events` |
//! | `GET /search?q=&mode=&similar=ID&camera=&from=&to=&person=&label=&has_text=1&aesthetic=&failed=` | results as a grid of thumbnails |
//! | `GET /image/ID` | one image: boxes, EXIF, technical figures, caption, answers, text, module states |
//! | `GET /image/ID/thumbnail.jpg`, `GET /image/ID/original` | its thumbnail; its file (JPEG, PNG, WebP, GIF) |
//! | `GET /people`, `GET /people/ID` | identities with sample crops; one identity's faces |
//! | `POST /api/faces/ID/name`, `POST /api/identities/ID/{name,merge,split}` | changes, as `imgd faces` makes them |
//! | `GET /static/imgd.css`, `GET /static/imgd.js` | the page's style and script |

#![deny(missing_docs)]

mod pages;
mod search;

use imgd_pipeline::http::{AppReply, AppRequest};
use imgd_store::Store;
use imgd_store::faces::IdentityError;
use serde_json::{Value, json};

pub use pages::dashboard;
pub use search::{EncoderLoader, SearchState};

/// Why a page could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] imgd_store::StoreError),
    /// A search failed.
    #[error(transparent)]
    Search(#[from] imgd_store::vectors::VectorError),
    /// A template could not be rendered.
    #[error("cannot render the page: {0}")]
    Template(#[from] askama::Error),
}

const CSS: &str = include_str!("../static/imgd.css");
const JS: &str = include_str!("../static/imgd.js");

/// Answers a page, an image, a static file or a face change; `None` for a path that is none
/// of these. `token` is written into the pages for their forms (only when the request carried
/// it); `search` is what searches keep between requests.
pub fn answer(
    store: &Store,
    request: &AppRequest,
    token: Option<&str>,
    search: &std::sync::Mutex<SearchState>,
) -> Option<AppReply> {
    let path = request.path.as_str();
    let read = matches!(request.method.as_str(), "GET" | "HEAD");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let reply = match (read, segments.as_slice()) {
        (true, ["static", "imgd.css"]) => AppReply::Cached {
            content_type: "text/css; charset=utf-8",
            body: CSS.as_bytes().to_vec(),
        },
        (true, ["static", "imgd.js"]) => AppReply::Cached {
            content_type: "text/javascript; charset=utf-8",
            body: JS.as_bytes().to_vec(),
        },
        (true, ["search"]) => {
            let mut search = search.lock().unwrap_or_else(|e| e.into_inner());
            page(pages::search(store, request, token, &mut search))
        }
        (true, ["image", id]) => with_id(id, |id| pages::image(store, id, token)),
        (true, ["image", id, "thumbnail.jpg"]) => with_id(id, |id| pages::thumbnail(store, id)),
        (true, ["image", id, "original"]) => with_id(id, |id| pages::original(store, id)),
        (true, ["people"]) => page(pages::people(store, token)),
        (true, ["people", id]) => with_id(id, |id| pages::person(store, id, token)),
        (false, ["api", "faces", id, "name"]) => change(id, &request.body, |id, body| {
            let name = text_field(body, "name")?;
            let identity = store.name_face(id, &name)?;
            Ok(json!({ "face": id, "identity": identity, "name": name }))
        }),
        (false, ["api", "identities", id, "name"]) => change(id, &request.body, |id, body| {
            let name = text_field(body, "name")?;
            let name = (!name.trim().is_empty()).then_some(name);
            store.name_identity(id, name.as_deref())?;
            Ok(json!({ "identity": id, "name": name }))
        }),
        (false, ["api", "identities", id, "merge"]) => change(id, &request.body, |id, body| {
            let from = body["from"].as_i64().ok_or_else(|| {
                IdentityError::Invalid("the body names no identity to merge: {\"from\": ID}".into())
            })?;
            let moved = store.merge_identities(id, from)?;
            Ok(json!({ "identity": id, "merged": from, "faces_moved": moved }))
        }),
        (false, ["api", "identities", id, "split"]) => change(id, &request.body, |id, body| {
            let faces: Vec<i64> = body["faces"]
                .as_array()
                .map(|faces| faces.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            if faces.is_empty() {
                return Err(IdentityError::Invalid(
                    "check the faces to detach first".into(),
                ));
            }
            let detached = store.split_identity(id, &faces)?;
            Ok(json!({ "identity": id, "faces_detached": detached }))
        }),
        _ => return None,
    };
    Some(reply)
}

fn page(rendered: Result<AppReply, WebError>) -> AppReply {
    rendered.unwrap_or_else(|error| {
        tracing::warn!("cannot answer a page: {error}");
        AppReply::Text(500, format!("{error}\n"))
    })
}

fn with_id(id: &str, f: impl FnOnce(i64) -> Result<AppReply, WebError>) -> AppReply {
    match id.parse() {
        Ok(id) => page(f(id)),
        Err(_) => AppReply::NotFound,
    }
}

/// A JSON change on identity or face `id`: 400 for a bad request, 404 for an unknown id.
fn change(
    id: &str,
    body: &[u8],
    f: impl FnOnce(i64, &Value) -> Result<Value, IdentityError>,
) -> AppReply {
    let Ok(id) = id.parse() else {
        return AppReply::NotFound;
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return AppReply::Json(400, json!({ "error": "the body must be a JSON object" }));
    };
    match f(id, &body) {
        Ok(answer) => AppReply::Json(200, answer),
        Err(IdentityError::NoSuchIdentity(id)) => {
            AppReply::Json(404, json!({ "error": format!("no identity {id}") }))
        }
        Err(IdentityError::Store(error)) => {
            tracing::warn!("a change failed: {error}");
            AppReply::Json(500, json!({ "error": error.to_string() }))
        }
        Err(error) => AppReply::Json(400, json!({ "error": error.to_string() })),
    }
}

fn text_field(body: &Value, name: &str) -> Result<String, IdentityError> {
    body[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| IdentityError::Invalid(format!("the body has no \"{name}\" text")))
}
