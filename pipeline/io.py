"""Small file helpers shared by the stages: atomic writes, content hashes, figures.

Every output is written under a temporary name and renamed when complete, so a half-written file never
looks finished.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    tmp.replace(path)


def write_json_atomic(path: Path, data) -> None:
    """Strict JSON (no NaN/Infinity: browsers and other parsers reject them)."""
    write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False))


def save_figure(fig, path: Path, *, dpi: int) -> None:
    """Write a matplotlib figure as PNG atomically (temp name, then rename) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(path.stem + ".part.png")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(path)


def sha256_file(path: Path, *, progress: bool = False) -> str:
    """sha256 of a file, read in 1-MB blocks (with a progress bar for big archives)."""
    from tqdm import tqdm

    h = hashlib.sha256()
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"sha256 {path.name}",
                                      disable=not progress, leave=False) as bar:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def tree_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's relative names and file hashes (a content hash of the tree)."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def tree_listing_sha256(path: Path) -> str:
    """sha256 of a folder's relative file names and sizes: a cheap fingerprint for folders of gigabytes."""
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path)}\0{p.stat().st_size}\n".encode())
    return h.hexdigest()
