//! The pages: what each shows, read from the store, rendered by its template.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use askama::Template;
use imgd_pipeline::http::{AppReply, AppRequest};
use imgd_store::Store;
use imgd_store::browse::ImageFilter;
use imgd_store::report::ImageRef;
use imgd_store::vectors::{SearchMode, SearchRequest, SortOrder};
use serde_json::Value;

use crate::WebError;

/// The most results a search page shows.
const PAGE_RESULTS: usize = 120;

/// The largest original file served to the browser.
const MAX_ORIGINAL_BYTES: u64 = 64 << 20;

/// The side of a face crop on the people pages, CSS pixels.
const CROP_PX: f64 = 96.0;

/// The most identities the people page lists (most faces first).
const PEOPLE_LISTED: usize = 300;

fn html(template: &impl Template) -> Result<AppReply, WebError> {
    Ok(AppReply::Html(200, template.render()?))
}

/// A count as a short decimal.
fn rate(value: f64) -> String {
    format!("{value:.2}")
}

/// Seconds as people read them (`45s`, `12m 05s`, `3h 20m`, `2d 04h`); `-` for none.
fn human(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_string(), imgd_core::human_duration)
}

/// Milliseconds since the epoch as `HH:MM:SS` UTC.
fn time_of_day(ms: i64) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s % 3600 / 60, s % 60)
}

fn count(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

fn percent(counts: &Value) -> String {
    let total: i64 = ["queued", "leased", "done", "failed"]
        .iter()
        .map(|k| count(&counts[*k]))
        .sum();
    let finished = count(&counts["done"]) + count(&counts["failed"]);
    if total == 0 {
        "0".to_string()
    } else {
        format!("{:.1}", 100.0 * finished as f64 / total as f64)
    }
}

struct ModuleRow {
    name: String,
    waiting: Option<String>,
    percent: String,
    done: i64,
    failed: i64,
    queued: i64,
    leased: i64,
    rate: String,
    eta: String,
}

struct FailureRow {
    module: String,
    error: String,
    count: i64,
}

struct BatchRow {
    id: i64,
    scanning: bool,
    roots: String,
    percent: String,
    done: i64,
    failed: i64,
    queued: i64,
    rate: String,
    eta: String,
    /// Its most common failures, as one line.
    failures: String,
}

struct WorkerRow {
    host: String,
    pid: i64,
    state: String,
    images: i64,
    rate: String,
    heartbeat: String,
}

struct ModelRow {
    name: String,
    batches: u64,
    mean_size: String,
    reasons: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard<'a> {
    token: Option<&'a str>,
    images_present: i64,
    images_per_second: String,
    eta: String,
    paused: bool,
    modules: Vec<ModuleRow>,
    failures: Vec<FailureRow>,
    batches: Vec<BatchRow>,
    workers: Vec<WorkerRow>,
    busy_share: String,
    models: Vec<ModelRow>,
}

/// The dashboard for the daemon's status document (`/status`, with the inference summary
/// under `inference`).
pub fn dashboard(status: &Value, token: Option<&str>) -> AppReply {
    let throughput = &status["throughput"];
    let modules = status["modules"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, c)| ModuleRow {
            name: name.clone(),
            waiting: status["waiting"][name].as_str().map(str::to_string),
            percent: percent(c),
            done: count(&c["done"]),
            failed: count(&c["failed"]),
            queued: count(&c["queued"]),
            leased: count(&c["leased"]),
            rate: rate(
                throughput["modules"][name]["jobs_per_second"]
                    .as_f64()
                    .unwrap_or(0.0),
            ),
            eta: human(throughput["modules"][name]["eta_seconds"].as_f64()),
        })
        .collect();
    let failures = status["top_failures"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| FailureRow {
            module: f["module"].as_str().unwrap_or_default().to_string(),
            error: f["error"].as_str().unwrap_or_default().to_string(),
            count: count(&f["count"]),
        })
        .collect();
    let batches = status["batches"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| BatchRow {
            id: count(&b["id"]),
            scanning: b["scanning"].as_bool().unwrap_or(false),
            roots: b["roots"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            percent: percent(&b["total"]),
            done: count(&b["total"]["done"]),
            failed: count(&b["total"]["failed"]),
            queued: count(&b["total"]["queued"]),
            rate: rate(b["jobs_per_second"].as_f64().unwrap_or(0.0)),
            eta: human(b["eta_seconds"].as_f64()),
            failures: b["top_failures"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    format!(
                        "{}: {} ×{}",
                        f["module"].as_str().unwrap_or_default(),
                        f["error"].as_str().unwrap_or_default(),
                        count(&f["count"])
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        })
        .collect();
    let workers = status["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| WorkerRow {
            host: w["host"].as_str().unwrap_or_default().to_string(),
            pid: count(&w["pid"]),
            state: w["state"].as_str().unwrap_or_default().to_string(),
            images: count(&w["images"]),
            rate: rate(w["images_per_second"].as_f64().unwrap_or(0.0)),
            heartbeat: time_of_day(count(&w["heartbeat_ms"])),
        })
        .collect();
    let inference = &status["inference"];
    let uptime = inference["uptime_seconds"].as_f64().unwrap_or(0.0);
    let busy = inference["busy_seconds"].as_f64().unwrap_or(0.0);
    let models = inference["models"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, m)| {
            let batches = m["batches"].as_u64().unwrap_or(0);
            let items = m["items"].as_u64().unwrap_or(0);
            ModelRow {
                name: name.clone(),
                batches,
                mean_size: if batches == 0 {
                    "-".to_string()
                } else {
                    format!("{:.1}", items as f64 / batches as f64)
                },
                reasons: m["close_reasons"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(reason, n)| format!("{reason} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
        .collect();
    let page = Dashboard {
        token,
        images_present: count(&status["images"]["present"]),
        images_per_second: rate(throughput["images_per_second"].as_f64().unwrap_or(0.0)),
        eta: human(throughput["eta_seconds"].as_f64()),
        paused: status["paused"].as_bool().unwrap_or(false),
        modules,
        failures,
        batches,
        workers,
        busy_share: if uptime > 0.0 {
            format!("{:.1} %", 100.0 * busy / uptime)
        } else {
            "-".to_string()
        },
        models,
    };
    html(&page).unwrap_or_else(|e| AppReply::Text(500, format!("{e}\n")))
}

/// The search form's fields, as given.
#[derive(Default)]
struct SearchForm {
    q: String,
    mode: String,
    similar: String,
    camera: String,
    from: String,
    to: String,
    person: String,
    label: String,
    has_text: bool,
    aesthetic: String,
    failed: String,
    has_filters: bool,
}

impl SearchForm {
    fn read(request: &AppRequest) -> Self {
        let mut form = SearchForm::default();
        for (key, value) in request.params() {
            let value = value.trim().to_string();
            match key.as_str() {
                "q" => form.q = value,
                "mode" => form.mode = value,
                "similar" => form.similar = value,
                "camera" => form.camera = value,
                "from" => form.from = value,
                "to" => form.to = value,
                "person" => form.person = value,
                "label" => form.label = value,
                "has_text" => form.has_text = !value.is_empty(),
                "aesthetic" => form.aesthetic = value,
                "failed" => form.failed = value,
                _ => {}
            }
        }
        form.has_filters = !(form.camera.is_empty()
            && form.from.is_empty()
            && form.to.is_empty()
            && form.person.is_empty()
            && form.label.is_empty()
            && !form.has_text
            && form.aesthetic.is_empty()
            && form.failed.is_empty());
        form
    }

    fn filter(&self) -> ImageFilter {
        let some = |s: &String| (!s.is_empty()).then(|| s.clone());
        ImageFilter {
            camera: some(&self.camera),
            taken_from: some(&self.from),
            taken_to: some(&self.to),
            person: some(&self.person),
            label: some(&self.label),
            has_text: self.has_text,
            min_aesthetic: self.aesthetic.parse().ok(),
            failed_module: some(&self.failed),
        }
    }
}

struct Hit {
    id: i64,
    name: String,
    path: String,
    snippet: String,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage<'a> {
    token: Option<&'a str>,
    form: SearchForm,
    cameras: Vec<String>,
    note: Option<String>,
    heading: String,
    hits: Vec<Hit>,
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// `/search`: words, a similar image, or neither (the newest images), narrowed by filters.
pub fn search(
    store: &Store,
    request: &AppRequest,
    token: Option<&str>,
    state: &mut crate::SearchState,
) -> Result<AppReply, WebError> {
    let mut form = SearchForm::read(request);
    let filter = form.filter();
    let similar_to: Option<i64> = form.similar.parse().ok();
    let mut note = None;
    let ids_and_snippets: Vec<(i64, String)> = if form.q.is_empty() && similar_to.is_none() {
        store
            .filtered_images(&filter, PAGE_RESULTS)?
            .into_iter()
            .map(|id| (id, String::new()))
            .collect()
    } else {
        let mode = match form.mode.as_str() {
            "semantic" => Some(SearchMode::Semantic),
            "hybrid" => Some(SearchMode::Hybrid),
            "text" => Some(SearchMode::Text),
            _ => None,
        };
        let search = SearchRequest {
            text: (!form.q.is_empty()).then_some(form.q.as_str()),
            similar_to,
            mode: if similar_to.is_some() && form.q.is_empty() {
                Some(SearchMode::Semantic)
            } else {
                mode
            },
            sort: SortOrder::Relevance,
            // Room for the filters to drop some.
            limit: if filter.is_empty() {
                PAGE_RESULTS
            } else {
                PAGE_RESULTS * 10
            },
        };
        let response = state.search(store, &search)?;
        note = response.note;
        let ids: Vec<i64> = response.hits.iter().map(|h| h.image_id).collect();
        let kept = store.keep_passing(&ids, &filter)?;
        let snippets: BTreeMap<i64, String> = response
            .hits
            .into_iter()
            .map(|h| (h.image_id, h.snippet.replace('\n', " / ")))
            .collect();
        kept.into_iter()
            .take(PAGE_RESULTS)
            .map(|id| (id, snippets.get(&id).cloned().unwrap_or_default()))
            .collect()
    };
    let ids: Vec<i64> = ids_and_snippets.iter().map(|(id, _)| *id).collect();
    let paths = store.image_paths(&ids)?;
    let hits: Vec<Hit> = ids_and_snippets
        .into_iter()
        .filter_map(|(id, snippet)| {
            let path = paths.get(&id)?.clone();
            Some(Hit {
                id,
                name: file_name(&path),
                snippet,
                path,
            })
        })
        .collect();
    let heading = match (hits.len(), &similar_to) {
        (0, _) => "no match".to_string(),
        (n, Some(id)) => format!("{n} images like image {id}"),
        (1, None) => "1 image".to_string(),
        (n, None) => format!("{n} images"),
    };
    if form.mode.is_empty() {
        form.mode = "hybrid".to_string();
    }
    let cameras = store.cameras(50)?.into_iter().map(|(c, _)| c).collect();
    html(&SearchPage {
        token,
        form,
        cameras,
        note,
        heading,
        hits,
    })
}

/// A box to draw over the photo, in the frame's pixels.
struct Shape {
    kind: &'static str,
    points: String,
    label: String,
}

struct FaceRow {
    id: i64,
    identity: i64,
    name: Option<String>,
}

struct JobRow {
    module: String,
    state: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "image.html")]
struct ImagePage<'a> {
    token: Option<&'a str>,
    id: i64,
    name: String,
    path: String,
    picture: String,
    frame_w: f64,
    frame_h: f64,
    boxes: Vec<Shape>,
    caption: Option<String>,
    answers: Vec<(String, String)>,
    ocr_lines: Vec<String>,
    faces: Vec<FaceRow>,
    objects: Vec<String>,
    exif: Vec<(String, String)>,
    technical: Vec<(String, String)>,
    jobs: Vec<JobRow>,
}

/// Formats that browsers decode, by the name the store records, with their content type.
fn browser_type(format: &str) -> Option<&'static str> {
    match format {
        "jpeg" => Some("image/jpeg"),
        "png" => Some("image/png"),
        "webp" => Some("image/webp"),
        "gif" => Some("image/gif"),
        _ => None,
    }
}

fn points(corners: &[(f64, f64)]) -> String {
    corners
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn rectangle(x: f64, y: f64, w: f64, h: f64) -> String {
    points(&[(x, y), (x + w, y), (x + w, y + h), (x, y + h)])
}

fn displayed(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// The image's size as shown (EXIF orientation applied): the frame boxes are drawn in.
fn frame(shown: &Value) -> (f64, f64) {
    for (w, h) in [
        (
            &shown["faces"]["data"]["frame"][0],
            &shown["faces"]["data"]["frame"][1],
        ),
        (
            &shown["ocr"]["data"]["width"],
            &shown["ocr"]["data"]["height"],
        ),
    ] {
        if let (Some(w), Some(h)) = (w.as_f64(), h.as_f64()) {
            return (w, h);
        }
    }
    let (w, h) = (
        shown["image"]["width"].as_f64().unwrap_or(1.0),
        shown["image"]["height"].as_f64().unwrap_or(1.0),
    );
    match shown["metadata"]["orientation"].as_i64() {
        Some(5..=8) => (h, w),
        _ => (w, h),
    }
}

/// `/image/ID`.
pub fn image(store: &Store, id: i64, token: Option<&str>) -> Result<AppReply, WebError> {
    let shown = match store.show(&ImageRef::Id(id)) {
        Ok(shown) => shown,
        Err(imgd_store::StoreError::NoSuchImage(_)) => return Ok(AppReply::NotFound),
        Err(e) => return Err(e.into()),
    };
    let path = shown["image"]["path"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (frame_w, frame_h) = frame(&shown);
    let mut boxes = Vec::new();
    let ocr_lines: Vec<String> = shown["ocr"]["data"]["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| {
            let text = line["text"].as_str().unwrap_or_default().to_string();
            let corners: Vec<(f64, f64)> = line["box"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                .collect();
            if corners.len() == 4 {
                boxes.push(Shape {
                    kind: "text",
                    points: points(&corners),
                    label: text.clone(),
                });
            }
            text
        })
        .collect();
    let faces = store.image_faces(id)?;
    for face in &faces {
        boxes.push(Shape {
            kind: "face",
            points: rectangle(face.x, face.y, face.w, face.h),
            label: face.name.clone().unwrap_or_else(|| "face".to_string()),
        });
    }
    let faces = faces
        .into_iter()
        .map(|f| FaceRow {
            id: f.id,
            identity: f.identity_id.unwrap_or_default(),
            name: f.name,
        })
        .collect();
    let mut objects = Vec::new();
    for detection in shown["objects"]["data"]["detections"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let label = detection["label"].as_str().unwrap_or_default();
        let score = detection["score"].as_f64().unwrap_or_default();
        let b: Vec<f64> = detection["box"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect();
        if let [x0, y0, x1, y1] = b[..] {
            boxes.push(Shape {
                kind: "object",
                points: rectangle(
                    x0 * frame_w,
                    y0 * frame_h,
                    (x1 - x0) * frame_w,
                    (y1 - y0) * frame_h,
                ),
                label: format!("{label} {score:.2}"),
            });
        }
        objects.push(format!("{label} ({score:.2})"));
    }
    let metadata = &shown["metadata"];
    let exif = [
        ("camera", "make"),
        ("model", "model"),
        ("lens", "lens"),
        ("taken", "taken_at"),
        ("ISO", "iso"),
        ("aperture f/", "aperture"),
        ("shutter s", "shutter_s"),
        ("focal length mm", "focal_mm"),
        ("35 mm equivalent", "focal_35mm"),
        ("latitude", "gps_lat"),
        ("longitude", "gps_lon"),
        ("software", "software"),
    ]
    .into_iter()
    .filter_map(|(label, key)| Some((label.to_string(), displayed(&metadata[key])?)))
    .chain([
        ("size".to_string(), format!("{frame_w} × {frame_h}")),
        (
            "file".to_string(),
            format!(
                "{} · {} bytes",
                shown["image"]["format"].as_str().unwrap_or("?"),
                count(&shown["image"]["size"])
            ),
        ),
    ])
    .collect();
    let tech = &shown["technical"];
    let technical = [
        ("sharpness", "sharpness"),
        ("noise", "noise"),
        ("mean brightness", "mean_luma"),
        ("clipped highlights %", "clipped_high_pct"),
        ("clipped shadows %", "clipped_low_pct"),
        ("blurry", "is_blurry"),
        ("dark", "is_dark"),
        ("overexposed", "is_overexposed"),
    ]
    .into_iter()
    .filter_map(|(label, key)| Some((label.to_string(), displayed(&tech[key])?)))
    .chain(
        shown["aesthetic"]["score"]
            .as_f64()
            .map(|s| ("aesthetic score".to_string(), format!("{s:.2}"))),
    )
    .collect();
    let caption = shown["caption"]["caption"].as_str().map(str::to_string);
    let answers = shown["caption"]["data"]["answers"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(q, a)| Some((q.clone(), a.as_str()?.to_string())))
        .collect();
    let jobs = shown["jobs"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(module, job)| JobRow {
            module: module.clone(),
            state: job["state"].as_str().unwrap_or_default().to_string(),
            error: job["last_error"].as_str().map(str::to_string),
        })
        .collect();
    let format = shown["image"]["format"].as_str().unwrap_or_default();
    let picture = if browser_type(format).is_some() {
        format!("/image/{id}/original")
    } else {
        format!("/image/{id}/thumbnail.jpg")
    };
    html(&ImagePage {
        token,
        id,
        name: file_name(&path),
        path,
        picture,
        frame_w,
        frame_h,
        boxes,
        caption,
        answers,
        ocr_lines,
        faces,
        objects,
        exif,
        technical,
        jobs,
    })
}

/// `/image/ID/thumbnail.jpg`: the thumbnail module's JPEG.
pub fn thumbnail(store: &Store, id: i64) -> Result<AppReply, WebError> {
    Ok(
        match store.result_blob(imgd_thumbnail::THUMBNAIL, id, "jpeg")? {
            Some(jpeg) => AppReply::Cached {
                content_type: "image/jpeg",
                body: jpeg,
            },
            None => AppReply::NotFound,
        },
    )
}

/// `/image/ID/original`: the file itself, when the browser can decode its format, it is a
/// regular file and not too large.
pub fn original(store: &Store, id: i64) -> Result<AppReply, WebError> {
    let shown = match store.show(&ImageRef::Id(id)) {
        Ok(shown) => shown,
        Err(imgd_store::StoreError::NoSuchImage(_)) => return Ok(AppReply::NotFound),
        Err(e) => return Err(e.into()),
    };
    let Some(content_type) = browser_type(shown["image"]["format"].as_str().unwrap_or_default())
    else {
        return Ok(AppReply::NotFound);
    };
    let path = Path::new(shown["image"]["path"].as_str().unwrap_or_default());
    let readable =
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= MAX_ORIGINAL_BYTES);
    if !readable {
        return Ok(AppReply::NotFound);
    }
    Ok(match std::fs::read(path) {
        Ok(body) => AppReply::Cached { content_type, body },
        Err(_) => AppReply::NotFound,
    })
}

/// The CSS that shows a face from the image's thumbnail, `CROP_PX` square.
fn crop_style(image_id: i64, frame: (f64, f64), face: [f64; 4]) -> String {
    let [x, y, w, h] = face;
    let side = w.max(h).max(1.0);
    let scale = CROP_PX / side;
    // Centre the face in the square.
    let (cx, cy) = (x + w / 2.0 - side / 2.0, y + h / 2.0 - side / 2.0);
    format!(
        "background-image: url(/image/{image_id}/thumbnail.jpg); background-size: {:.1}px {:.1}px; \
         background-position: {:.1}px {:.1}px",
        frame.0 * scale,
        frame.1 * scale,
        -cx * scale,
        -cy * scale
    )
}

struct Person {
    id: i64,
    name: Option<String>,
    faces: i64,
    crops: Vec<String>,
}

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage<'a> {
    token: Option<&'a str>,
    summary: String,
    /// Identities not listed.
    hidden: usize,
    people: Vec<Person>,
}

/// The crops of up to `limit` of an identity's faces: (face id, image id, file name, style).
/// `frames` keeps each image's frame, read once per page.
fn face_crops(
    store: &Store,
    identity: i64,
    limit: usize,
    frames: &mut HashMap<i64, (f64, f64)>,
) -> Result<Vec<(i64, i64, String, String)>, WebError> {
    let mut crops = Vec::new();
    for face in store.identity_faces(identity)?.into_iter().take(limit) {
        let frame = match frames.get(&face.image_id) {
            Some(frame) => *frame,
            None => {
                let frame = frame(&store.show(&ImageRef::Id(face.image_id))?);
                frames.insert(face.image_id, frame);
                frame
            }
        };
        crops.push((
            face.id,
            face.image_id,
            file_name(&face.path),
            crop_style(face.image_id, frame, face.bbox),
        ));
    }
    Ok(crops)
}

/// `/people`.
pub fn people(store: &Store, token: Option<&str>) -> Result<AppReply, WebError> {
    let summary = store.faces_summary()?;
    let identities = store.identities()?;
    let hidden = identities.len().saturating_sub(PEOPLE_LISTED);
    let mut frames = HashMap::new();
    let people = identities
        .into_iter()
        .take(PEOPLE_LISTED)
        .map(|identity| {
            Ok(Person {
                crops: face_crops(store, identity.id, 4, &mut frames)?
                    .into_iter()
                    .map(|c| c.3)
                    .collect(),
                id: identity.id,
                name: identity.name,
                faces: identity.face_count,
            })
        })
        .collect::<Result<Vec<_>, WebError>>()?;
    html(&PeoplePage {
        token,
        summary: format!(
            "{} faces in {} images; {} identities, {} named",
            summary.faces, summary.images_analysed, summary.identities, summary.named
        ),
        hidden,
        people,
    })
}

struct PersonFace {
    id: i64,
    image: i64,
    name: String,
    crop: String,
}

#[derive(Template)]
#[template(path = "person.html")]
struct PersonPage<'a> {
    token: Option<&'a str>,
    id: i64,
    title: String,
    name: String,
    faces: Vec<PersonFace>,
}

/// `/people/ID`.
pub fn person(store: &Store, id: i64, token: Option<&str>) -> Result<AppReply, WebError> {
    let Some(identity) = store.identities()?.into_iter().find(|i| i.id == id) else {
        return Ok(AppReply::NotFound);
    };
    let faces = face_crops(store, id, 500, &mut HashMap::new())?
        .into_iter()
        .map(|(id, image, name, crop)| PersonFace {
            id,
            image,
            name,
            crop,
        })
        .collect();
    html(&PersonPage {
        token,
        id,
        title: identity
            .name
            .clone()
            .unwrap_or_else(|| format!("identity {id}")),
        name: identity.name.unwrap_or_default(),
        faces,
    })
}
