//! `[store] path_map`: a library whose folder is somewhere else on this host (a share mounted
//! elsewhere, a mount point that moved) keeps its images, results and queue.

use std::fs;

mod common;
use common::{env, fixture};

#[test]
fn a_moved_library_is_found_through_the_path_map_without_re_registering() {
    let env = env();
    for name in ["flower.jpg", "hopper.jpg", "flower2.jpg"] {
        env.add(&fixture(&format!("photos/{name}")), name);
    }
    env.enqueue("metadata,technical");
    let stored = env.tree.to_str().unwrap().to_string();
    // The share is now mounted elsewhere.
    let moved = env.dir.path().join("mounted-elsewhere");
    fs::rename(&env.tree, &moved).unwrap();
    let moved = moved.to_str().unwrap().to_string();

    // Without the map the moved files are new images (their analysis would start over).
    let copy = env.dir.path().join("copy.db");
    env.ok(&[
        "db",
        "copy",
        env.db.arg().to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    let out = env
        .cmd(&[
            "enqueue",
            "--json",
            "--modules",
            "metadata,technical",
            &moved,
        ])
        .arg("--db")
        .arg(&copy)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["new"], 3, "{report}");

    // With it they are the images already registered, and the daemon reads them where they are.
    let config = env.config(&format!("[store.path_map]\n{stored:?} = {moved:?}\n"));
    let with_map = |args: &[&str]| {
        let out = env.cmd(args).env("IMGD_CONFIG", &config).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let report: serde_json::Value = serde_json::from_str(&with_map(&[
        "enqueue",
        "--json",
        "--modules",
        "metadata,technical",
        &moved,
    ]))
    .unwrap();
    assert_eq!(
        (report["new"].as_i64(), report["unchanged"].as_i64()),
        (Some(0), Some(3)),
        "{report}"
    );
    with_map(&["run", "--once", "--metrics-addr", "off"]);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
        6
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM images WHERE state = 'present'"),
        3
    );
    // The database keeps its spelling; this host sees its own.
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(*) FROM images WHERE path LIKE '{stored}/%'"
        )),
        3
    );
    let shown: serde_json::Value = serde_json::from_str(&with_map(&[
        "show",
        "--json",
        &format!("{moved}/flower.jpg"),
    ]))
    .unwrap();
    assert_eq!(shown["image"]["path"], format!("{moved}/flower.jpg"));
    assert_eq!(shown["metadata"]["make"], "Canon", "{shown}");
    let hits = with_map(&["search", "canon"]);
    assert!(hits.contains(&format!("{moved}/flower.jpg")), "{hits}");

    // A relative prefix is refused by name.
    let bad = env.config("[store.path_map]\n\"photos\" = \"/srv/photos\"\n");
    let (ok, stdout, _) = env.run(&["validate", "--config", &bad]);
    assert!(!ok && stdout.contains("store.path_map"), "{stdout}");
}
