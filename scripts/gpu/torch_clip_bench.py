"""CLIP ViT-B/32 image tower in PyTorch fp16, the baseline imgd's candle/CUDA build is compared
against in scripts/gpu-check.sh: eager, and with `--compile` the same model through
`torch.compile` (default mode; compile time is reported, not timed). Random weights (timing
only), same architecture as openai/clip-vit-base-patch32. Prints one JSON line per batch size:
{"engine": "torch-fp16-eager"|"torch-fp16-compile", "batch": B, "images_per_s": X,
"ms_per_batch": Y}.

    python3 scripts/gpu/torch_clip_bench.py 1,8,32,128 [--compile]
"""
import json
import sys
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    compiled = "--compile" in sys.argv[1:]
    batches = [int(b) for b in (args[0] if args else "1,8,32,128").split(",")]
    config = CLIPVisionConfig(
        hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        image_size=224, patch_size=32, projection_dim=512, hidden_act="quick_gelu",
    )
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(config).eval().half().cuda()
    engine = "torch-fp16-eager"
    if compiled:
        model = torch.compile(model)
        engine = "torch-fp16-compile"
    for batch in batches:
        x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.float16)
        with torch.inference_mode():
            warm = time.perf_counter()
            for _ in range(5):
                model(pixel_values=x)
            torch.cuda.synchronize()
            warm_s = time.perf_counter() - warm
            iters = max(5, int(200 / batch))
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                model(pixel_values=x)
            end.record()
            torch.cuda.synchronize()
        ms = start.elapsed_time(end) / iters
        print(json.dumps({"engine": engine, "batch": batch, "images_per_s": batch / (ms / 1000.0),
                          "ms_per_batch": ms, "warm_up_s": round(warm_s, 1)}), flush=True)


if __name__ == "__main__":
    main()
