//! Sidecars read back with ExifTool (Debian's `libimage-exiftool-perl`), including sidecars
//! that Lightroom and darktable wrote beforehand.

use std::path::Path;
use std::process::Command;

use imgd_xmp::{
    FaceRegion, Naming, SidecarContent, Written, XmpError, XmpSettings, sidecar_path, write_sidecar,
};
use serde_json::Value;

/// ExifTool's reading of a file: `-struct -G1 -j`, one object.
fn exiftool(path: &Path) -> Value {
    let out = Command::new("exiftool")
        .args(["-j", "-struct", "-G1", "-a"])
        .arg(path)
        .output()
        .expect("exiftool (apt install libimage-exiftool-perl; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all: Value = serde_json::from_slice(&out.stdout).unwrap();
    all[0].take()
}

/// A list tag's values (ExifTool writes one value as a scalar).
fn list(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().map(text).collect(),
        Value::Null => Vec::new(),
        other => vec![text(other)],
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn content(dog: &str, anna: &str) -> SidecarContent {
    SidecarContent {
        keywords: vec![dog.into(), anna.into(), "soft and warm".into()],
        hierarchical: vec![
            format!("imgd|objects|{dog}"),
            format!("imgd|people|{anna}"),
            "imgd|lighting|soft and warm".into(),
        ],
        description: Some(format!("a {dog} on a beach with {anna}")),
        faces: vec![
            FaceRegion {
                x: 0.25,
                y: 0.4,
                w: 0.1,
                h: 0.15,
                name: Some(anna.into()),
            },
            FaceRegion {
                x: 0.7,
                y: 0.5,
                w: 0.08,
                h: 0.12,
                name: None,
            },
        ],
        dimensions: Some((6000, 4000)),
        rating: Some(4),
        properties: vec![
            ("AestheticScore".into(), "6.120".into()),
            ("Blurry".into(), "false".into()),
            ("ModelObjects".into(), "grounding-dino-tiny".into()),
        ],
    }
}

fn settings() -> XmpSettings {
    XmpSettings {
        rating: true,
        ..XmpSettings::default()
    }
}

/// The region list's (name or "", x) pairs.
fn regions(tags: &Value) -> Vec<(String, f64)> {
    let info = &tags["XMP-mwg-rs:RegionInfo"];
    let list = match &info["RegionList"] {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        one => vec![one.clone()],
    };
    list.iter()
        .map(|r| {
            (
                r["Name"].as_str().unwrap_or_default().to_string(),
                r["Area"]["X"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_new_sidecar_carries_every_field_as_exiftool_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("IMG_0042.CR3");
    std::fs::write(&image, b"raw bytes, never touched").unwrap();
    let written = write_sidecar(&image, "raw", &content("dog", "Anna"), &settings()).unwrap();
    let path = dir.path().join("IMG_0042.xmp");
    assert_eq!(written, Written::Written(path.clone()));
    let tags = exiftool(&path);
    assert_eq!(
        list(&tags["XMP-dc:Subject"]),
        ["dog", "Anna", "soft and warm"]
    );
    assert_eq!(
        list(&tags["XMP-lr:HierarchicalSubject"]),
        [
            "imgd|objects|dog",
            "imgd|people|Anna",
            "imgd|lighting|soft and warm"
        ]
    );
    assert_eq!(tags["XMP-dc:Description"], "a dog on a beach with Anna");
    assert_eq!(tags["XMP-xmp:Rating"], 4);
    let info = &tags["XMP-mwg-rs:RegionInfo"];
    assert_eq!(info["AppliedToDimensions"]["W"], 6000);
    assert_eq!(info["AppliedToDimensions"]["H"], 4000);
    assert_eq!(info["AppliedToDimensions"]["Unit"], "pixel");
    let first = &info["RegionList"][0];
    assert_eq!(first["Name"], "Anna");
    assert_eq!(first["Type"], "Face");
    assert_eq!(first["Area"]["Unit"], "normalized");
    for (key, want) in [("X", 0.25), ("Y", 0.4), ("W", 0.1), ("H", 0.15)] {
        assert!(
            (first["Area"][key].as_f64().unwrap() - want).abs() < 1e-6,
            "{key}"
        );
    }
    assert!(info["RegionList"][1]["Name"].is_null());
    assert_eq!(regions(&tags).len(), 2);
    assert_eq!(tags["XMP-imgd:AestheticScore"].as_f64(), Some(6.12));
    assert_eq!(text(&tags["XMP-imgd:ModelObjects"]), "grounding-dino-tiny");
    assert_eq!(
        std::fs::read(&image).unwrap(),
        b"raw bytes, never touched",
        "the original is never modified"
    );
    // The same results again: nothing to write.
    assert_eq!(
        write_sidecar(&image, "raw", &content("dog", "Anna"), &settings()).unwrap(),
        Written::Unchanged(path)
    );
}

/// A sidecar as Lightroom Classic writes one: develop settings as attributes, a rating, a
/// user's keywords and a face region named by hand.
const LIGHTROOM: &str = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Adobe XMP Core 7.0-c000 1.000000, 0000/00/00-00:00:00        ">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:tiff="http://ns.adobe.com/tiff/1.0/"
    xmlns:crs="http://ns.adobe.com/camera-raw-settings/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stDim="http://ns.adobe.com/xap/1.0/sType/Dimensions#"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
   xmp:Rating="2"
   xmp:ModifyDate="2024-05-01T10:00:00+01:00"
   tiff:Make="Canon"
   crs:Version="16.0"
   crs:Exposure2012="+0.35"
   crs:WhiteBalance="As Shot">
   <dc:subject>
    <rdf:Bag>
     <rdf:li>holiday</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <lr:hierarchicalSubject>
    <rdf:Bag>
     <rdf:li>places|Lisbon</rdf:li>
    </rdf:Bag>
   </lr:hierarchicalSubject>
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:AppliedToDimensions stDim:w="6000" stDim:h="4000" stDim:unit="pixel"/>
    <mwg-rs:RegionList>
     <rdf:Bag>
      <rdf:li>
       <rdf:Description mwg-rs:Name="Bob" mwg-rs:Type="Face">
        <mwg-rs:Area stArea:x="0.5" stArea:y="0.3" stArea:w="0.05" stArea:h="0.08" stArea:unit="normalized"/>
       </rdf:Description>
      </rdf:li>
     </rdf:Bag>
    </mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"#;

#[test]
fn a_lightroom_sidecar_keeps_every_field_imgd_does_not_own_across_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("IMG_0042.CR3");
    let path = sidecar_path(&image, Naming::Replace);
    std::fs::write(&path, LIGHTROOM).unwrap();
    let before = exiftool(&path);
    write_sidecar(&image, "raw", &content("dog", "Anna"), &settings()).unwrap();
    let tags = exiftool(&path);
    for key in [
        "XMP-crs:Version",
        "XMP-crs:Exposure2012",
        "XMP-crs:WhiteBalance",
        "XMP-tiff:Make",
        "XMP-xmp:ModifyDate",
    ] {
        assert_eq!(tags[key], before[key], "{key}");
    }
    // The user's rating stands; the aesthetic score does not override it.
    assert_eq!(tags["XMP-xmp:Rating"], 2);
    assert_eq!(
        list(&tags["XMP-dc:Subject"]),
        ["holiday", "dog", "Anna", "soft and warm"]
    );
    assert!(list(&tags["XMP-lr:HierarchicalSubject"]).contains(&"places|Lisbon".to_string()));
    assert_eq!(
        regions(&tags),
        [
            ("Bob".to_string(), 0.5),
            ("Anna".to_string(), 0.25),
            (String::new(), 0.7)
        ]
    );
    assert_eq!(tags["XMP-dc:Description"], "a dog on a beach with Anna");

    // New results (the person renamed, another object): imgd's old keywords and regions go,
    // the user's stay, nothing is doubled.
    write_sidecar(&image, "raw", &content("cat", "Anna K"), &settings()).unwrap();
    let tags = exiftool(&path);
    assert_eq!(
        list(&tags["XMP-dc:Subject"]),
        ["holiday", "cat", "Anna K", "soft and warm"]
    );
    assert_eq!(
        list(&tags["XMP-lr:HierarchicalSubject"]),
        [
            "places|Lisbon",
            "imgd|objects|cat",
            "imgd|people|Anna K",
            "imgd|lighting|soft and warm"
        ]
    );
    assert_eq!(
        regions(&tags),
        [
            ("Bob".to_string(), 0.5),
            ("Anna K".to_string(), 0.25),
            (String::new(), 0.7)
        ]
    );
    assert_eq!(tags["XMP-dc:Description"], "a cat on a beach with Anna K");
    assert_eq!(tags["XMP-crs:Exposure2012"], before["XMP-crs:Exposure2012"]);
    assert!(matches!(
        write_sidecar(&image, "raw", &content("cat", "Anna K"), &settings()).unwrap(),
        Written::Unchanged(_)
    ));

    // The user writes their own caption: imgd no longer owns the description.
    let edited = std::fs::read_to_string(&path).unwrap().replace(
        "a cat on a beach with Anna K</rdf:li>",
        "Our dog Rex</rdf:li>",
    );
    std::fs::write(&path, edited).unwrap();
    write_sidecar(&image, "raw", &content("dog", "Anna"), &settings()).unwrap();
    assert_eq!(exiftool(&path)["XMP-dc:Description"], "Our dog Rex");
}

/// A darktable sidecar: `IMG.CR3.xmp`, its history as a sequence of structures.
const DARKTABLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:darktable="http://darktable.sf.net/"
   exif:DateTimeOriginal="2024:05:01 10:00:00"
   xmp:Rating="1"
   xmpMM:DerivedFrom="IMG_0042.CR3"
   darktable:xmp_version="5"
   darktable:history_end="2">
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:num="0" darktable:operation="exposure" darktable:enabled="1"/>
     <rdf:li darktable:num="1" darktable:operation="filmicrgb" darktable:enabled="1"/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"#;

#[test]
fn a_darktable_sidecar_named_after_the_whole_file_keeps_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("IMG_0042.CR3");
    let path = dir.path().join("IMG_0042.CR3.xmp");
    std::fs::write(&path, DARKTABLE).unwrap();
    let before = exiftool(&path);
    let settings = XmpSettings {
        naming: Naming::Append,
        ..settings()
    };
    write_sidecar(&image, "raw", &content("dog", "Anna"), &settings).unwrap();
    let tags = exiftool(&path);
    for key in [
        "XMP-darktable:Xmp_version",
        "XMP-darktable:History_end",
        "XMP-darktable:History",
        "XMP-xmpMM:DerivedFrom",
        "XMP-exif:DateTimeOriginal",
    ] {
        assert!(!before[key].is_null(), "{key} in {before}");
        assert_eq!(tags[key], before[key], "{key}");
    }
    assert_eq!(tags["XMP-xmp:Rating"], 1);
    assert_eq!(
        list(&tags["XMP-dc:Subject"]),
        ["dog", "Anna", "soft and warm"]
    );
    assert!(!dir.path().join("IMG_0042.xmp").exists());
}

#[test]
fn a_sidecar_that_cannot_be_parsed_is_left_untouched_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("IMG_0042.jpg");
    let path = dir.path().join("IMG_0042.xmp");
    for broken in [
        &b"<x:xmpmeta><rdf:RDF>unclosed"[..],
        &b"\xff\xfe not utf-8"[..],
        &b"<html><body>no rdf</body></html>"[..],
    ] {
        std::fs::write(&path, broken).unwrap();
        let err = write_sidecar(&image, "jpeg", &content("dog", "Anna"), &settings()).unwrap_err();
        assert!(matches!(err, XmpError::Unparseable { .. }), "{err}");
        assert!(err.to_string().contains("IMG_0042.xmp"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), broken);
    }
    // JPEG and HEIC files may go without sidecars.
    std::fs::remove_file(&path).unwrap();
    let settings = XmpSettings {
        jpeg_heic: false,
        ..settings()
    };
    assert_eq!(
        write_sidecar(&image, "jpeg", &content("dog", "Anna"), &settings).unwrap(),
        Written::Skipped
    );
    assert!(!path.exists());
}
