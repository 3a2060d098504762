"""A folder of class sub-folders of images as a Dataset: decoded in parallel,
held as uint8 while loading, and cached so a second run starts in seconds.

The cache is an .npz of uint8 pixels in <cache dir>/images/ (see data.cache:
$AUTOPILOT_CACHE, else ~/.cache/autopilot), named by a hash of the folder's
path and one of its file list with every file's size and modification time:
adding, removing, renaming or rewriting an image gives a new key, so a stale
cache is never read; writing a folder's new state removes its older ones.
"""
from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from .cache import cache_dir, read_npz, write_npz
from .dataset import DataError, Dataset
from .images import IMAGE_EXTS, MAX_SIDE, choose_size, decode, list_images
from .validate import one_line

# Below this many files, or bytes of files (a few hundred large photos take
# as long as thousands of thumbnails), a process pool's start-up (~0.5 s)
# costs more than it saves, and no progress bar is worth drawing.
PARALLEL_MIN_FILES = 2000
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
CHUNK_FILES = 256  # files per task: large enough to hide inter-process overhead
MAX_WORKERS = 4
# Bump when decoding changes (resizing, colour handling), so old caches are not reused.
CACHE_VERSION = "images-v1"


@dataclass
class FolderPixels:
    """A decoded folder: pixels (N, C, H, W) uint8, C = 1 (all grey) or 3."""

    pixels: np.ndarray
    y: np.ndarray
    classes: list[str]
    skipped: list[str] = field(default_factory=list)
    cache_file: Path | None = None
    from_cache: bool = False


def list_folder(root: Path) -> tuple[list[Path], list[tuple[Path, int]]]:
    """Class folders (sorted names) and every (image file, class id)."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class sub-folders; put each class's images in its own sub-folder, e.g. {root / 'cat'}")
    files: list[tuple[Path, int]] = []
    for ci, d in enumerate(class_dirs):
        found = list_images(d)
        if not found:
            raise DataError(f"empty class folder: {d} (no {'/'.join(IMAGE_EXTS)} files)")
        files += [(p, ci) for p in found]
    return class_dirs, files


def folder_key(root: Path, files: list[tuple[Path, int]], skip_bad: bool) -> tuple[str, int]:
    """Hash of what decoding depends on (relative paths, classes, sizes,
    mtimes), and the files' total size in bytes."""
    h = hashlib.sha256(f"{CACHE_VERSION}\0{MAX_SIDE}\0{skip_bad}\n".encode())
    start = len(str(root / "x")) - 1  # files come from list_images(root / class): cut what root / adds
    total = 0
    for p, ci in files:
        text = str(p)
        st = os.stat(text)
        total += st.st_size
        h.update(f"{text[start:]}\0{ci}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32], total


# ---------------------------------------------------------------- workers
# Module-level functions over plain strings, so a spawned process can run them.

def _read_sizes(paths: list[str]) -> list[tuple[int, int] | str]:
    """(width, height) from each header, or the reason it cannot be read."""
    out: list[tuple[int, int] | str] = []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append(im.size)
        except Exception as e:  # noqa: BLE001 - any failure means "unreadable"
            out.append(one_line(e) or type(e).__name__)
    return out


def _decode_chunk(paths: list[str], h: int, w: int) -> tuple[np.ndarray, bool, dict[int, str]]:
    """(n, 3, h, w) uint8, whether every image is grey, and {position: error}."""
    x = np.zeros((len(paths), 3, h, w), np.uint8)
    all_grey = True
    errors: dict[int, str] = {}
    for i, p in enumerate(paths):
        try:
            im = decode(Path(p), (h, w))
        except Exception as e:  # noqa: BLE001
            errors[i] = one_line(e) or type(e).__name__
            continue
        a = np.asarray(im)
        if a.ndim == 2:
            x[i] = a  # grey: the same plane in all three channels
        else:
            x[i] = a.transpose(2, 0, 1)
            # Once one image has colour the folder is RGB: no need to look further.
            all_grey = all_grey and bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())
    return x, all_grey, errors


def _chunks(items: list, size: int | None = None) -> list[list]:
    size = size or CHUNK_FILES  # read when called, not when defined: tests and benchmarks change it
    return [items[i:i + size] for i in range(0, len(items), size)]


def is_large(n_files: int, n_bytes: int) -> bool:
    """Worth a process pool and a progress bar."""
    return n_files >= PARALLEL_MIN_FILES or n_bytes >= PARALLEL_MIN_BYTES


def _workers(n_files: int, n_bytes: int = 0) -> int:
    import multiprocessing as mp

    if not is_large(n_files, n_bytes) or mp.current_process().daemon:  # a daemon may not have children
        return 1
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def _run(fn: Callable, chunks: list[list], *args, pool: ProcessPoolExecutor | None, progress, task) -> Iterator:
    """fn(chunk, *args) for every chunk, results in order, advancing the bar."""
    if pool is None:
        results = (fn(c, *args) for c in chunks)
    else:
        results = pool.map(fn, chunks, *([a] * len(chunks) for a in args))
    for c, r in zip(chunks, results):
        if progress is not None:
            progress.advance(task, len(c))
        yield r


def _progress(show: bool):
    if not show:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True)


# ----------------------------------------------------------------- loading

def _decode_folder(root: Path, class_dirs: list[Path], files: list[tuple[Path, int]], skip_bad: bool,
                   show_progress: bool, n_bytes: int, parallel: bool = True) -> FolderPixels:
    skipped: list[str] = []

    def bad(p: str, why: str) -> None:
        if not skip_bad:
            raise DataError(f"cannot read image {p}: {why} (pass --skip-bad to skip unreadable images)")
        skipped.append(p)

    paths = [str(p) for p, _ in files]
    n_workers = _workers(len(paths), n_bytes) if parallel else 1
    progress = _progress(show_progress and is_large(len(paths), n_bytes))
    # spawn, not fork: the caller may hold threads (torch, rich) that fork would copy mid-lock.
    pool = None
    if n_workers > 1:
        import multiprocessing as mp

        pool = ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn"))
    try:
        if progress is not None:
            progress.start()
        # Pass 1 reads only headers, to choose one size before decoding everything.
        task = progress.add_task(f"sizes of {len(paths)} images", total=len(paths)) if progress else None
        sizes: list[tuple[int, int] | None] = []
        for chunk, got in zip(_chunks(paths), _run(_read_sizes, _chunks(paths), pool=pool, progress=progress, task=task)):
            for p, s in zip(chunk, got):
                if isinstance(s, str):
                    bad(p, s)
                    s = None
                sizes.append(s)
        readable = [i for i, s in enumerate(sizes) if s is not None]
        if not readable:
            raise DataError(f"{root}: no readable images ({len(skipped)} skipped)")
        h, w = choose_size([sizes[i] for i in readable])

        # Pass 2 decodes at the chosen size (corrupt pixel data shows up only here)
        # straight into one uint8 array: grey (N, 1) until the first colour image,
        # so a grey folder never holds three channels.
        if progress is not None:
            progress.update(task, visible=False)
            task = progress.add_task(f"decoding at {h}x{w}", total=len(readable))
        n = len(readable)
        grey_px: np.ndarray | None = np.zeros((n, 1, h, w), np.uint8)
        colour_px: np.ndarray | None = None
        ok = np.ones(n, bool)
        todo = [paths[i] for i in readable]
        at = 0
        for chunk, (x, all_grey, errors) in zip(_chunks(todo), _run(_decode_chunk, _chunks(todo), h, w, pool=pool,
                                                                 progress=progress, task=task)):
            for i, why in errors.items():  # unreadable rows stay zero (grey) and are dropped below
                bad(chunk[i], why)
                ok[at + i] = False
            if colour_px is None and not all_grey:
                colour_px = np.empty((n, 3, h, w), np.uint8)
                colour_px[:] = grey_px  # earlier rows were grey: repeat the plane
                grey_px = None
            if colour_px is not None:
                colour_px[at:at + len(chunk)] = x
            else:
                grey_px[at:at + len(chunk)] = x[:, :1]
            at += len(chunk)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if progress is not None:
            progress.stop()

    pixels = colour_px if colour_px is not None else grey_px
    labels = np.asarray([files[i][1] for i in readable], dtype=np.int64)
    if not ok.all():
        pixels, labels = pixels[ok], labels[ok]
    counts = np.bincount(labels, minlength=len(class_dirs))
    for d, c in zip(class_dirs, counts):
        if c == 0:
            raise DataError(f"no readable images left in class folder: {d} (all skipped)")
    return FolderPixels(pixels=pixels, y=labels, classes=[d.name for d in class_dirs], skipped=skipped)


def read_image_folder(root: Path, *, skip_bad: bool = False, use_cache: bool = True,
                      show_progress: bool = True) -> FolderPixels:
    """The folder's images as uint8 pixels, from the cache when nothing changed."""
    class_dirs, files = list_folder(root)
    # <folder id>-<content key>: one file per folder is kept, older states are removed.
    folder_id = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    key, n_bytes = folder_key(root, files, skip_bad)
    path = cache_dir() / "images" / f"{folder_id}-{key}.npz"
    if use_cache:
        hit = read_npz(path)
        if hit is not None and _cache_ok(hit, len(class_dirs)):
            return FolderPixels(pixels=hit["pixels"], y=hit["y"].astype(np.int64), classes=[d.name for d in class_dirs],
                                skipped=[str(root / s) for s in hit["skipped"].tolist()], cache_file=path,
                                from_cache=True)
    t0 = time.time()
    try:
        got = _decode_folder(root, class_dirs, files, skip_bad, show_progress, n_bytes)
    except BrokenProcessPool:  # workers could not start (e.g. an interactive main): one process instead
        got = _decode_folder(root, class_dirs, files, skip_bad, show_progress, n_bytes, parallel=False)
    if use_cache:
        rel = np.asarray([Path(s).relative_to(root).as_posix() for s in got.skipped], dtype=str)
        if write_npz(path, {"pixels": got.pixels, "y": got.y, "skipped": rel}):
            got.cache_file = path
            for old in path.parent.glob(f"{folder_id}-*.npz"):  # the folder's earlier states
                if old != path:
                    old.unlink(missing_ok=True)
    if show_progress and is_large(len(files), n_bytes):
        from rich.console import Console

        where = f"; cached in {got.cache_file}" if got.cache_file else ""
        Console(stderr=True).print(f"read {len(got.y)} images from {root} in {time.time() - t0:.1f} s{where}",
                                   highlight=False, soft_wrap=True)
    return got


def _cache_ok(arrays: dict[str, np.ndarray], n_classes: int) -> bool:
    """A cache file that does not look like one we wrote is ignored and rebuilt."""
    px, y = arrays.get("pixels"), arrays.get("y")
    return (px is not None and y is not None and "skipped" in arrays and px.dtype == np.uint8 and px.ndim == 4
            and px.shape[1] in (1, 3) and y.ndim == 1 and len(y) == len(px) and len(y) > 0
            and int(y.min()) >= 0 and int(y.max()) < n_classes)


def load_image_folder(root: Path, *, skip_bad: bool = False, show_progress: bool = True) -> Dataset:
    """Classes are the sorted sub-folder names; every image in a sub-folder (at
    any depth) belongs to that class. All grey -> 1 channel, else 3 (RGB).
    X is the uint8 pixels as decoded or cached: no float copy of the folder."""
    got = read_image_folder(root, skip_bad=skip_bad, show_progress=show_progress)
    return Dataset(name=root.resolve().name, kind="image", X=got.pixels, y=got.y,
                   classes=got.classes, source=str(root), skipped=got.skipped)
