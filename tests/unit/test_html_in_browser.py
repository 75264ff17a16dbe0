"""The HTML report rendered by a real headless Chromium: the heatmap's colours are on screen.

The screenshot is kept in the test's tmp dir (`report.png`) for a person to look at.
In CI (CI=true) a missing Chromium fails; elsewhere the test skips with the install command.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from stackprobe.report import RENDERERS
from stackprobe.report.html import COLORS
from tests.unit.test_reports import sample

WIDTH, HEIGHT = 1280, 2000


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    message = "chromium is not installed: run scripts/install-services chromium"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def screenshot(html: Path, png: Path, profile: Path) -> None:
    subprocess.run(
        [
            chromium(), "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={png}",
            f"--window-size={WIDTH},{HEIGHT}", html.as_uri(),
        ],
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip


def top_rows(png: Path, rows: int) -> tuple[int, int, list[bytes]]:
    """(width, height, the first `rows` rows as RGB bytes) of an 8-bit RGB/RGBA PNG."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0) and color in (2, 6)
    bpp = 4 if color == 6 else 3
    stride = width * bpp
    raw = zlib.decompressobj().decompress(idat, (stride + 1) * rows)
    out: list[bytes] = []
    prev = bytearray(stride)
    for r in range(rows):
        ftype, line = (
            raw[r * (stride + 1)],
            bytearray(raw[r * (stride + 1) + 1 : (r + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        out.append(bytes(v for i, v in enumerate(line) if bpp == 3 or i % 4 != 3))
        prev = line
    return width, height, out


def has_colour(rows: list[bytes], hex_colour: str, at_least: int = 200) -> bool:
    want = bytes.fromhex(hex_colour.lstrip("#"))
    seen = 0
    for row in rows:
        for i in range(0, len(row), 3):
            if all(abs(row[i + k] - want[k]) <= 3 for k in range(3)):
                seen += 1
    return seen >= at_least


def test_chromium_renders_the_report_with_the_coverage_heatmap(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    html.write_text(RENDERERS["html"](sample(), False), encoding="utf-8")
    png = tmp_path / "report.png"
    screenshot(html, png, tmp_path / "profile")
    assert png.is_file() and png.stat().st_size > 50_000, "screenshot missing or blank"
    width, height, rows = top_rows(png, 420)  # the summary and the heatmap are at the top
    assert (width, height) == (WIDTH, HEIGHT)
    for cell in ("passed", "failed", "error", "skipped"):
        assert has_colour(rows, COLORS[cell][0]), f"no {cell} cell colour on screen"
    # grey appears only in the legend (~900 px) and the heatmap's two not-run cells (> 4000 px)
    assert has_colour(rows, COLORS["not run"][0], at_least=3000), "no heatmap on screen"
