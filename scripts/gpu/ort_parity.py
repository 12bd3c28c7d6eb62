#!/usr/bin/env python3
"""Compares the OCR and faces results of two imgd databases made from the same files (a CPU
run and a CUDA run of `imgd run --once`), over the images both analysed (a run cut short
stores fewer; the counts are printed). Standard library only (sqlite3).

    ort_parity.py REFERENCE.db CANDIDATE.db [--min-lines 0.95] [--min-faces 0.95] [--tol 0.05]

- OCR: per image, the recognised lines (result_ocr.data.lines[].text) as a multiset; a line
  agrees when the same text is in the other run. Figure: agreeing lines / lines (both runs).
- Faces: per image, each reference face agrees when a candidate face has IoU >= 1 - tol with
  it, and the counts are equal. Figure: agreeing faces / reference faces.

Prints one `key=value` line per figure and `ort_cuda_parity=ok` when both reach their minimum,
else `ort_cuda_parity=` and what fell short. Exit status 0 either way (the caller reports).
"""

import argparse
import collections
import json
import os
import sqlite3


def ocr_lines(db):
    out = {}
    for path, data in db.execute(
        "SELECT i.path, o.data FROM result_ocr o JOIN images i ON i.id = o.image_id"
    ):
        try:
            lines = [line.get("text", "") for line in json.loads(data or "{}").get("lines", [])]
        except ValueError:
            lines = []
        out[os.path.basename(path)] = collections.Counter(lines)
    return out


def faces(db):
    out = collections.defaultdict(list)
    for path, x, y, w, h in db.execute(
        "SELECT i.path, f.x, f.y, f.w, f.h FROM faces f JOIN images i ON i.id = f.image_id"
    ):
        out[os.path.basename(path)].append((x, y, w, h))
    # images with a faces result but no face
    for (path,) in db.execute(
        "SELECT i.path FROM result_faces r JOIN images i ON i.id = r.image_id"
    ):
        out.setdefault(os.path.basename(path), [])
    return out


def iou(a, b):
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reference")
    ap.add_argument("candidate")
    ap.add_argument("--min-lines", type=float, default=0.95)
    ap.add_argument("--min-faces", type=float, default=0.95)
    ap.add_argument("--tol", type=float, default=0.05, help="faces agree at IoU >= 1 - tol")
    ap.add_argument("--show", type=int, default=5, help="differences to print")
    args = ap.parse_args()
    ref, cand = sqlite3.connect(args.reference), sqlite3.connect(args.candidate)
    problems = []

    r_ocr, c_ocr = ocr_lines(ref), ocr_lines(cand)
    common_ocr = set(r_ocr) & set(c_ocr)
    total = agree = 0
    shown = 0
    for name in sorted(common_ocr):
        r, c = r_ocr.get(name, collections.Counter()), c_ocr.get(name, collections.Counter())
        common = sum((r & c).values())
        total += sum(r.values()) + sum(c.values())
        agree += 2 * common
        if r != c and shown < args.show:
            shown += 1
            print(f"ocr differs in {name}: only reference {sorted((r - c).elements())[:3]}, "
                  f"only candidate {sorted((c - r).elements())[:3]}")
    line_share = agree / total if total else 1.0
    print(f"ort_parity_ocr_images={len(common_ocr)} (reference {len(r_ocr)}, candidate {len(c_ocr)})")
    print(f"ort_parity_ocr_lines={line_share:.4f} ({total // 2} lines on average per run)")
    if not common_ocr:
        problems.append("no image with OCR results in both")
    if line_share < args.min_lines:
        problems.append(f"ocr lines {line_share:.3f} < {args.min_lines}")

    r_faces, c_faces = faces(ref), faces(cand)
    common_faces = set(r_faces) & set(c_faces)
    ref_count = agree_faces = 0
    shown = 0
    worst = 1.0
    for name in sorted(common_faces):
        r, c = r_faces.get(name, []), c_faces.get(name, [])
        ref_count += len(r)
        matched = 0
        for box in r:
            best = max((iou(box, other) for other in c), default=0.0)
            worst = min(worst, best)
            matched += best >= 1.0 - args.tol
        if len(r) == len(c):
            agree_faces += matched
        if (matched < len(r) or len(r) != len(c)) and shown < args.show:
            shown += 1
            print(f"faces differ in {name}: {len(r)} reference, {len(c)} candidate, {matched} matched")
    face_share = agree_faces / ref_count if ref_count else 1.0
    cand_count = sum(len(c_faces[name]) for name in common_faces)
    print(f"ort_parity_faces={face_share:.4f} ({len(common_faces)} images: {ref_count} reference "
          f"faces, {cand_count} candidate; lowest best IoU {worst:.3f})")
    if not common_faces:
        problems.append("no image with faces results in both")
    if face_share < args.min_faces:
        problems.append(f"faces {face_share:.3f} < {args.min_faces}")

    print("ort_cuda_parity=" + ("ok" if not problems else "; ".join(problems)))


if __name__ == "__main__":
    main()
