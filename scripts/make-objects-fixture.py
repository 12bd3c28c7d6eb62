#!/usr/bin/env python3
"""Builds the GroundingDINO fixture under fixtures/objects/ with the reference implementation
(Hugging Face `transformers` + `torch` for the model, `onnxruntime` for the reference run).

    python3 scripts/make-objects-fixture.py                  # fixtures/objects/
    python3 scripts/make-objects-fixture.py --full-size DIR  # GroundingDINO-T size, for benchmarks

Runs inside the git-ignored `.venv-fixtures/` that `scripts/make-fixtures.py` creates, adding
`onnx` and `onnxruntime` to it when they are missing.

What it writes (committed, small: see fixtures/objects/SOURCES.md):

- tiny-grounding-dino/: a random-weight `GroundingDinoForObjectDetection` with the real
  architecture at toy size (Swin backbone, BERT text tower, feature enhancer, deformable
  encoder/decoder, language-guided query selection), exported to `model.onnx` with the input
  and output names of the published ONNX exports (`pixel_values`, `input_ids`,
  `token_type_ids`, `attention_mask`, `pixel_mask` → `logits`, `pred_boxes`), batch and text
  length dynamic, 128 × 128 pixels; a BERT WordPiece `tokenizer.json` whose special tokens sit
  at bert-base-uncased's ids (the model looks for `[CLS]` 101, `[SEP]` 102, `.` 1012 and `?`
  1029 to split phrases); `preprocessor_config.json` (`GroundingDinoImageProcessorPil`, PIL
  bilinear, longest edge 128);
- images/: two PNG inputs derived from the real photos in fixtures/photos;
- reference.safetensors + reference.json: the processor's pixel tensors and masks, the token
  ids, the ONNX graph's logits and boxes for that batch (onnxruntime, CPU), and
  `post_process_grounded_object_detection`'s scores, boxes and text labels at the recorded
  thresholds.

The ONNX graph is traced with the TorchScript exporter (the dynamo exporter stops at a
data-dependent mask check); the phrase-mask function, which that exporter cannot convert, is
replaced by an equivalent one, checked equal to the original before the export, and the ONNX
outputs are checked against PyTorch's (logits within 1e-3, boxes within 1e-4).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-fixtures"
OUT = ROOT / "fixtures" / "objects"
SIZE = 128
PROMPTS = ["cat", "dog", "text", "street sign"]
WORDS = ["cat", "dog", "text", "street", "sign", "person", "car", "tree", "flower", "document"]


def ensure_venv():
    """Re-runs this script inside .venv-fixtures with onnx and onnxruntime installed
    (`FIXTURES_PYTHON=here`: in this interpreter, which must have them, e.g. offline)."""
    if os.environ.get("FIXTURES_PYTHON") == "here":
        return
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() != VENV.resolve():
        if not python.exists():
            sys.exit("run scripts/make-fixtures.py first: it creates .venv-fixtures/")
        os.execv(str(python), [str(python), __file__, *sys.argv[1:]])
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "onnx", "onnxruntime==1.31.1"],
            check=True,
        )


def bert_vocab():
    """A WordPiece vocabulary with bert-base-uncased's special-token ids and a few words."""
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)]
    vocab += ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab += letters + ["##" + c for c in letters]
    while len(vocab) < 1012:
        vocab.append(f"[unused{len(vocab)}]")
    vocab.append(".")
    while len(vocab) < 1029:
        vocab.append(f"[unused{len(vocab)}]")
    vocab.append("?")
    vocab += WORDS
    return vocab


def make_tokenizer(tokens):
    """A BERT uncased WordPiece tokenizer (normaliser, pre-tokeniser, `[CLS] … [SEP]`) over
    `tokens`, and the same as a transformers tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    return tokenizer, fast


INPUT_NAMES = ["pixel_values", "input_ids", "token_type_ids", "attention_mask", "pixel_mask"]


def export_onnx(torch, model, batch, path, check=True):
    """Exports `model` with the published exports' names (batch and text length dynamic) and,
    with `check`, that ONNX Runtime gives PyTorch's outputs on `batch`; returns ONNX Runtime's."""
    import numpy as np
    import onnxruntime
    import transformers.models.grounding_dino.modeling_grounding_dino as modeling

    class Exported(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values, input_ids, token_type_ids, attention_mask, pixel_mask):
            out = self.model(
                pixel_values=pixel_values,
                input_ids=input_ids,
                token_type_ids=token_type_ids,
                attention_mask=attention_mask,
                pixel_mask=pixel_mask,
            )
            return out.logits, out.pred_boxes

    original = modeling.generate_masks_with_special_tokens_and_transfer_map
    onnx_friendly_ops(torch, modeling)
    special = torch.tensor(modeling.SPECIAL_TOKENS)
    input_ids = batch["input_ids"]
    probes = [input_ids, input_ids[:, :7], torch.tensor([[101, 1130, 1029, 1131, 1131, 102]])]
    for ids in probes:
        replaced = modeling.generate_masks_with_special_tokens_and_transfer_map(ids, special)
        for want, got in zip(original(ids, special), replaced):
            assert torch.equal(want, got), (ids, want, got)
    args = tuple(batch[n] for n in INPUT_NAMES)
    torch.onnx.export(
        Exported(model).eval(),
        args,
        str(path),
        input_names=INPUT_NAMES,
        output_names=["logits", "pred_boxes"],
        dynamic_axes={
            "pixel_values": {0: "batch"},
            "input_ids": {0: "batch", 1: "sequence"},
            "token_type_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "pixel_mask": {0: "batch"},
            "logits": {0: "batch"},
            "pred_boxes": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )
    model.eval()
    session = onnxruntime.InferenceSession(str(path))
    logits, boxes = session.run(None, {n: batch[n].numpy() for n in INPUT_NAMES})
    if not check:
        return logits, boxes
    with torch.no_grad():
        expected = model(**{n: batch[n] for n in INPUT_NAMES})
    want = expected.logits.numpy()
    finite = np.isfinite(want)
    assert np.array_equal(finite, np.isfinite(logits))
    # Within 1e-3, relative to the largest logit for a deep model's large ones.
    logits_error = np.abs(logits - want)[finite].max()
    assert logits_error < 1e-3 * max(1.0, np.abs(want[finite]).max()), logits_error
    boxes_error = np.abs(boxes - expected.pred_boxes.numpy()).max()
    assert boxes_error < 1e-4, boxes_error
    return logits, boxes


def onnx_friendly_ops(torch, modeling):
    """Replaces the reference's phrase-mask function, whose `isin`, `cummax`, `cummin` and
    boolean `eye` the TorchScript exporter cannot convert, with an equivalent one made of
    comparisons and reductions (its fill values stay within 32 bits: ONNX Runtime's integer
    reductions get larger ones wrong)."""

    def cumulative(x, largest):
        # out[b, i] = max (or min) of x[b, j] over j <= i, through an i >= j mask.
        index = torch.arange(x.shape[1])
        before = (index.unsqueeze(1) >= index.unsqueeze(0)).unsqueeze(0)
        fill = x.new_full((), -(2**30) if largest else 2**30)
        masked = torch.where(before, x.unsqueeze(1), fill)
        return masked.max(dim=2)[0] if largest else masked.min(dim=2)[0]

    def phrase_masks(input_ids, special_tokens):
        # The reference's generate_masks_with_special_tokens_and_transfer_map, same results:
        # tokens attend within their phrase (the tokens up to the next delimiter), and each
        # token's position counts from the previous delimiter.
        special = (input_ids.unsqueeze(-1) == special_tokens.to(input_ids.device)).any(-1)
        index = torch.arange(input_ids.shape[1]).unsqueeze(0) + torch.zeros_like(input_ids)
        length = index[:, -1:] + 1
        previous = cumulative(torch.where(special, index, torch.full_like(index, -1)), True)
        previous = torch.cat([torch.full_like(previous[:, :1], -1), previous[:, :-1]], dim=1)
        upcoming = torch.where(special, index, length)
        upcoming = cumulative(upcoming.flip([1]), False).flip([1])
        valid = (upcoming != 0) & (upcoming != length - 1) & (upcoming != length)
        same = upcoming.unsqueeze(2) == upcoming.unsqueeze(1)
        mask = (same & valid.unsqueeze(1)) | (index.unsqueeze(2) == index.unsqueeze(1))
        positions = torch.where(valid, index - previous - 1, torch.zeros_like(index))
        return mask, positions.clamp(min=0)

    modeling.generate_masks_with_special_tokens_and_transfer_map = phrase_masks


def main():
    ensure_venv()
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.numpy import save_file
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        SwinConfig,
    )
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )
    from transformers.models.grounding_dino.processing_grounding_dino import (
        GroundingDinoProcessor,
    )

    torch.manual_seed(0)
    model_dir = OUT / "tiny-grounding-dino"
    image_dir = OUT / "images"
    model_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)

    tokenizer, fast = make_tokenizer(bert_vocab())
    tokenizer.save(str(model_dir / "tokenizer.json"))
    vocab = tokenizer.get_vocab()

    swin = SwinConfig(
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 2],
        window_size=4,
        image_size=SIZE,
        out_indices=[2, 3, 4],
        out_features=["stage2", "stage3", "stage4"],
    )
    bert = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=swin,
        text_config=bert,
        use_timm_backbone=False,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=30,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
        fusion_droppath=0.0,
    )
    model = GroundingDinoForObjectDetection(config).eval()
    config.save_pretrained(model_dir)

    processor_images = GroundingDinoImageProcessorPil(
        size={"shortest_edge": SIZE, "longest_edge": SIZE},
        pad_size={"height": SIZE, "width": SIZE},
    )
    processor_images.save_pretrained(model_dir)
    processor = GroundingDinoProcessor(image_processor=processor_images, tokenizer=fast)

    # Inputs: two real photos at a small size, one landscape, one portrait.
    sources = [("flower.jpg", 200, "flower-200.png"), ("hopper.jpg", 180, "hopper-180.png")]
    images = []
    for source, long_edge, name in sources:
        photo = Image.open(ROOT / "fixtures" / "photos" / source).convert("RGB")
        photo.thumbnail((long_edge, long_edge), Image.BICUBIC)
        if name.startswith("hopper"):
            photo = photo.transpose(Image.Transpose.ROTATE_90)
        photo.save(image_dir / name)
        images.append(Image.open(image_dir / name).convert("RGB"))

    text = " . ".join(PROMPTS) + " ."
    batch = processor(images=images, text=[text, text], return_tensors="pt")
    pixel_values = batch["pixel_values"]
    pixel_mask = batch["pixel_mask"]
    input_ids = batch["input_ids"]
    assert tuple(pixel_values.shape[-2:]) == (SIZE, SIZE), pixel_values.shape

    logits, boxes = export_onnx(torch, model, batch, model_dir / "model.onnx")

    class Outputs:
        pass

    outputs = Outputs()
    outputs.logits = torch.from_numpy(logits)
    outputs.pred_boxes = torch.from_numpy(boxes)
    probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
    scores = np.nan_to_num(probs).max(-1)
    # Thresholds that keep some queries and drop others on these random weights.
    box_threshold = float(np.quantile(scores, 0.6))
    text_threshold = float(np.quantile(np.nan_to_num(probs[probs > 0]), 0.7))
    sizes = [(image.height, image.width) for image in images]
    results = processor.post_process_grounded_object_detection(
        outputs,
        input_ids=input_ids,
        threshold=box_threshold,
        text_threshold=text_threshold,
        target_sizes=sizes,
    )

    save_file(
        {
            "pixel_values": pixel_values.numpy().astype(np.float32),
            "pixel_mask": pixel_mask.numpy().astype(np.uint8),
            "logits": logits.astype(np.float32),
            "pred_boxes": boxes.astype(np.float32),
        },
        str(OUT / "reference.safetensors"),
    )
    reference = {
        "prompts": PROMPTS,
        "text": text,
        "input_ids": input_ids[0].tolist(),
        "images": [name for _, _, name in sources],
        "sizes": [[w, h] for h, w in sizes],
        "box_threshold": box_threshold,
        "text_threshold": text_threshold,
        "detections": [
            [
                {"score": float(s), "box": [float(v) for v in b], "text_label": label}
                for s, b, label in zip(r["scores"], r["boxes"], r["text_labels"])
            ]
            for r in results
        ],
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    for r in reference["detections"]:
        print(len(r), "detections:", sorted({d["text_label"] for d in r}))


# The daemon's default [objects] prompts (imgd_objects::ObjectsConfig::default).
DEFAULT_PROMPTS = ["person", "dog", "cat", "bird", "horse", "car", "bicycle", "boat", "building",
                   "tree", "flower", "food", "text", "sign", "document", "screen"]


def full_size(out):
    """GroundingDINO-T at its real size (`GroundingDinoConfig()`: Swin-T, BERT-base, 900
    queries, max_text_len 256) with random weights, exported for 800 × 800 canvases into `out`
    (about 700 MB, not committed): what the objects benchmark times. A tokenizer in
    bert-base-uncased's id layout knows the daemon's default prompts, so the caption has the
    real model's token count."""
    ensure_venv()
    import torch
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    tokens = bert_vocab()
    tokens += [w for w in DEFAULT_PROMPTS if w not in tokens]
    tokenizer, fast = make_tokenizer(tokens)
    tokenizer.save(str(out / "tokenizer.json"))
    config = GroundingDinoConfig()
    model = GroundingDinoForObjectDetection(config).eval()
    config.save_pretrained(out)
    text = " . ".join(DEFAULT_PROMPTS) + " ."
    ids = fast([text], return_tensors="pt")
    size = 800
    batch = {
        "pixel_values": torch.randn(1, 3, size, size),
        "input_ids": ids["input_ids"],
        "token_type_ids": torch.zeros_like(ids["input_ids"]),
        "attention_mask": torch.ones_like(ids["input_ids"]),
        "pixel_mask": torch.ones(1, size, size, dtype=torch.long),
    }
    batch["pixel_mask"][:, 600:, :] = 0
    # No output check: with random weights at this size ONNX Runtime's logits drift from
    # PyTorch's (by up to 21 on torch 2.15; the encoder's top-k choice of queries amplifies
    # rounding). The timing needs the graph, which the tiny fixture (`main`) checks.
    export_onnx(torch, model, batch, out / "model.onnx", check=False)
    print(f"wrote {out / 'model.onnx'}: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{ids['input_ids'].shape[1]} tokens")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--full-size":
        full_size(Path(sys.argv[2]).resolve())
    elif len(sys.argv) == 1:
        main()
    else:
        sys.exit(f"usage: {sys.argv[0]} [--full-size DIR]")
