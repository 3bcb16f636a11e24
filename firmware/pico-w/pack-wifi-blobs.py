#!/usr/bin/env python3
"""Packs the CYW43439 blobs into the image the Pressline Pico W firmware reads
at flash offset 0x100000 (0x10100000), then flash it once per board:

    ./pack-wifi-blobs.py DIR wifi-blobs.bin      # DIR has 43439A0.bin, 43439A0_clm.bin, nvram_rp2040.bin
    probe-rs download --chip RP2040 --binary-format bin --base-address 0x10100000 wifi-blobs.bin

Layout: b"PLWF", firmware/CLM/NVRAM lengths (u32 little-endian), then the
three blobs from offset 16, each padded with 0xFF to a multiple of 4 bytes.
"""
import struct
import sys
from pathlib import Path

LIMIT = 256 * 1024


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    names = ["43439A0.bin", "43439A0_clm.bin", "nvram_rp2040.bin"]
    try:
        blobs = [(src / n).read_bytes() for n in names]
    except OSError as e:
        print(f"pack-wifi-blobs: {e}", file=sys.stderr)
        return 1
    image = b"PLWF" + struct.pack("<III", *(len(b) for b in blobs))
    for blob in blobs:
        image += blob + b"\xff" * (-len(blob) % 4)
    if len(image) > LIMIT:
        print(f"pack-wifi-blobs: image is {len(image)} bytes, over the {LIMIT}-byte region", file=sys.stderr)
        return 1
    out.write_bytes(image)
    print(f"wrote {out} ({len(image)} bytes); flash it at 0x10100000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
