#!/usr/bin/env python3
"""Renders the OCR test images in fixtures/ocr/ with their ground-truth lines.

Each image is a photo-like background (crops of the repository's sample photos, or
synthetic gradients with blurred shapes and sensor-like noise) with 2-5 lines of text in one
of several Debian fonts (DejaVu, Liberation: apt-get install fonts-dejavu-core
fonts-liberation), sizes 20-44 px, dark-on-light and light-on-dark, some with a shadow, the
whole image rotated by up to +-3 degrees, and saved as JPEG at quality 55-85 (compression
noise). The truth goes to fixtures/ocr/truth.json: {"file": ["line", ...]} in reading order.

Deterministic (fixed seed). Needs Pillow: scripts/bench-ocr.sh creates .venv-ocr/ with it, or
`pip install pillow`. Run: python3 scripts/make-ocr-fixtures.py
"""

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "ocr"
PHOTOS = [ROOT / "fixtures" / "photos" / n for n in ("flower.jpg", "flower2.jpg", "hopper.jpg")]
FONT_DIRS = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation")]
FONTS = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansCondensed.ttf",
    "LiberationSans-Regular.ttf",
    "LiberationSans-Bold.ttf",
    "LiberationSerif-Regular.ttf",
    "LiberationSerif-Bold.ttf",
    "LiberationMono-Regular.ttf",
    "LiberationSansNarrow-Regular.ttf",
]
LINES = [
    "Open daily from 9 to 18",
    "Fresh bread and coffee",
    "Summer holidays 2024",
    "Platform 4 to Edinburgh",
    "Please keep the door closed",
    "Grand Canyon National Park",
    "Total amount 42.50 EUR",
    "Meeting at the harbour",
    "No parking on weekdays",
    "Birthday party invitation",
    "Room 305 third floor",
    "Museum of Modern Art",
    "Welcome to the mountains",
    "Exit via the garden",
    "Flight BA 2490 to London",
    "Hot chocolate with cream",
    "Library closes at 8 pm",
    "Saturday 14 July",
    "Keep calm and carry on",
    "Vegetable market",
    "Tickets sold here",
    "Route 66 diner",
    "Happy new year",
    "Bus stop ahead",
    "Lighthouse tours every hour",
    "Private property",
    "Ice cream 3 scoops",
    "Central station",
    "Wildflower garden",
    "Main street bakery",
    "Photo by Anna Berg",
    "Concert tonight at 20:30",
    "Sale 30 percent off",
    "Mind the gap",
    "Harbour view hotel",
    "Clean water for everyone",
    "Old town walking tour",
    "Speed limit 50",
    "Fish and chips",
    "Autumn leaves festival",
    "Gate B12 boarding",
    "Thank you for visiting",
    "Wedding of Sara and Tom",
    "Botanical gardens",
    "Closed on Mondays",
    "Chapter 7 The river",
    "Postcard from Lisbon",
    "Winter sports club",
    "Bicycle repair shop",
    "Apples 2 kg for 5",
]

W, H = 880, 600


def font(name, size):
    for d in FONT_DIRS:
        p = d / name
        if p.exists():
            return ImageFont.truetype(str(p), size)
    raise SystemExit(f"font {name} not found: apt-get install fonts-dejavu-core fonts-liberation")


def photo_background(rng):
    src = Image.open(rng.choice(PHOTOS)).convert("RGB")
    # A random crop at least a third of the photo, scaled to the canvas.
    sw, sh = src.size
    cw = rng.randint(sw // 3, sw)
    ch = max(1, min(sh, int(cw * H / W)))
    x = rng.randint(0, sw - cw)
    y = rng.randint(0, sh - ch)
    img = src.crop((x, y, x + cw, y + ch)).resize((W, H), Image.BICUBIC)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5)))


def synthetic_background(rng):
    a = [rng.randint(0, 255) for _ in range(3)]
    b = [rng.randint(0, 255) for _ in range(3)]
    img = Image.new("RGB", (W, H))
    px = img.load()
    for y in range(H):
        t = y / (H - 1)
        row = tuple(int(a[i] * (1 - t) + b[i] * t) for i in range(3))
        for x in range(W):
            px[x, y] = row
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(4, 10)):
        x0, y0 = rng.randint(-200, W), rng.randint(-200, H)
        r = rng.randint(40, 220)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        draw.ellipse((x0, y0, x0 + r, y0 + r), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(8, 20)))
    noise = Image.effect_noise((W, H), rng.uniform(8, 20)).convert("RGB")
    return Image.blend(img, noise, 0.08)


def luminance(img, box):
    region = img.crop(box).convert("L").resize((16, 4))
    return sum(region.getdata()) / 64


def render(index, rng):
    bg = photo_background(rng) if index % 2 == 0 else synthetic_background(rng)
    draw = ImageDraw.Draw(bg)
    n = rng.randint(2, 5)
    texts = rng.sample(LINES, n)
    size = rng.randint(20, 44)
    fnt = font(rng.choice(FONTS), size)
    gap = int(size * rng.uniform(1.0, 1.6))
    heights = [draw.textbbox((0, 0), t, font=fnt)[3] for t in texts]
    total = sum(heights) + gap * (n - 1)
    y = rng.randint(40, max(41, H - 40 - total))
    truth = []
    for text, h in zip(texts, heights):
        left, top, right, bottom = draw.textbbox((0, 0), text, font=fnt)
        width = right - left
        if width > W - 80:
            continue
        x = rng.randint(40, W - 40 - width)
        lum = luminance(bg, (x, y, x + width, y + h))
        # Dark on light, light on dark; busy or mid-grey backgrounds get a plate or a shadow.
        if 90 < lum < 165:
            if rng.random() < 0.5:
                plate = (255, 255, 255) if rng.random() < 0.5 else (20, 20, 20)
                draw.rectangle((x - 10, y - 6, x + width + 10, y + h + 8), fill=plate)
                lum = 255 if plate[0] > 128 else 0
            else:
                draw.text((x + 2, y + 2), text, font=fnt, fill=(0, 0, 0))
                lum = 0
        if lum >= 128:
            fill = tuple(rng.randint(0, 60) for _ in range(3))
        else:
            fill = tuple(rng.randint(200, 255) for _ in range(3))
        draw.text((x, y), text, font=fnt, fill=fill)
        truth.append(text)
        y += h + gap
    angle = rng.uniform(-3.0, 3.0)
    bg = bg.rotate(angle, resample=Image.BICUBIC, expand=False, fillcolor=bg.getpixel((2, 2)))
    return bg, truth


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20240714)
    truth = {}
    total_bytes = 0
    for i in range(24):
        img, lines = render(i, rng)
        name = f"text_{i:02d}.jpg"
        img.save(OUT / name, "JPEG", quality=rng.randint(55, 85))
        truth[name] = lines
        total_bytes += (OUT / name).stat().st_size
    (OUT / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    print(f"{len(truth)} images, {sum(len(v) for v in truth.values())} lines, {total_bytes} bytes in {OUT}")


if __name__ == "__main__":
    main()
