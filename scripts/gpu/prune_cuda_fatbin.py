#!/usr/bin/env python3
"""Shrinks a CUDA shared library (ONNX Runtime's libonnxruntime_providers_cuda.so) for the
64 MiB GPU bundle by editing its fat binaries in place. Bench use only: users install the
whole onnxruntime-gpu wheel.

    prune_cuda_fatbin.py SRC DST [--arch 90] [--drop REGEX]

The library's `.nv_fatbin` section is a run of fatbin blobs (one per CUDA compilation unit).
Each blob is a 16-byte header (magic 0xBA55ED50, version, header size, payload size) and
entries: one cubin (ELF) or PTX per GPU architecture, each with a 64-byte header whose word at
+28 is the SM number (75, 80, 86, 89, 90, 120 in onnxruntime-gpu 1.31.1). In each blob this
script:

- keeps only the entries for `--arch` (compacted to the blob's start, the blob header's size
  set to what is kept, the rest zeroed, so file offsets and the runtime's pointers into the
  section stay valid and xz stores the zeros for almost nothing);
- empties the blob (size 0) when its kept entries name a kernel matching `--drop` (default:
  the LLM kernels — flash and XQA attention, MoE and int4/int8 weight-only GEMMs, CUTLASS,
  beam search — that image models never launch);
- leaves a blob with no entry for `--arch` as it is (the wheel has a few sm_120-only blobs).

A blob without an image for the device is what the unmodified library already holds for its
sm_120-only kernels: the CUDA runtime loads modules lazily and fails only if such a kernel is
launched ("no kernel image is available for execution on the device"), so a pruned kernel that
a model needs shows up as that error, never as a wrong result.

Cubin payloads are zstd-compressed (entry flag 0x8000); `zstd` must be on PATH to read kernel
names for `--drop`. Python standard library otherwise.
"""

import argparse
import re
import struct
import subprocess
import sys

FATBIN_MAGIC = 0xBA55ED50
DEFAULT_DROP = (
    r"cutlass|flash|[Mm]oe|fpA_intB|FpAIntB|deep_gemm|AttentionKernel|kernel_mha|BeamSearch"
    r"|gated_delta_net|paged|RoPE|Rotary|MatMulNBits|MatMulFloat|Dequantize\dBits|dequantizeThread"
    r"|3llm|sparse_mixer|spec_dec|Longformer|kgemm_4bit|GatherBlockQuantized|KeyCache|QOrder"
    r"|DecoderMasked|masked_multihead"
)


def section(data, name):
    """(offset, size) of the named ELF64 section."""
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab = headers[shstrndx][4]
    for h in headers:
        start = strtab + h[0]
        if data[start : data.index(b"\0", start)].decode() == name:
            return h[4], h[5]
    raise SystemExit(f"no {name} section")


def blobs(data, off, size):
    """Yields (blob offset, header size, payload size, entries); an entry is
    (offset, header size, payload size, arch, flags)."""
    p, end = off, off + size
    while p + 16 <= end:
        magic, _version, hsz, fsz = struct.unpack_from("<IHHQ", data, p)
        if magic != FATBIN_MAGIC:
            p += 8  # blobs are 8-byte aligned; padding between them is zero
            continue
        entries, q = [], p + hsz
        while q < p + hsz + fsz:
            _kind, _ver, ehsz, psz = struct.unpack_from("<HHIQ", data, q)
            (arch,) = struct.unpack_from("<I", data, q + 28)
            (flags,) = struct.unpack_from("<Q", data, q + 40)
            entries.append((q, ehsz, psz, arch, flags))
            q += ehsz + psz
        yield p, hsz, fsz, entries
        p += hsz + fsz


def kernel_names(data, entry):
    """The cubin's symbol text (zstd-decompressed when the entry is compressed)."""
    q, ehsz, psz, _arch, flags = entry
    payload = data[q + ehsz : q + ehsz + psz]
    if flags & 0x8000:
        (csz,) = struct.unpack_from("<I", data, q + 16)
        payload = subprocess.run(
            ["zstd", "-dcq"], input=payload[:csz], capture_output=True, check=True
        ).stdout
    return b"\n".join(re.findall(rb"_Z[\w.$]+", payload)).decode("ascii", "replace")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--drop", default=DEFAULT_DROP, help="regex on mangled kernel names; '' keeps all")
    args = ap.parse_args()
    drop = re.compile(args.drop) if args.drop else None

    data = open(args.src, "rb").read()
    buf = bytearray(data)
    off, size = section(data, ".nv_fatbin")
    kept = dropped_bytes = other_arch = 0
    dropped_blobs = total = 0
    for p, hsz, fsz, entries in blobs(data, off, size):
        total += 1
        mine = [e for e in entries if e[3] == args.arch]
        if not mine:
            continue
        if drop and any(drop.search(kernel_names(data, e)) for e in mine):
            mine = []
            dropped_blobs += 1
        out = b"".join(data[q : q + ehsz + psz] for (q, ehsz, psz, _a, _f) in mine)
        buf[p + hsz : p + hsz + fsz] = out + bytes(fsz - len(out))
        struct.pack_into("<Q", buf, p + 8, len(out))
        kept += len(out)
        mine_bytes = sum(e[1] + e[2] for e in entries if e[3] == args.arch)
        dropped_bytes += mine_bytes - len(out)
        other_arch += fsz - mine_bytes
    with open(args.dst, "wb") as f:
        f.write(buf)
    mib = 1 << 20
    print(
        f"{args.src}: .nv_fatbin {size / mib:.1f} MiB in {total} blobs; kept sm_{args.arch} "
        f"{kept / mib:.1f} MiB, zeroed {other_arch / mib:.1f} MiB of other architectures and "
        f"{dropped_bytes / mib:.1f} MiB in {dropped_blobs} blobs of dropped kernels",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
