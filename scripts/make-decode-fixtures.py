"""Derived imgd-decode fixtures (called by make-decode-fixtures.sh): python3 make-decode-fixtures.py OUTDIR"""
import os
import random
import struct
import sys
import zlib

from PIL import Image

out = sys.argv[1]
photos = os.path.join(os.path.dirname(__file__), "..", "fixtures", "photos")
flower2 = Image.open(os.path.join(photos, "flower2.jpg"))
flower = Image.open(os.path.join(photos, "flower.jpg"))

flower2.save(os.path.join(out, "flower2_progressive.jpg"), quality=85, progressive=True)
flower2.save(os.path.join(out, "flower2_restart.jpg"), quality=85, restart_marker_rows=1)
flower2.quantize(64).save(os.path.join(out, "flower2_palette.png"))


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


# 16-bit RGB PNG (Pillow writes no RGB48): each 8-bit sample v becomes v*257.
w, h = flower2.size
rgb = flower2.convert("RGB").tobytes()
rows = b"".join(
    b"\0" + b"".join(struct.pack(">H", v * 257) for v in rgb[y * w * 3:(y + 1) * w * 3]) for y in range(h)
)
png16 = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
         + png_chunk(b"IDAT", zlib.compress(rows, 9)) + png_chunk(b"IEND", b""))
open(os.path.join(out, "flower2_16bit.png"), "wb").write(png16)

bad = os.path.join(out, "bad")
jpg = open(os.path.join(photos, "flower.jpg"), "rb").read()
png = open(os.path.join(out, "..", "decode", "hopper.png"), "rb").read()
open(os.path.join(bad, "truncated.jpg"), "wb").write(jpg[: len(jpg) * 6 // 10])
open(os.path.join(bad, "truncated.png"), "wb").write(png[: len(png) // 2])
open(os.path.join(bad, "header_only.jpg"), "wb").write(jpg[:200])
open(os.path.join(bad, "empty.jpg"), "wb").write(b"")
random.seed(1234)
open(os.path.join(bad, "random.jpg"), "wb").write(bytes(random.randrange(256) for _ in range(4096)))
# A PNG named .jpg must still decode (format comes from the magic bytes).
open(os.path.join(out, "png_named.jpg"), "wb").write(png)

# Decompression bombs: valid files whose headers claim 100000x100000 (PNG) / 65000x65000 (JPEG).
ihdr = png[16:29]
big = struct.pack(">II", 100000, 100000) + ihdr[8:]
bomb = png[:8] + png_chunk(b"IHDR", big) + png[33:]
open(os.path.join(bad, "bomb.png"), "wb").write(bomb)
i = jpg.rindex(b"\xff\xc0\x00\x11")  # the main image, not the EXIF thumbnail
bomb = jpg[: i + 5] + struct.pack(">HH", 65000, 65000) + jpg[i + 9:]
open(os.path.join(bad, "bomb.jpg"), "wb").write(bomb)
