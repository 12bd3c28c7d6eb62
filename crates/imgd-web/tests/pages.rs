//! Pages over a real store with hostile user data: file names and queries are escaped, images
//! are served by id only, and an original that is not a plain file is never read.

use std::sync::Mutex;

use imgd_pipeline::http::{AppReply, AppRequest};
use imgd_store::Store;
use imgd_web::{SearchState, answer};

mod common;
use common::store_with;

fn get(store: &Store, path_and_query: &str) -> AppReply {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let request = AppRequest {
        method: hyper::Method::GET,
        path: path.to_string(),
        query: query.to_string(),
        body: Default::default(),
        authorized: false,
    };
    let search = Mutex::new(SearchState::new(Box::new(|_| None)));
    answer(store, &request, None, &search).expect("a route")
}

fn html(reply: AppReply) -> String {
    match reply {
        AppReply::Html(200, html) => html,
        other => panic!("not a page: {other:?}"),
    }
}

#[test]
fn user_data_is_escaped_in_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = "/p/<script>alert(1)</script>\"'&.jpg";
    let store = store_with(
        &dir.path().join("w.db"),
        &[hostile],
        &[imgd_modules::METADATA],
    );
    let page = html(get(&store, "/search"));
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    let page = html(get(&store, "/image/1"));
    assert!(!page.contains("<script>alert"), "{page}");
    let page = html(get(
        &store,
        "/search?q=%22%3E%3Cscript%3Ealert(2)%3C%2Fscript%3E&camera=%3Cb%3E",
    ));
    assert!(!page.contains("<script>alert(2)"), "{page}");
    assert!(!page.contains("<b>"), "{page}");
    assert!(page.contains("no match"), "{page}");
}

#[test]
fn images_are_served_by_id_and_only_plain_files_in_browser_formats() {
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("photo.jpg");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/photos/flower.jpg"
        ),
        &photo,
    )
    .unwrap();
    let fifo = dir.path().join("fifo.jpg");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let store = store_with(
        &dir.path().join("w.db"),
        &[photo.to_str().unwrap(), fifo.to_str().unwrap()],
        &[imgd_modules::METADATA],
    );
    match get(&store, "/image/1/original") {
        AppReply::Cached { content_type, body } => {
            assert_eq!(content_type, "image/jpeg");
            assert_eq!(body, std::fs::read(&photo).unwrap());
        }
        other => panic!("{other:?}"),
    }
    // A FIFO swapped in for a photo: not read (reading would block), 404.
    assert_eq!(get(&store, "/image/2/original"), AppReply::NotFound);
    // No thumbnail made yet; unknown ids; paths are never taken from the request.
    assert_eq!(get(&store, "/image/1/thumbnail.jpg"), AppReply::NotFound);
    assert_eq!(get(&store, "/image/99"), AppReply::NotFound);
    assert_eq!(get(&store, "/image/..%2Fetc%2Fpasswd"), AppReply::NotFound);
    let search = Mutex::new(SearchState::new(Box::new(|_| None)));
    let request = AppRequest {
        method: hyper::Method::GET,
        path: "/etc/passwd".into(),
        query: String::new(),
        body: Default::default(),
        authorized: false,
    };
    assert!(answer(&store, &request, None, &search).is_none());
}
