#!/usr/bin/env python3
"""Builds the CLIP and aesthetic parity fixtures under fixtures/clip/ with the reference
implementation (Hugging Face `transformers` + `torch`, CPU).

    python3 scripts/make-fixtures.py [clip|clip-onnx|blip|blip2|blip2-t5|trocr|siglip|all]   # (re)builds fixtures/<target>/

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

fixtures/blip/ (see its SOURCES.md) holds a tiny random-weight `BlipForConditionalGeneration`
with a small BERT WordPiece tokenizer, and its reference outputs (pixels, vision embeddings,
decoder logits, greedy caption and prompted-answer ids), checked by
crates/imgd-caption/tests/parity.rs.

fixtures/blip2/ (see its SOURCES.md) holds tiny random-weight `Blip2ForConditionalGeneration`s
with OPT, in transformers' layout and in the released checkpoints' (split attention biases, two
shards), and with Flan-T5 (`blip2-t5` makes that one alone), and their reference outputs (pixels, vision, Q-Former and projected outputs, first-step
logits, greedy and beam-search ids and scores), checked by crates/imgd-blip2/tests/parity.rs.

fixtures/trocr/ (see its SOURCES.md) holds a tiny random-weight `VisionEncoderDecoderModel`
with trocr-small-printed's structure (DeiT encoder, TrOCR decoder), an XLM-R-style unigram
tokenizer (tokenizer.json and sentencepiece.bpe.model), line crops of fixtures/ocr, and its
reference outputs (pixels, encoder states, decoder logits, greedy ids, token probabilities and
texts), checked by crates/imgd-trocr/tests/trocr_parity.rs.
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
    """Re-runs this script inside .venv-fixtures, creating it first if needed
    (`FIXTURES_PYTHON=here`: in this interpreter, which must have the packages, e.g. offline)."""
    python = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve() or os.environ.get("FIXTURES_PYTHON") == "here":
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


# --- BLIP captioning (fixtures/blip) ------------------------------------------------------

BLIP_OUT = ROOT / "fixtures" / "blip"
BLIP_IMAGE_SIZE = 192
BLIP_PATCH = 16
BLIP_MAX_NEW_TOKENS = 12
BLIP_QUESTION = "the main subject is"
BLIP_LOGITS_TEXT = "a photo of a flower"

BLIP_CORPUS = CORPUS + """
the main subject is a scene that is the lighting is the mood is a picture of
bright dark soft warm cold calm happy sad indoor outdoor natural artificial
"""


def blip_vocab():
    """A small BERT WordPiece vocabulary in bert-base-uncased's layout: [PAD] first, the
    special tokens, single characters, their `##` continuations, then whole words and a few
    suffixes. BLIP's [DEC] (its BOS) and [ENC] are added after it, as in the real tokenizer."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("!\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~")
    tokens += chars
    tokens += ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    words = sorted(set(regex.findall(r"[a-z]+", BLIP_CORPUS.lower())))
    tokens += [w for w in words if w not in tokens]
    tokens += [t for t in ["##ing", "##ed", "##er", "##ly"] if t not in tokens]
    assert len(set(tokens)) == len(tokens)
    return {t: i for i, t in enumerate(tokens)}


def make_blip_images(photos, out):
    """Lossless inputs at the caption tier (384-px long edge)."""
    out.mkdir(parents=True, exist_ok=True)
    specs = {
        # 480x360 -> 384x288: the usual 4:3 tier, squashed to the model's square input.
        "flower-384.png": (photos / "flower.jpg", (384, 288)),
        # 2000x1072 -> 384x206: a wide tier.
        "xmp-384.png": (photos / "xmp_test.jpg", (384, 206)),
    }
    images = {}
    for name, (src, size) in specs.items():
        im = Image.open(src).convert("RGB").resize(size, Image.LANCZOS)
        im.save(out / name, optimize=True)
        images[name] = Image.open(out / name).convert("RGB")
    return images


def greedy_rows(ids, sep):
    """Generated ids up to and including the first [SEP], per row (HF pads finished rows)."""
    rows = []
    for row in ids.tolist():
        rows.append(row[: row.index(sep) + 1] if sep in row else row)
    return rows


def make_blip():
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED + 1)
    model_dir = BLIP_OUT / "tiny-blip"
    model_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = BertTokenizer(vocab=blip_vocab(), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    tokenizer.save_pretrained(model_dir)
    for extra in ["vocab.txt", "special_tokens_map.json", "chat_template.jinja"]:
        (model_dir / extra).unlink(missing_ok=True)
    bos = tokenizer.convert_tokens_to_ids("[DEC]")
    sep, pad = tokenizer.sep_token_id, tokenizer.pad_token_id

    config = BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=HIDDEN, encoder_hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            max_position_embeddings=64, hidden_act="gelu", bos_token_id=bos, eos_token_id=sep,
            sep_token_id=sep, pad_token_id=pad, projection_dim=PROJECTION,
        ),
        vision_config=dict(
            hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, image_size=BLIP_IMAGE_SIZE, patch_size=BLIP_PATCH,
            hidden_act="gelu", projection_dim=PROJECTION,
        ),
        projection_dim=PROJECTION,
        image_text_hidden_size=PROJECTION,
    )
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Weights of a usable scale (the vision tower's default init is 1e-10), random biases
        # and layer-norm parameters so that a tensor loaded wrongly shows.
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        perturb(model, generator)
        # A [SEP] bias so that some greedy decodes end before the token limit.
        model.text_decoder.cls.predictions.bias[sep] += 2.5
    model.save_pretrained(model_dir, safe_serialization=True)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["imgd_model_id"] = "tiny-blip"
    cfg["imgd_model_version"] = "fixture-1"
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (model_dir / "generation_config.json").unlink(missing_ok=True)

    processor = BlipImageProcessorPil(size={"height": BLIP_IMAGE_SIZE, "width": BLIP_IMAGE_SIZE})
    processor.save_pretrained(model_dir)

    images = make_blip_images(ROOT / "fixtures" / "photos", BLIP_OUT / "images")
    names = sorted(images)
    pixels = processor(images=[images[n] for n in names], return_tensors="pt")["pixel_values"]

    question = tokenizer([BLIP_QUESTION] * len(names), return_tensors="pt")
    logits_ids = torch.tensor(
        [[bos] + tokenizer(BLIP_LOGITS_TEXT, add_special_tokens=False)["input_ids"]] * len(names)
    )
    with torch.no_grad():
        image_embeds = model.vision_model(pixel_values=pixels)[0]
        greedy = dict(max_new_tokens=BLIP_MAX_NEW_TOKENS, do_sample=False, num_beams=1)
        caption = model.generate(pixel_values=pixels, **greedy)
        answer = model.generate(
            pixel_values=pixels, input_ids=question["input_ids"],
            attention_mask=question["attention_mask"], **greedy,
        )
        logits = model.text_decoder(
            input_ids=logits_ids, encoder_hidden_states=image_embeds
        ).logits
    caption_rows = greedy_rows(caption, sep)
    answer_rows = greedy_rows(answer, sep)
    print("caption ids:", caption_rows)
    print("answer ids:", answer_rows)

    tensors = {
        "image_embeds": image_embeds.contiguous(),
        "logits_ids": logits_ids.to(torch.int64).contiguous(),
        "logits": logits.contiguous(),
    }
    for i, name in enumerate(names):
        tensors[f"pixels.{name}"] = pixels[i].contiguous()
    save_file(tensors, str(BLIP_OUT / "reference.safetensors"))
    (BLIP_OUT / "reference.json").write_text(json.dumps({
        "images": names,
        "max_new_tokens": BLIP_MAX_NEW_TOKENS,
        "caption_ids": caption_rows,
        "caption_texts": [tokenizer.decode(r, skip_special_tokens=True) for r in caption_rows],
        "question": BLIP_QUESTION,
        "question_prompt_ids": [bos] + tokenizer(BLIP_QUESTION, add_special_tokens=False)["input_ids"],
        "answer_ids": answer_rows,
        "answer_texts": [
            tokenizer.decode(r[question["input_ids"].shape[1] - 1:], skip_special_tokens=True)
            for r in answer_rows
        ],
        "logits_text": BLIP_LOGITS_TEXT,
        "token_ids": {"bos": bos, "sep": sep, "pad": pad},
        "made_with": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "pillow": Image.__version__,
            "image_processor": "BlipImageProcessorPil",
        },
    }, indent=2, ensure_ascii=False) + "\n")

    total = sum(p.stat().st_size for p in BLIP_OUT.rglob("*") if p.is_file())
    print(f"fixtures/blip: {total / 1e6:.2f} MB")


# --- BLIP-2 ----------------------------------------------------------------------------------

BLIP2_OUT = ROOT / "fixtures" / "blip2"
BLIP2_IMAGE_SIZE = 32
BLIP2_PATCH = 4
BLIP2_QUERY_TOKENS = 8
BLIP2_VOCAB = 320
BLIP2_MAX_NEW_TOKENS = 8
# The caption's prompt (none: OPT's BOS alone) and two questions in the form BLIP-2's paper uses.
BLIP2_PROMPTS = {
    "caption": "",
    "q1": "Question: what is in the picture? Answer:",
    "q2": "Question: is it taken indoors? Answer:",
}
BLIP2_CORPUS = BLIP_CORPUS + """
Question: what is in the picture? Answer: a dog on a beach.
Question: is it taken indoors? Answer: no, outdoors in the sun.
"""


def opt_tokenizer():
    """A byte-level BPE tokenizer in OPT's layout (`<s>`, `<pad>`, `</s>`, `<unk>` first; BOS
    `</s>` put before every text), learnt on a small corpus, plus BLIP-2's `<image>` token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BLIP2_VOCAB, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([BLIP2_CORPUS], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", 2)],
    )
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer
# `generate` settings the fixture records: greedy; beam search; beam search as BLIP-2's
# question recipe runs it (shorter answers favoured) with the other processors on.
BLIP2_DECODINGS = {
    "greedy": {"num_beams": 1},
    "greedy_penalised": {"num_beams": 1, "repetition_penalty": 1.5, "min_new_tokens": 3},
    "beam3": {"num_beams": 3},
    "beam3_penalised": {
        "num_beams": 3, "length_penalty": -1.0, "repetition_penalty": 1.5, "min_new_tokens": 2,
    },
    # `min_length` counts the whole sequence: OPT's image placeholders and prompt, Flan-T5's
    # decoder start token.
    "greedy_min_length": {"num_beams": 1, "min_length": 13},
    "beam3_min_length": {"num_beams": 3, "min_length": 13},
}


def blip2_reference(model, tokenizer, pixels, prompt_ids, eos, decoder_start=None):
    """What a tiny BLIP-2 computes on `pixels` for each prompt of `BLIP2_PROMPTS` (`prompt_ids`
    gives its ids, image placeholders first): every stage's output, the first-step logits, and
    per decoding of `BLIP2_DECODINGS` the new ids, beam scores and texts. `decoder_start` is an
    encoder-decoder's first decoder token (its logits are the first step's)."""
    tensors, generated, scores, texts = {}, {}, {}, {}
    n = pixels.shape[0]
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixels, return_dict=True)
        tensors["vision"] = features.vision_outputs.last_hidden_state.contiguous()
        tensors["qformer"] = features.qformer_outputs.last_hidden_state.contiguous()
        tensors["projected"] = features.pooler_output.contiguous()
        for prompt in BLIP2_PROMPTS:
            ids = torch.tensor([prompt_ids(prompt)] * n)
            extra = {}
            if decoder_start is not None:
                extra["decoder_input_ids"] = torch.full((n, 1), decoder_start)
            logits = model(pixel_values=pixels, input_ids=ids, **extra).logits
            tensors[f"logits.{prompt}"] = logits[:, -1, :].contiguous()
            for name, settings in BLIP2_DECODINGS.items():
                out = model.generate(
                    pixel_values=pixels, input_ids=ids, return_dict_in_generate=True,
                    output_scores=True, max_new_tokens=BLIP2_MAX_NEW_TOKENS, do_sample=False,
                    **settings,
                )
                if decoder_start is None:
                    new = out.sequences[:, ids.shape[1]:].tolist()
                else:
                    assert (out.sequences[:, 0] == decoder_start).all(), out.sequences
                    new = out.sequences[:, 1:].tolist()
                if settings.get("num_beams", 1) > 1:
                    lengths = (out.beam_indices >= 0).sum(dim=1).tolist()
                    rows = [row[:length] for row, length in zip(new, lengths)]
                    scores[f"{name}.{prompt}"] = out.sequences_scores.tolist()
                else:
                    rows = [row[: row.index(eos) + 1] if eos in row else row for row in new]
                generated[f"{name}.{prompt}"] = rows
                texts[f"{name}.{prompt}"] = [
                    tokenizer.decode(row, skip_special_tokens=True) for row in rows
                ]
    print("generated ids:", json.dumps(generated))
    return tensors, generated, scores, texts


def blip2_vision_and_qformer():
    """The vision tower's and the Q-Former's configurations of the tiny BLIP-2s."""
    return dict(
        vision_config=dict(
            hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, image_size=BLIP2_IMAGE_SIZE, patch_size=BLIP2_PATCH,
        ),
        qformer_config=dict(
            hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, cross_attention_frequency=2,
        ),
    )


def blip2_processor_and_pixels(model_dir):
    """Saves the tiny BLIP-2s' image processor into `model_dir`; the fixture images' names and
    pixels as it makes them."""
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    processor = BlipImageProcessorPil(
        size={"height": BLIP2_IMAGE_SIZE, "width": BLIP2_IMAGE_SIZE},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor.save_pretrained(model_dir)
    images_dir = ROOT / "fixtures" / "blip" / "images"
    names = sorted(p.name for p in images_dir.glob("*.png"))
    images = [Image.open(images_dir / n).convert("RGB") for n in names]
    return names, processor(images=images, return_tensors="pt")["pixel_values"]


def write_blip2_reference(stem, names, pixels, results, prompt_ids, token_ids):
    """Writes `<stem>.safetensors` (the pixels and `blip2_reference`'s tensors) and
    `<stem>.json` (the prompts, decodings and what they gave)."""
    tensors, generated, scores, texts = results
    for i, name in enumerate(names):
        tensors[f"pixels.{name}"] = pixels[i].contiguous()
    save_file(tensors, str(BLIP2_OUT / f"{stem}.safetensors"))
    (BLIP2_OUT / f"{stem}.json").write_text(json.dumps({
        "images": names,
        "max_new_tokens": BLIP2_MAX_NEW_TOKENS,
        "prompt_texts": BLIP2_PROMPTS,
        "prompts": {p: prompt_ids(p) for p in BLIP2_PROMPTS},
        "decodings": BLIP2_DECODINGS,
        "generated_ids": generated,
        "beam_scores": scores,
        "generated_texts": texts,
        "token_ids": token_ids,
        "made_with": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "pillow": Image.__version__,
            "image_processor": "BlipImageProcessorPil",
        },
    }, indent=2) + "\n")


def make_blip2():
    """A tiny random-weight BLIP-2 with OPT (`Blip2ForConditionalGeneration`), its processor's
    pixels, the vision, Q-Former and projected outputs, first-step logits and greedy ids."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig

    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED + 2)
    model_dir = BLIP2_OUT / "tiny-blip2-opt"
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = opt_tokenizer()
    bos, eos, pad = 2, 2, 1
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = OPTConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, ffn_dim=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, max_position_embeddings=64, word_embed_proj_dim=HIDDEN,
        bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
        # An output head of its own: with tied random weights greedy decoding repeats the last
        # token (the released checkpoints store `lm_head.weight` too).
        tie_word_embeddings=False,
    )
    config = Blip2Config(
        **blip2_vision_and_qformer(),
        text_config=text.to_dict(),
        num_query_tokens=BLIP2_QUERY_TOKENS,
        image_token_index=image_token,
    )
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        perturb(model, generator)
        # The key has no bias in BLIP-2's vision attention (its third of `qkv.bias` is zero).
        for layer in model.vision_model.encoder.layers:
            bias = layer.self_attn.qkv.bias
            bias[HIDDEN : 2 * HIDDEN] = 0.0
        # Stronger output weights, so that the greedy choice is clear-cut, and a stronger end
        # token, so that some decodes end before the token limit.
        model.language_model.lm_head.weight.mul_(3.0)
        model.language_model.lm_head.weight[eos].mul_(2.5)
    model.save_pretrained(model_dir, safe_serialization=True)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["imgd_model_id"] = "tiny-blip2-opt"
    cfg["imgd_model_version"] = "fixture-1"
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (model_dir / "generation_config.json").unlink(missing_ok=True)
    names, pixels = blip2_processor_and_pixels(model_dir)
    tokenizer.save_pretrained(model_dir)
    for extra in ["special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt"]:
        (model_dir / extra).unlink(missing_ok=True)


    def prompt_ids(prompt):
        text_ids = tokenizer(BLIP2_PROMPTS[prompt])["input_ids"]
        assert text_ids[0] == bos, text_ids
        return [image_token] * BLIP2_QUERY_TOKENS + text_ids

    results = blip2_reference(model, tokenizer, pixels, prompt_ids, eos)
    write_blip2_reference("reference", names, pixels, results, prompt_ids,
                          {"bos": bos, "eos": eos, "pad": pad, "image": image_token})

    # The released checkpoints store each vision attention's bias as `q_bias` and `v_bias`
    # (the key has none); transformers writes one `qkv.bias`. The same weights in that layout:
    from safetensors.torch import load_file
    state = load_file(str(model_dir / "model.safetensors"))
    split_dir = BLIP2_OUT / "tiny-blip2-opt-split-bias"
    split_dir.mkdir(parents=True, exist_ok=True)
    split = {}
    for key, value in state.items():
        if key.endswith("self_attn.qkv.bias"):
            q, _, v = value.chunk(3)
            split[key.replace("qkv.bias", "q_bias")] = q.clone()
            split[key.replace("qkv.bias", "v_bias")] = v.clone()
        else:
            split[key] = value
    # Sharded in two, with the index a sharded checkpoint has.
    keys = sorted(split)
    half = len(keys) // 2
    weight_map = {}
    for n, part in enumerate([keys[:half], keys[half:]], start=1):
        file = f"model-0000{n}-of-00002.safetensors"
        save_file({k: split[k].contiguous() for k in part}, str(split_dir / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    (split_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n")
    for extra in ["config.json", "preprocessor_config.json"]:
        (split_dir / extra).write_text((model_dir / extra).read_text())

    total = sum(p.stat().st_size for p in BLIP2_OUT.rglob("*") if p.is_file())
    print(f"fixtures/blip2: {total / 1e6:.2f} MB")


BLIP2_T5_UNIGRAM_SIZE = 200


def t5_tokenizer():
    """A tokenizer in Flan-T5's layout (`T5Tokenizer`: a SentencePiece unigram model, Metaspace
    `▁`, <pad>=0 </s>=1 <unk>=2, `</s>` appended to every text) over a unigram vocabulary of the
    BLIP-2 corpus ([`unigram_pieces`]), no sentinel tokens, plus BLIP-2's `<image>`."""
    from transformers import T5Tokenizer

    lines = BLIP2_CORPUS.split("\n")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + unigram_pieces(
        lines, BLIP2_T5_UNIGRAM_SIZE)
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def make_blip2_t5():
    """A tiny random-weight BLIP-2 with Flan-T5 (`Blip2ForConditionalGeneration` over
    `T5ForConditionalGeneration`, T5 v1.1's gated GELU and untied output head), and what it
    computes, as `make_blip2` records for OPT."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, T5Config

    torch.manual_seed(SEED + 10)
    generator = torch.Generator().manual_seed(SEED + 12)
    model_dir = BLIP2_OUT / "tiny-blip2-flan-t5"
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = t5_tokenizer()
    pad, eos = 0, 1
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    text = T5Config(
        vocab_size=len(tokenizer), d_model=HIDDEN, d_kv=8, d_ff=INTERMEDIATE, num_layers=LAYERS,
        num_decoder_layers=LAYERS, num_heads=HEADS, feed_forward_proj="gated-gelu",
        # Few buckets and a short maximum distance, so that the fixture's 20-odd positions
        # reach the logarithmic buckets and the last one.
        relative_attention_num_buckets=16, relative_attention_max_distance=16,
        pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad,
        tie_word_embeddings=False,
    )
    config = Blip2Config(
        **blip2_vision_and_qformer(),
        text_config=text.to_dict(),
        num_query_tokens=BLIP2_QUERY_TOKENS,
        image_token_index=image_token,
    )
    model = Blip2ForConditionalGeneration(config).eval()
    language = model.language_model
    # Flan-T5's output head is its own (the released checkpoints store `lm_head.weight`).
    language.lm_head.weight = torch.nn.Parameter(torch.empty_like(language.shared.weight))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        perturb(model, generator)
        # T5's RMS norms have a scale only: random ones around 1.
        for name, param in language.named_parameters():
            if "layer_norm" in name:
                param.copy_(1.0 + torch.randn(param.shape, generator=generator) * 0.1)
        for layer in model.vision_model.encoder.layers:
            bias = layer.self_attn.qkv.bias
            bias[HIDDEN : 2 * HIDDEN] = 0.0
        language.lm_head.weight.mul_(3.0)
        language.lm_head.weight[eos].mul_(2.5)
    model.save_pretrained(model_dir, safe_serialization=True)
    cfg = json.loads((model_dir / "config.json").read_text())
    # transformers 5 writes T5's untied head as `tie_word_embeddings: true` with
    # `scale_decoder_outputs: false`; the released checkpoints say `tie_word_embeddings: false`.
    cfg["text_config"]["tie_word_embeddings"] = False
    cfg["text_config"].pop("scale_decoder_outputs", None)
    cfg["imgd_model_id"] = "tiny-blip2-flan-t5"
    cfg["imgd_model_version"] = "fixture-1"
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (model_dir / "generation_config.json").unlink(missing_ok=True)
    names, pixels = blip2_processor_and_pixels(model_dir)
    tokenizer.save_pretrained(model_dir)
    for extra in ["special_tokens_map.json", "chat_template.jinja", "spiece.model"]:
        (model_dir / extra).unlink(missing_ok=True)

    # The reference outputs come from the folder as saved, read back as a user loads it.
    saved = Blip2ForConditionalGeneration.from_pretrained(model_dir).eval()
    assert not saved.config.text_config.scale_decoder_outputs
    assert torch.equal(saved.language_model.lm_head.weight, language.lm_head.weight)


    def prompt_ids(prompt):
        # T5 has no BOS: the prompt's ids end with `</s>` (the caption's are `</s>` alone).
        text_ids = tokenizer(BLIP2_PROMPTS[prompt])["input_ids"]
        assert text_ids[-1] == eos, text_ids
        return [image_token] * BLIP2_QUERY_TOKENS + text_ids

    results = blip2_reference(saved, tokenizer, pixels, prompt_ids, eos, decoder_start=pad)
    write_blip2_reference("reference-flan-t5", names, pixels, results, prompt_ids,
                          {"eos": eos, "pad": pad, "decoder_start": pad, "image": image_token})
    total = sum(p.stat().st_size for p in BLIP2_OUT.rglob("*") if p.is_file())
    print(f"fixtures/blip2 with Flan-T5: {total / 1e6:.2f} MB")


# --- TrOCR -----------------------------------------------------------------------------------

TROCR_OUT = ROOT / "fixtures" / "trocr"
TROCR_IMAGE_SIZE = 64
TROCR_PATCH = 8
TROCR_MAX_NEW_TOKENS = 12
TROCR_UNIGRAM_SIZE = 160
TROCR_EXTRA_IDS = 4
TROCR_LOGITS_TEXT = "Total 42.50 EUR"
TROCR_HEAD_SCALE = 4.0
TROCR_EOS_GAIN = 16.0
# Line crops of fixtures/ocr: (name, source, box (left, top, right, bottom)); the boxes are
# the bounding rectangles of what the PP-OCR detector finds there (imgd-ocr's `ocr` example).
TROCR_CROPS = [
    ("bus.png", "text_00.jpg", (292, 313, 496, 355)),
    ("lighthouse.png", "text_05.jpg", (358, 418, 852, 485)),
    ("total.png", "text_05.jpg", (213, 510, 641, 568)),
    ("word.png", "text_00.jpg", (79, 160, 175, 204)),
]


def trocr_unigram_pieces():
    """A SentencePiece-style unigram vocabulary of the OCR fixtures' text ([`unigram_pieces`])."""
    truth = json.loads((ROOT / "fixtures" / "ocr" / "truth.json").read_text())
    lines = [line for image in truth.values() for line in image] + CORPUS.split("\n")
    return unigram_pieces(lines, TROCR_UNIGRAM_SIZE)


def unigram_pieces(lines, size):
    """A SentencePiece-style unigram vocabulary of `lines`, made here deterministically (the
    `tokenizers` unigram trainer is not): every character seen, with and without the word-start
    mark `▁`, then the most frequent word-start and inner substrings of 2 to 6 characters, up to
    `size` - 3 pieces; scores are log relative frequencies."""
    import math
    from collections import Counter

    words = ["▁" + w for line in lines for w in line.split()]
    counts = Counter()
    for word in words:
        for i in range(len(word)):
            for n in range(1, 7):
                if i + n <= len(word) and not (i > 0 and word[i] == "▁"):
                    counts[word[i:i + n]] += 1
    chars = sorted({c for w in words for c in w} | {"▁" + c for w in words for c in w[1:]})
    longer = sorted((p for p in counts if len(p.lstrip("▁")) >= 2 and p not in chars),
                    key=lambda p: (-counts[p] * (len(p) - 1), p))
    chosen = chars + longer[: size - 3 - len(chars)]
    total = sum(counts[p] for p in chosen)
    pieces = [(p, math.log(max(counts[p], 1) / total)) for p in chosen]
    return sorted(pieces, key=lambda ps: (-ps[1], ps[0]))


def trocr_tokenizer():
    """An XLM-R-style tokenizer as `microsoft/trocr-small-printed` has (`XLMRobertaTokenizer`:
    a SentencePiece unigram model, Metaspace `▁` pre-tokenizer and decoder, fairseq's special
    ids <s>=0 <pad>=1 </s>=2 <unk>=3, <mask> last) over [`trocr_unigram_pieces`], and the same
    vocabulary as a `sentencepiece.bpe.model` protobuf (pieces <unk>, <s>, </s> first, as
    SentencePiece and fairseq lay them out)."""
    from transformers import XLMRobertaTokenizer

    pieces = trocr_unigram_pieces()
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + pieces + [("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizer(vocab=vocab)
    spm = sentencepiece_model([("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]
                              + [(p, s, 1) for p, s in pieces])
    return tokenizer, spm


def sentencepiece_model(pieces):
    """A SentencePiece `ModelProto` with only its `pieces` (field 1: piece = 1, score = 2,
    type = 3), the part a decoder reads; `trainer_spec.model_type` = UNIGRAM."""
    import struct

    def varint(n):
        out = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(number, wire, payload):
        key = varint(number << 3 | wire)
        if wire == 2:
            return key + varint(len(payload)) + payload
        return key + payload

    out = bytearray()
    for piece, score, kind in pieces:
        body = (field(1, 2, piece.encode("utf-8")) + field(2, 5, struct.pack("<f", score))
                + field(3, 0, varint(kind)))
        out += field(1, 2, body)
    out += field(2, 2, field(3, 0, varint(1)))  # trainer_spec { model_type: UNIGRAM }
    return bytes(out)


def make_trocr_crops(out):
    """Lossless line crops of the OCR fixtures."""
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    for name, source, box in TROCR_CROPS:
        im = Image.open(ROOT / "fixtures" / "ocr" / source).convert("RGB").crop(box)
        if name == "word.png":
            # A small word: upscaled on both axes by the processor.
            im = im.resize((48, 22), Image.LANCZOS)
        im.save(out / name, optimize=True)
        images[name] = Image.open(out / name).convert("RGB")
    return images


def make_trocr():
    from transformers import (DeiTConfig, TrOCRConfig, VisionEncoderDecoderConfig,
                              VisionEncoderDecoderModel, ViTConfig)
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED + 2)
    model_dir = TROCR_OUT / "tiny-trocr"
    model_dir.mkdir(parents=True, exist_ok=True)

    tokenizer, spm = trocr_tokenizer()
    tokenizer.save_pretrained(model_dir)
    for extra in ["special_tokens_map.json", "chat_template.jinja", "sentencepiece.bpe.model"]:
        (model_dir / extra).unlink(missing_ok=True)
    (TROCR_OUT / "sentencepiece.bpe.model").write_bytes(spm)
    bos, pad, eos = tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id
    assert (bos, pad, eos) == (0, 1, 2)

    # microsoft/trocr-small-printed's structure at toy size: a DeiT encoder (class and
    # distillation tokens, qkv biases, GELU, eps 1e-12) and the TrOCR decoder (ReLU, learned
    # positions with offset 2, layernorm_embedding, scale_embedding, untied output projection).
    encoder = DeiTConfig(
        hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE, image_size=TROCR_IMAGE_SIZE, patch_size=TROCR_PATCH,
        qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-12,
    )
    decoder = TrOCRConfig(
        vocab_size=len(tokenizer) + TROCR_EXTRA_IDS, d_model=HIDDEN, decoder_layers=LAYERS,
        decoder_attention_heads=HEADS, decoder_ffn_dim=INTERMEDIATE, activation_function="relu",
        max_position_embeddings=64, scale_embedding=True, use_learned_position_embeddings=True,
        layernorm_embedding=True, tie_word_embeddings=False, cross_attention_hidden_size=HIDDEN,
        is_decoder=True, add_cross_attention=True, pad_token_id=pad, bos_token_id=bos,
        eos_token_id=eos, decoder_start_token_id=eos,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = eos
    config.pad_token_id = pad
    config.eos_token_id = eos
    model = VisionEncoderDecoderModel(config=config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        perturb(model, generator)
        # A sharper output layer (confident tokens, as a trained model's), and an </s> row
        # along the last layer norm's bias so that some greedy decodes end early.
        head = model.decoder.output_projection.weight
        head.mul_(TROCR_HEAD_SCALE)
        last_norm = model.decoder.model.decoder.layers[-1].final_layer_norm.bias
        head[eos] = last_norm / last_norm.norm() * TROCR_EOS_GAIN
    model.save_pretrained(model_dir, safe_serialization=True)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["imgd_model_id"] = "tiny-trocr"
    cfg["imgd_model_version"] = "fixture-1"
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (model_dir / "generation_config.json").unlink(missing_ok=True)

    processor = ViTImageProcessorPil(size={"height": TROCR_IMAGE_SIZE, "width": TROCR_IMAGE_SIZE})
    processor.save_pretrained(model_dir)

    # The other released TrOCR choices, smaller still: a ViT encoder (class token only, no qkv
    # biases; trocr-base/-large), GELU, sinusoidal positions, no layernorm_embedding, no
    # embedding scale, the output projection tied to the token embeddings (trocr-large-printed
    # has the sinusoidal positions; trocr-base the tied projection).
    vit_dir = TROCR_OUT / "tiny-trocr-vit"
    vit_dir.mkdir(parents=True, exist_ok=True)
    vit_config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        ViTConfig(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            image_size=TROCR_IMAGE_SIZE, patch_size=TROCR_PATCH, qkv_bias=False, hidden_act="gelu",
        ),
        TrOCRConfig(
            vocab_size=len(tokenizer) + TROCR_EXTRA_IDS, d_model=16, decoder_layers=1,
            decoder_attention_heads=2, decoder_ffn_dim=32, activation_function="gelu",
            max_position_embeddings=64, scale_embedding=False,
            use_learned_position_embeddings=False, layernorm_embedding=False,
            tie_word_embeddings=True, cross_attention_hidden_size=16, is_decoder=True,
            add_cross_attention=True, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos,
            decoder_start_token_id=eos,
        ),
    )
    vit_model = VisionEncoderDecoderModel(config=vit_config).eval()
    with torch.no_grad():
        for name, param in vit_model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        perturb(vit_model, generator)
    assert vit_model.decoder.output_projection.weight is vit_model.decoder.model.decoder.embed_tokens.weight
    vit_model.save_pretrained(vit_dir, safe_serialization=True)
    cfg = json.loads((vit_dir / "config.json").read_text())
    cfg["imgd_model_id"] = "tiny-trocr-vit"
    cfg["imgd_model_version"] = "fixture-1"
    (vit_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (vit_dir / "generation_config.json").unlink(missing_ok=True)
    processor.save_pretrained(vit_dir)
    tokenizer.save_pretrained(vit_dir)
    for extra in ["special_tokens_map.json", "chat_template.jinja", "sentencepiece.bpe.model"]:
        (vit_dir / extra).unlink(missing_ok=True)

    images = make_trocr_crops(TROCR_OUT / "images")
    names = sorted(images)
    pixels = processor(images=[images[n] for n in names], return_tensors="pt")["pixel_values"]
    logits_ids = torch.tensor(
        [[eos] + tokenizer(TROCR_LOGITS_TEXT, add_special_tokens=False)["input_ids"]] * len(names)
    )
    with torch.no_grad():
        hidden = model.encoder(pixel_values=pixels).last_hidden_state
        logits = model(pixel_values=pixels, decoder_input_ids=logits_ids).logits
        generated = model.generate(
            pixel_values=pixels, max_new_tokens=TROCR_MAX_NEW_TOKENS, do_sample=False,
            num_beams=1, decoder_start_token_id=eos, eos_token_id=eos, pad_token_id=pad,
            output_scores=True, return_dict_in_generate=True,
        )
        vit_hidden = vit_model.encoder(pixel_values=pixels).last_hidden_state
        vit_logits = vit_model(pixel_values=pixels, decoder_input_ids=logits_ids).logits
        vit_generated = vit_model.generate(
            pixel_values=pixels, max_new_tokens=TROCR_MAX_NEW_TOKENS, do_sample=False,
            num_beams=1, decoder_start_token_id=eos, eos_token_id=eos, pad_token_id=pad,
        )
    rows, probs = [], []
    for i, row in enumerate(generated.sequences.tolist()):
        end = row.index(eos, 1) + 1 if eos in row[1:] else len(row)
        rows.append(row[:end])
        # The probability of each generated token (softmax of that step's logits).
        probs.append([
            float(torch.softmax(generated.scores[step][i], dim=-1)[row[step + 1]])
            for step in range(end - 1)
        ])
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    vit_rows = []
    for row in vit_generated.tolist():
        end = row.index(eos, 1) + 1 if eos in row[1:] else len(row)
        vit_rows.append(row[:end])
    print("vit greedy ids:", vit_rows)
    print("greedy ids:", rows)
    print("texts:", texts)
    print("probs:", [[round(p, 3) for p in r] for r in probs])

    tensors = {
        "encoder_hidden": hidden.contiguous(),
        "logits_ids": logits_ids.to(torch.int64).contiguous(),
        "logits": logits.contiguous(),
        "vit.encoder_hidden": vit_hidden.contiguous(),
        "vit.logits": vit_logits.contiguous(),
    }
    for i, name in enumerate(names):
        tensors[f"pixels.{name}"] = pixels[i].contiguous()
    save_file(tensors, str(TROCR_OUT / "reference.safetensors"))
    (TROCR_OUT / "reference.json").write_text(json.dumps({
        "images": names,
        "max_new_tokens": TROCR_MAX_NEW_TOKENS,
        "greedy_ids": rows,
        "greedy_token_probs": probs,
        "greedy_texts": texts,
        "vit_greedy_ids": vit_rows,
        "vit_greedy_texts": tokenizer.batch_decode(vit_rows, skip_special_tokens=True),
        "logits_text": TROCR_LOGITS_TEXT,
        "token_ids": {"bos": bos, "pad": pad, "eos": eos, "decoder_start": eos},
        "tokenizer_size": len(tokenizer),
        "made_with": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "pillow": Image.__version__,
            "image_processor": "ViTImageProcessorPil",
        },
    }, indent=2, ensure_ascii=False) + "\n")

    total = sum(p.stat().st_size for p in TROCR_OUT.rglob("*") if p.is_file())
    print(f"fixtures/trocr: {total / 1e6:.2f} MB")


def make_trocr_full_size(out):
    """microsoft/trocr-small-printed's architecture at its real size (DeiT-small encoder on
    384-px crops, 6-layer decoder of width 256, 64 044 tokens) with random weights, into `out`
    (about 250 MB, not committed): what scripts/bench-trocr.sh times. The tokenizer is the
    fixture's small one: the benchmark times token ids, not text."""
    from transformers import (DeiTConfig, TrOCRConfig, VisionEncoderDecoderConfig,
                              VisionEncoderDecoderModel)
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    torch.manual_seed(SEED)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer, _ = trocr_tokenizer()
    tokenizer.save_pretrained(out)
    for extra in ["special_tokens_map.json", "chat_template.jinja", "sentencepiece.bpe.model"]:
        (out / extra).unlink(missing_ok=True)
    bos, pad, eos = tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id
    encoder = DeiTConfig(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
        image_size=384, patch_size=16, qkv_bias=True, hidden_act="gelu", layer_norm_eps=1e-12,
    )
    decoder = TrOCRConfig(
        vocab_size=64044, d_model=256, decoder_layers=6, decoder_attention_heads=8,
        decoder_ffn_dim=1024, activation_function="relu", max_position_embeddings=512,
        scale_embedding=True, use_learned_position_embeddings=True, layernorm_embedding=True,
        tie_word_embeddings=False, cross_attention_hidden_size=384, is_decoder=True,
        add_cross_attention=True, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos,
        decoder_start_token_id=eos,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = eos
    config.pad_token_id = pad
    config.eos_token_id = eos
    model = VisionEncoderDecoderModel(config=config).eval()
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").unlink(missing_ok=True)
    ViTImageProcessorPil(size={"height": 384, "width": 384}).save_pretrained(out)
    print(f"wrote {out}: {sum(p.numel() for p in model.parameters()):,} parameters")


# --- SigLIP 2 --------------------------------------------------------------------------------

SIGLIP_OUT = ROOT / "fixtures" / "siglip"
SIGLIP_IMAGE_SIZE = 64
SIGLIP_PATCH = 16
SIGLIP_TEXT_LEN = 64
SIGLIP_MERGES = 400
# Queries in several scripts: Latin with accents, German, Japanese, Arabic, Greek, Cyrillic,
# emoji (byte fallback), and one longer than the 64 tokens the text tower takes.
SIGLIP_TEXTS = [
    "a photo of a dog on the beach",
    "ein Hund am Strand, Größe straße",
    "浜辺の犬の写真",
    "صورة كلب على الشاطئ",
    "φωτογραφία ενός σκύλου",
    "фотография собаки на пляже",
    "café résumé naïve 🐶",
    "",
    "the quick brown fox jumps over the lazy dog " * 10,
]
SIGLIP_CORPUS = CORPUS + """
ein Hund am Strand ein Foto von einer Katze im Garten Straße Größe schön
浜辺の犬の写真 猫の写真 山と海と空 東京の夜景
صورة كلب على الشاطئ صورة قطة في الحديقة
φωτογραφία ενός σκύλου στην παραλία
фотография собаки на пляже фотография кошки
""" * 2


def gemma_tokenizer():
    """A tokenizer with Gemma's structure (what SigLIP 2 uses): spaces replaced by `▁` in the
    normaliser, no pre-tokeniser, BPE with byte fallback over `<0x00>`…`<0xFF>` and fused
    unknowns, <pad>=0 <eos>=1 <bos>=2 <unk>=3, `<eos>` appended, padding on the right (the
    text tower pools the last of its 64 positions); the merges are learnt here from a small
    multilingual corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import GemmaTokenizerFast

    learner = Tokenizer(models.BPE(unk_token="<unk>"))
    learner.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=SIGLIP_MERGES + 300, show_progress=False,
                                  special_tokens=[])
    lines = [line for line in SIGLIP_CORPUS.split("\n") if line.strip()]
    learner.train_from_iterator(lines, trainer)
    learnt = json.loads(learner.to_str())["model"]
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    vocab = {token: i for i, token in enumerate(specials + byte_tokens)}
    for token in sorted(learnt["vocab"], key=learnt["vocab"].get):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learnt["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True,
                               fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    tokenizer = GemmaTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", add_bos_token=False,
                                   add_eos_token=True, padding_side="right")
    return tokenizer


def make_siglip():
    """A tiny random-weight SigLIP 2 (fixed resolution: `SiglipModel`, as `google/siglip2-*`
    checkpoints are saved) with a Gemma-structured tokenizer, and the reference's outputs."""
    from transformers import SiglipConfig, SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED + 3)
    model_dir = SIGLIP_OUT / "tiny-siglip2"
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = gemma_tokenizer()
    tokenizer.save_pretrained(model_dir)
    for extra in ["special_tokens_map.json", "chat_template.jinja"]:
        (model_dir / extra).unlink(missing_ok=True)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    assert (pad, eos) == (0, 1)

    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            max_position_embeddings=SIGLIP_TEXT_LEN, pad_token_id=pad, eos_token_id=eos,
            bos_token_id=2, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
            projection_size=HIDDEN,
        ),
        vision_config=dict(
            hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, image_size=SIGLIP_IMAGE_SIZE, patch_size=SIGLIP_PATCH,
            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
        ),
    )
    model = SiglipModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        perturb(model, generator)
    model.save_pretrained(model_dir, safe_serialization=True)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["imgd_model_id"] = "tiny-siglip2"
    cfg["imgd_model_version"] = "fixture-1"
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (model_dir / "generation_config.json").unlink(missing_ok=True)

    # google/siglip2-base-patch16-224's processor: a square resize (PIL bilinear), rescale,
    # mean and std 0.5.
    processor = SiglipImageProcessorPil(
        size={"height": SIGLIP_IMAGE_SIZE, "width": SIGLIP_IMAGE_SIZE}, resample=2,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor.save_pretrained(model_dir)

    images = make_images(ROOT / "fixtures" / "photos", SIGLIP_OUT / "images")
    names = sorted(images)
    pixels = processor(images=[images[n] for n in names], return_tensors="pt")["pixel_values"]
    encoded = tokenizer(SIGLIP_TEXTS, padding="max_length", max_length=SIGLIP_TEXT_LEN,
                        truncation=True, return_tensors="pt")
    ids = encoded["input_ids"]

    def features(output):
        return output if torch.is_tensor(output) else output.pooler_output

    with torch.no_grad():
        image_features = features(model.get_image_features(pixel_values=pixels))
        text_features = features(model.get_text_features(input_ids=ids))
    tensors = {f"pixels.{n}": pixels[i].contiguous() for i, n in enumerate(names)}
    tensors["image_features"] = image_features.contiguous()
    tensors["image_embeds"] = normalized(image_features).contiguous()
    tensors["text_ids"] = ids.to(torch.int64).contiguous()
    tensors["text_features"] = text_features.contiguous()
    tensors["text_embeds"] = normalized(text_features).contiguous()
    save_file(tensors, str(SIGLIP_OUT / "reference.safetensors"))
    (SIGLIP_OUT / "reference.json").write_text(json.dumps({
        "images": names,
        "texts": SIGLIP_TEXTS,
        "text_len": SIGLIP_TEXT_LEN,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "Pillow": Image.__version__},
    }, indent=2, ensure_ascii=False) + "\n")


SIGLIP1_TEXTS = SIGLIP_TEXTS + [
    "A Dog, on the BEACH!",
    "  spaces   and\ttabs\n",
    "don't stop: #1 (best) photo?",
]


def siglip_spm():
    """A SentencePiece unigram model as SigLIP's `spiece.model` is laid out (T5's ids: <pad> 0,
    </s> 1, <unk> 2; NFKC normalisation), trained here on the canonicalised multilingual
    corpus (lower case, no ASCII punctuation, as `SiglipTokenizer` feeds it)."""
    import io
    import string

    import sentencepiece as spm

    def canonical(line):
        line = line.lower().translate(str.maketrans("", "", string.punctuation))
        return " ".join(line.split())

    lines = [canonical(line) for line in SIGLIP_CORPUS.split("\n") if line.strip()]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=360,
        model_type="unigram", character_coverage=1.0, normalization_rule_name="nmt_nfkc",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, seed_sentencepiece_size=10000,
        hard_vocab_limit=False,
    )
    return model.getvalue()


def make_siglip_v1():
    """A tiny random-weight SigLIP (v1: `google/siglip-base-patch16-224`'s layout) with its
    SentencePiece tokenizer (`SiglipTokenizer`: lower case, ASCII punctuation removed, `</s>`
    appended and used as padding), and the reference's outputs."""
    from transformers import SiglipConfig, SiglipModel, SiglipTokenizer
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED + 4)
    out = SIGLIP_OUT / "v1"
    model_dir = out / "tiny-siglip"
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "spiece.model").write_bytes(siglip_spm())
    tokenizer = SiglipTokenizer(vocab_file=str(model_dir / "spiece.model"))
    tokenizer.save_pretrained(model_dir)
    for extra in ["special_tokens_map.json", "chat_template.jinja", "added_tokens.json"]:
        (model_dir / extra).unlink(missing_ok=True)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    assert (pad, eos) == (1, 1), (pad, eos)

    config = SiglipConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
            num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            max_position_embeddings=SIGLIP_TEXT_LEN, pad_token_id=pad, eos_token_id=eos,
            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, projection_size=HIDDEN,
        ),
        vision_config=dict(
            hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
            num_attention_heads=HEADS, image_size=SIGLIP_IMAGE_SIZE, patch_size=SIGLIP_PATCH,
            hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
        ),
    )
    model = SiglipModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        perturb(model, generator)
    model.save_pretrained(model_dir, safe_serialization=True)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["imgd_model_id"] = "tiny-siglip"
    cfg["imgd_model_version"] = "fixture-1"
    (model_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (model_dir / "generation_config.json").unlink(missing_ok=True)
    # google/siglip-base-patch16-224's processor: a square resize (PIL bicubic), mean and std 0.5.
    processor = SiglipImageProcessorPil(
        size={"height": SIGLIP_IMAGE_SIZE, "width": SIGLIP_IMAGE_SIZE}, resample=3,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    processor.save_pretrained(model_dir)

    images = make_images(ROOT / "fixtures" / "photos", SIGLIP_OUT / "images")
    names = sorted(images)
    pixels = processor(images=[images[n] for n in names], return_tensors="pt")["pixel_values"]
    ids = tokenizer(SIGLIP1_TEXTS, padding="max_length", max_length=SIGLIP_TEXT_LEN,
                    truncation=True, return_tensors="pt")["input_ids"]

    def features(output):
        return output if torch.is_tensor(output) else output.pooler_output

    with torch.no_grad():
        image_features = features(model.get_image_features(pixel_values=pixels))
        text_features = features(model.get_text_features(input_ids=ids))
    tensors = {f"pixels.{n}": pixels[i].contiguous() for i, n in enumerate(names)}
    tensors["image_embeds"] = normalized(image_features).contiguous()
    tensors["text_ids"] = ids.to(torch.int64).contiguous()
    tensors["text_embeds"] = normalized(text_features).contiguous()
    save_file(tensors, str(out / "reference.safetensors"))
    (out / "reference.json").write_text(json.dumps({
        "images": names,
        "texts": SIGLIP1_TEXTS,
        "text_len": SIGLIP_TEXT_LEN,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "Pillow": Image.__version__},
    }, indent=2, ensure_ascii=False) + "\n")


class ClipImageTower(torch.nn.Module):
    """A `CLIPModel`'s image tower and projection: pixels in, the (unnormalised) vector out."""

    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values):
        pooled = self.clip.vision_model(pixel_values=pixel_values).pooler_output
        return self.clip.visual_projection(pooled)


def export_clip_image_tower(model, path, pixels):
    """Exports `model`'s image tower to `path` as Optimum lays it out (input `pixel_values`,
    output `image_embeds`, the batch dynamic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        ClipImageTower(model), (pixels,), str(path),
        input_names=["pixel_values"], output_names=["image_embeds"],
        dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
        opset_version=17, dynamo=False,
    )


def make_clip_onnx():
    """`fixtures/clip/tiny-clip-vision.onnx`: the tiny CLIP's image tower with its projection
    exported for ONNX Runtime as Optimum lays it out (input `pixel_values`, output
    `image_embeds`, the batch dynamic), checked against PyTorch on the fixture's pixels. Kept
    beside the folder, not in it: a test copies it in as `onnx/vision_model.onnx` where it wants
    the embedding module on ONNX Runtime."""
    import numpy as np
    import onnxruntime
    from safetensors.torch import load_file

    model = CLIPModel.from_pretrained(OUT / "tiny-clip").eval()
    path = OUT / "tiny-clip-vision.onnx"
    pixels = torch.stack([v for k, v in sorted(load_file(str(OUT / "reference.safetensors")).items())
                          if k.startswith("pixels.")])
    export_clip_image_tower(model, path, pixels)
    with torch.no_grad():
        want = ClipImageTower(model)(pixels).numpy()
    got = onnxruntime.InferenceSession(str(path)).run(None, {"pixel_values": pixels.numpy()})[0]
    assert np.abs(got - want).max() < 1e-5, np.abs(got - want).max()
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")


# --- Real-size random-weight models for the all-modules benchmark ------------------------------

BENCH_AESTHETIC_WIDTHS = [768, 1024, 128, 64, 16, 1]
BENCH_CLIPS = {
    # OpenAI CLIP's shapes: the embedding module's ViT-B/32 and the aesthetic module's ViT-L/14.
    "clip-vit-b32": (
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
             patch_size=32, image_size=224),
        dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
        512,
    ),
    "clip-vit-l14": (
        dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
             num_attention_heads=16, patch_size=14, image_size=224),
        dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        768,
    ),
}


def mark_random(folder, model_id):
    """Adds imgd's model id and version to a saved `config.json`."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg["imgd_model_id"] = model_id
    cfg["imgd_model_version"] = "random-weights"
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def make_bench_models(out, names=None):
    """The models of every local module but PP-OCR, MTCNN (the registry's) and GroundingDINO
    (`make-objects-fixture.py --full-size`) at their real size with random weights, in the
    folder layout `[models] dir` expects, for `scripts/bench-all-modules.sh`: CLIP ViT-B/32
    (`clip-vit-b32`), CLIP ViT-L/14 (`clip-vit-l14`), both with their image tower's ONNX export
    as `imgd models fetch` brings it, with a random LAION aesthetic MLP over its
    768-d vectors (`laion-aesthetic/…l14-linearMSE.pth`), and BLIP-base captioning
    (`blip-base-caption`: 384-px ViT-B/16, BERT-base decoder, the fixture's WordPiece tokenizer
    padded to BERT's 30 522 ids with [DEC] and [ENC] after, as the real one lays them out).
    Tokenizers and processors come from the fixtures; folders already written are kept. `names`
    (folder names, e.g. `["clip-vit-b32"]`) writes only those."""
    import shutil

    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration, CLIPConfig,
                              CLIPModel)

    torch.manual_seed(SEED)
    out.mkdir(parents=True, exist_ok=True)
    wanted = lambda name: names is None or name in names  # noqa: E731
    for name, (vision, text, projection) in BENCH_CLIPS.items():
        if not wanted(name):
            continue
        folder = out / name
        if not (folder / "model.safetensors").exists():
            config = CLIPConfig(
                vision_config=dict(vision, hidden_act="quick_gelu"),
                text_config=dict(text, hidden_act="quick_gelu"),
                projection_dim=projection,
            )
            CLIPModel(config).eval().save_pretrained(folder, safe_serialization=True)
            mark_random(folder, f"{name}-random")
            for extra in ["preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"]:
                shutil.copy(OUT / "tiny-clip" / extra, folder / extra)
            print(f"wrote {folder}")
        # The image tower's ONNX export, as `imgd models fetch` lays it out: the CPU runs it.
        export = folder / "onnx" / "vision_model.onnx"
        if not export.exists():
            model = CLIPModel.from_pretrained(folder).eval()
            size = vision["image_size"]
            export_clip_image_tower(model, export, torch.randn(1, 3, size, size))
            print(f"wrote {export}")

    mlp_path = out / "laion-aesthetic" / "sac+logos+ava1-l14-linearMSE.pth"
    if wanted("laion-aesthetic") and not mlp_path.exists():
        mlp_path.parent.mkdir(parents=True, exist_ok=True)
        mlp = AestheticMLP(BENCH_AESTHETIC_WIDTHS).eval()
        torch.save({k: v.contiguous() for k, v in mlp.state_dict().items()}, mlp_path)
        print(f"wrote {mlp_path}")

    folder = out / "blip-base-caption"
    if wanted("blip-base-caption") and not (folder / "model.safetensors").exists():
        vocab = blip_vocab()
        for i in range(30522 - len(vocab)):
            vocab[f"[unused{i}]"] = len(vocab)
        tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
        tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
        bos = tokenizer.convert_tokens_to_ids("[DEC]")
        sep, pad = tokenizer.sep_token_id, tokenizer.pad_token_id
        assert (bos, len(tokenizer)) == (30522, 30524), (bos, len(tokenizer))
        # BlipConfig's defaults are BLIP-base's shapes.
        config = BlipConfig(text_config=dict(
            bos_token_id=bos, eos_token_id=sep, sep_token_id=sep, pad_token_id=pad))
        BlipForConditionalGeneration(config).eval().save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        for extra in ["vocab.txt", "special_tokens_map.json", "chat_template.jinja",
                      "generation_config.json"]:
            (folder / extra).unlink(missing_ok=True)
        processor = json.loads((BLIP_OUT / "tiny-blip" / "preprocessor_config.json").read_text())
        processor["size"] = {"height": 384, "width": 384}
        (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
        mark_random(folder, "blip-base-caption-random")
        print(f"wrote {folder}")


if __name__ == "__main__":
    # `make-fixtures.py [clip|blip|blip2|blip2-t5|trocr|siglip|all]` (default: all; blip2 makes both);
    # `make-fixtures.py trocr-full DIR` for the TrOCR benchmark's model, `bench-models DIR
    # [NAME ...]` for the all-modules and CLIP benchmarks'.
    if len(sys.argv) == 3 and sys.argv[1] == "trocr-full":
        make_trocr_full_size(Path(sys.argv[2]).resolve())
        sys.exit()
    if len(sys.argv) >= 3 and sys.argv[1] == "bench-models":
        make_bench_models(Path(sys.argv[2]).resolve(), sys.argv[3:] or None)
        sys.exit()
    target = sys.argv[1] if len(sys.argv) > 1 else "all"
    if target not in ("clip", "clip-onnx", "blip", "blip2", "blip2-t5", "trocr", "siglip", "all"):
        sys.exit(f"usage: {sys.argv[0]} [clip|clip-onnx|blip|blip2|blip2-t5|trocr|siglip|all] | trocr-full DIR"
                 " | bench-models DIR [NAME ...]")
    if target in ("clip", "all"):
        main()
    if target in ("clip", "clip-onnx", "all"):
        make_clip_onnx()
    if target in ("blip", "all"):
        make_blip()
    if target in ("blip2", "all"):
        make_blip2()
    if target in ("blip2", "blip2-t5", "all"):
        make_blip2_t5()
    if target in ("trocr", "all"):
        make_trocr()
    if target in ("siglip", "all"):
        make_siglip()
        make_siglip_v1()
