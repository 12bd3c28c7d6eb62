#!/usr/bin/env python3
"""Builds the CLIP and aesthetic parity fixtures under fixtures/clip/ with the reference
implementation (Hugging Face `transformers` + `torch`, CPU).

    python3 scripts/make-fixtures.py            # (re)builds fixtures/clip/

The first run creates a git-ignored virtual environment `.venv-fixtures/` and installs torch,
transformers, pillow, safetensors and regex from PyPI into it (a few GB: PyPI's torch wheel
pulls the CUDA libraries; only the CPU is used), then re-runs itself inside it.

What it writes (committed, small: see fixtures/clip/SOURCES.md):

- tiny-clip/: a random-weight `CLIPModel` with the real architecture at toy size (2 layers,
  width 32, 4 heads, ViT patch 32 on 224-px inputs, 16-d embeddings) saved by
  `save_pretrained` (config.json + model.safetensors), its `preprocessor_config.json`
  (`CLIPImageProcessorPil`, i.e. PIL bicubic), and a CLIP tokenizer (`CLIPTokenizer`, the same
  normaliser, pre-tokeniser, byte-level BPE with `</w>` and post-processor as the real one)
  over a small BPE vocabulary learnt here in CLIP's own vocabulary layout (256 byte symbols,
  the same with `</w>`, merges, then `<|startoftext|>`, `<|endoftext|>`);
- tiny-aesthetic/: the improved-aesthetic-predictor MLP (`simple_inference.py`'s structure:
  five linear layers with dropouts, no activations) at toy width over the 16-d embeddings, as
  model.safetensors and as the reference's torch `.pth` state dict;
- images/: PNG inputs derived from the real photos in fixtures/photos (lossless, so Rust and
  Python see the same pixels);
- reference.safetensors + reference.json: the reference outputs (pixel tensors after
  preprocessing, image embeddings, token ids, text embeddings, aesthetic scores).

The Rust parity tests (crates/imgd-clip/tests/parity.rs) load these through the real loading
code and compare within 1e-4 relative.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-fixtures"
OUT = ROOT / "fixtures" / "clip"
PACKAGES = ["torch", "transformers", "pillow", "safetensors", "numpy", "regex"]


def ensure_venv():
    """Re-runs this script inside .venv-fixtures, creating it first if needed."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import torch, transformers, PIL, safetensors, regex"],
        capture_output=True,
    )
    if probe.returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    os.execv(str(python), [str(python), __file__, *sys.argv[1:]])


ensure_venv()

import numpy as np  # noqa: E402
import regex  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer  # noqa: E402
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402

SEED = 20240611
HIDDEN = 32
LAYERS = 2
HEADS = 4
INTERMEDIATE = 64
PROJECTION = 16
MERGES = 300
AESTHETIC_WIDTHS = [PROJECTION, 64, 32, 16, 8, 1]

TEXTS = [
    "a photo of a flower",
    "A red car at NIGHT!",
    "",
    "hopper's café — naïve résumé, 2024",
    "the quick brown fox jumps over the lazy dog " * 12,  # > 77 tokens: truncated
    "sunset over the sea with boats and gulls",
]

# A small corpus for the BPE merges: the kind of words photo searches use.
CORPUS = """
a photo of a flower in the garden with green leaves and a yellow centre
a red car parked in the street at night under the lights of the city
the quick brown fox jumps over the lazy dog near the river bank
sunset over the sea with boats and gulls flying above the waves
portrait of a man with glasses smiling at the camera in a cafe
mountains covered with snow and a blue sky with white clouds
a dog playing on the beach with a ball in the summer sun
people walking in the park under the trees in autumn colours
an old building with windows and a door painted in red and white
children playing football on the grass after school in the evening
""" * 3


# --- CLIP's byte-level BPE, as OpenAI's simple_tokenizer.py (the original reference) -------

def bytes_to_unicode():
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


PAT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
BYTE_ENCODER = bytes_to_unicode()


def words(text):
    text = regex.sub(r"\s+", " ", text).strip().lower()
    for token in regex.findall(PAT, text):
        yield "".join(BYTE_ENCODER[b] for b in token.encode("utf-8"))


def learn_merges(corpus, count):
    """Plain BPE learning over CLIP's word symbols (last symbol carries `</w>`)."""
    vocab = {}
    for word in words(corpus):
        symbols = tuple(word[:-1]) + (word[-1] + "</w>",)
        vocab[symbols] = vocab.get(symbols, 0) + 1
    merges = []
    for _ in range(count):
        pairs = {}
        for symbols, freq in vocab.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] = pairs.get(pair, 0) + freq
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged = {}
        for symbols, freq in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + freq
        vocab = merged
    return merges


def clip_vocab(merges):
    """CLIP's vocabulary layout: bytes, bytes + `</w>`, merges, then the two special tokens."""
    tokens = list(BYTE_ENCODER.values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(tokens)) == len(tokens), "a merge repeats a token"
    return {t: i for i, t in enumerate(tokens)}


def simple_tokenizer_ids(text, vocab, merges, max_len):
    """OpenAI simple_tokenizer's encode + CLIP's padding: the tokenizer cross-check."""
    ranks = {m: i for i, m in enumerate(merges)}

    def bpe(token):
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = tuple(out)
        return word

    ids = [vocab[t] for w in words(text) for t in bpe(w)]
    ids = [vocab["<|startoftext|>"]] + ids[: max_len - 2] + [vocab["<|endoftext|>"]]
    return ids + [vocab["<|endoftext|>"]] * (max_len - len(ids))


# --- images ------------------------------------------------------------------------------

def make_images(photos, out):
    """Lossless inputs from real photos at the sizes the embedding tier gives (448 long edge),
    plus a portrait, a near-identity and an upscale case."""
    out.mkdir(parents=True, exist_ok=True)
    specs = {
        # 480x360 -> 448x336: the usual 4:3 tier, downscaled to 298x224 then cropped.
        "flower-448.png": (photos / "flower.jpg", lambda im: im.resize((448, 336), Image.LANCZOS)),
        # 2000x1072 -> 448x240: a wide panorama-like tier.
        "xmp-448.png": (photos / "xmp_test.jpg", lambda im: im.resize((448, 240), Image.LANCZOS)),
        # 300x225 turned to portrait 225x300: resized by one pixel on the short side.
        "flower2-portrait.png": (photos / "flower2.jpg", lambda im: im.transpose(Image.ROTATE_90)),
        # 128x128: upscaled to 224.
        "hopper.png": (photos / "hopper.jpg", lambda im: im),
    }
    images = {}
    for name, (src, transform) in specs.items():
        im = transform(Image.open(src).convert("RGB"))
        im.save(out / name, optimize=True)
        images[name] = Image.open(out / name).convert("RGB")
    return images


# --- models ------------------------------------------------------------------------------

def perturb(model, generator):
    """Random biases and layer-norm parameters, so that a tensor loaded wrongly shows."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                param.add_(torch.randn(param.shape, generator=generator) * 0.1)


class AestheticMLP(torch.nn.Module):
    """simple_inference.py's MLP (without pytorch_lightning), at the given widths."""

    def __init__(self, widths):
        super().__init__()
        w = widths
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(w[0], w[1]),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(w[1], w[2]),
            torch.nn.Dropout(0.2),
            torch.nn.Linear(w[2], w[3]),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(w[3], w[4]),
            torch.nn.Linear(w[4], w[5]),
        )

    def forward(self, x):
        return self.layers(x)


def normalized(t):
    return t / t.norm(dim=-1, keepdim=True)


def main():
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    OUT.mkdir(parents=True, exist_ok=True)
    clip_dir = OUT / "tiny-clip"
    clip_dir.mkdir(exist_ok=True)

    # Tokenizer.
    merges = learn_merges(CORPUS, MERGES)
    vocab = clip_vocab(merges)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=list(merges))
    tokenizer.save_pretrained(clip_dir)
    for extra in ["vocab.json", "merges.txt", "special_tokens_map.json", "chat_template.jinja"]:
        (clip_dir / extra).unlink(missing_ok=True)
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]

    # Model.
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=77,
            hidden_act="quick_gelu", bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
            projection_dim=PROJECTION,
        ),
        vision_config=dict(
            hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, image_size=224, patch_size=32, hidden_act="quick_gelu",
            projection_dim=PROJECTION,
        ),
        projection_dim=PROJECTION,
    )
    model = CLIPModel(config).eval()
    perturb(model, generator)
    model.save_pretrained(clip_dir, safe_serialization=True)
    cfg = json.loads((clip_dir / "config.json").read_text())
    cfg["imgd_model_id"] = "tiny-clip"
    cfg["imgd_model_version"] = "fixture-1"
    (clip_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (clip_dir / "generation_config.json").unlink(missing_ok=True)

    processor = CLIPImageProcessorPil()
    processor.save_pretrained(clip_dir)

    # Inputs and reference outputs.
    images = make_images(ROOT / "fixtures" / "photos", OUT / "images")
    names = sorted(images)
    pixels = processor(images=[images[n] for n in names], return_tensors="pt")["pixel_values"]

    encoded = tokenizer(TEXTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    ids = encoded["input_ids"]
    for text, row in zip(TEXTS, ids.tolist()):
        expected = simple_tokenizer_ids(text, vocab, merges, 77)
        assert row == expected, f"CLIPTokenizer and simple_tokenizer disagree on {text!r}"

    with torch.no_grad():
        vision = model.vision_model(pixel_values=pixels)
        image_embeds = normalized(model.visual_projection(vision.pooler_output))
        text_out = model.text_model(input_ids=ids, attention_mask=encoded["attention_mask"])
        text_embeds = normalized(model.text_projection(text_out.pooler_output))

    # Aesthetic MLP, over the image embeddings and over random vectors.
    mlp = AestheticMLP(AESTHETIC_WIDTHS).eval()
    perturb(mlp, generator)
    aesthetic_dir = OUT / "tiny-aesthetic"
    aesthetic_dir.mkdir(exist_ok=True)
    state = {k: v.contiguous() for k, v in mlp.state_dict().items()}
    save_file(state, str(aesthetic_dir / "model.safetensors"))
    torch.save(state, aesthetic_dir / "model.pth")
    (aesthetic_dir / "config.json").write_text(
        json.dumps({"imgd_model_id": "tiny-aesthetic", "imgd_model_version": "fixture-1",
                    "widths": AESTHETIC_WIDTHS}, indent=2) + "\n"
    )
    mlp_inputs = torch.randn((6, PROJECTION), generator=generator)
    with torch.no_grad():
        mlp_scores = mlp(normalized(mlp_inputs)).squeeze(-1)
        aesthetic_scores = mlp(normalized(image_embeds)).squeeze(-1)

    tensors = {
        "image_embeds": image_embeds.contiguous(),
        "text_ids": ids.to(torch.int64).contiguous(),
        "text_embeds": text_embeds.contiguous(),
        "mlp_inputs": mlp_inputs.contiguous(),
        "mlp_scores": mlp_scores.contiguous(),
        "aesthetic_scores": aesthetic_scores.contiguous(),
    }
    for i, name in enumerate(names):
        tensors[f"pixels.{name}"] = pixels[i].contiguous()
    save_file(tensors, str(OUT / "reference.safetensors"))
    (OUT / "reference.json").write_text(json.dumps({
        "images": names,
        "texts": TEXTS,
        "made_with": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "pillow": Image.__version__,
            "image_processor": "CLIPImageProcessorPil",
        },
    }, indent=2, ensure_ascii=False) + "\n")

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"fixtures/clip: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
