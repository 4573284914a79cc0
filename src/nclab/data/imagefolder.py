"""Image folders: ``ROOT/{train,test}/<class>/*.{png,jpg,jpeg}``, as a folder or a ``.tar``/``.tar.gz`` archive.

Class order = sorted class-folder names (the same set must appear under train/ and test/). ROOT may also be
a folder (or archive) whose single top-level folder holds train/ and test/. Archives are read member by
member straight from the tarfile (nothing is extracted); a member with an absolute path or ``..`` is refused.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from nclab.data.cache import cached, file_digests, listing_checksum
from nclab.data.decode import Decoder, stack_images
from nclab.data.types import Dataset
from nclab.utils.errors import NclabError
from nclab.utils.progress import progress

IMAGE_EXTS = (".png", ".jpg", ".jpeg")
SPLITS = ("train", "test")


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith((".tar", ".tar.gz", ".tgz"))


def safe_member_name(archive: Path, name: str) -> PurePosixPath:
    """The member's path, or NclabError if it is absolute or climbs out with ``..``."""
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts or (len(name) > 1 and name[1] == ":"):
        raise NclabError(f"archive {archive} has an unsafe member path '{name}' (absolute or '..'); refusing it")
    return PurePosixPath(*[s for s in p.parts if s not in ("", ".")])


class _Layout:
    """Collects (split, class, relative name) for every image and the class folders seen."""

    def __init__(self, where: str):
        self.where = where
        self.prefix: tuple[str, ...] | None = None
        self.class_dirs: dict[str, set[str]] = {s: set() for s in SPLITS}
        self.items: list[tuple[str, str, str, object]] = []  # split, class, name, payload (path or bytes)

    def _prefix_ok(self, prefix: tuple[str, ...], name: str) -> bool:
        if self.prefix is None:
            self.prefix = prefix
        if prefix != self.prefix:
            raise NclabError(f"{self.where} has train/test folders under two roots ('{'/'.join(self.prefix) or '.'}' "
                             f"and '{'/'.join(prefix) or '.'}', seen at {name}); keep a single root")
        return True

    def add_dir(self, parts: tuple[str, ...]) -> None:
        if len(parts) >= 2 and parts[-2] in SPLITS and not parts[-1].startswith("."):
            self._prefix_ok(parts[:-2], "/".join(parts))
            self.class_dirs[parts[-2]].add(parts[-1])

    @staticmethod
    def is_image(parts: tuple[str, ...]) -> bool:
        """ROOT/{train,test}/<class>/<name>.{png,jpg,jpeg}, not hidden."""
        return (len(parts) >= 3 and parts[-3] in SPLITS and not parts[-1].startswith(".")
                and parts[-1].lower().endswith(IMAGE_EXTS))

    def add_file(self, parts: tuple[str, ...], payload: object) -> None:
        if not self.is_image(parts):
            return
        self._prefix_ok(parts[:-3], "/".join(parts))
        split, cls = parts[-3], parts[-2]
        self.class_dirs[split].add(cls)
        self.items.append((split, cls, "/".join(parts), payload))

    def classes(self) -> list[str]:
        if not self.class_dirs["train"] and not self.class_dirs["test"]:
            raise NclabError(f"{self.where} has no train/<class>/ or test/<class>/ image folders; "
                             f"expected ROOT/{{train,test}}/<class>/*.png|jpg")
        for split in SPLITS:
            if not self.class_dirs[split]:
                raise NclabError(f"{self.where} has no {split}/<class>/ folders; both train/ and test/ are needed")
        tr, te = self.class_dirs["train"], self.class_dirs["test"]
        if tr != te:
            extra = sorted(tr ^ te)[0]
            missing = "test" if extra in tr else "train"
            raise NclabError(f"{self.where}: class '{extra}' has no {missing}/ folder; "
                             "train and test need the same classes")
        counts = {(s, c): 0 for s in SPLITS for c in tr}
        for s, c, _, _ in self.items:
            counts[(s, c)] += 1
        for (s, c), k in sorted(counts.items()):
            if k == 0:
                prefix = "/".join((*(self.prefix or ()), s, c))
                raise NclabError(f"class folder {prefix} in {self.where} holds no .png/.jpg images; "
                                 f"add images or remove the folder")
        return sorted(tr)


def _scan_folder(root: Path) -> _Layout:
    lay = _Layout(str(root))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):  # symlinked class folders count too
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root).parts
        for d in dirnames:
            lay.add_dir((*rel, d))
        for f in sorted(filenames):
            lay.add_file((*rel, f), Path(dirpath) / f)
    return lay


def _read_archive(path: Path, decoder: Decoder | None) -> _Layout:
    """Scan a tar archive in one sequential pass; each image's bytes go to ``decoder`` as soon as they are read
    (payload = its position in submission order)."""
    lay = _Layout(str(path))
    n = 0
    links = []
    try:
        with open(path, "rb") as raw:
            # gzip through GzipFile: it checks the stream's CRC and length at the end (tarfile's own gzip reader
            # does not, so a cut .tar.gz would load with images missing)
            src = gzip.GzipFile(fileobj=raw) if raw.read(2) == b"\x1f\x8b" else raw
            raw.seek(0)
            with tarfile.open(fileobj=src, mode="r|*") as tf:  # streaming: one sequential pass, no seeks
                for m in tf:
                    parts = safe_member_name(path, m.name).parts
                    if m.isdir():
                        lay.add_dir(parts)
                    elif m.isfile() and lay.is_image(parts):
                        f = tf.extractfile(m)
                        if decoder is not None:
                            decoder.add(f.read() if f is not None else b"")
                        lay.add_file(parts, n)
                        n += 1
                    elif (m.islnk() or m.issym()) and lay.is_image(parts):
                        links.append(m.name)
                    # other links and devices are ignored: nothing is ever extracted
                # tarfile ends quietly at a cut header: a complete archive ends with zero blocks after the last
                # member (the first was read as the end marker; at least one more follows)
                rest = b"".join(iter(lambda: tf.fileobj.read(1 << 20), b""))
        if not rest or rest.strip(b"\0"):
            raise NclabError(f"archive {path} is truncated (no end-of-archive marker after {n} images); "
                             "re-download or re-create it")
    except NclabError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise NclabError(f"archive {path} is corrupt or truncated ({type(e).__name__}: {e}); "
                         f"re-download or re-create it") from None
    if links:
        raise NclabError(f"archive {path} stores {len(links)} images as links (e.g. {links[0]}), which are not "
                         "read; re-create it without links (GNU tar: --hard-dereference, or copy the files)")
    return lay


def _resolve_root(path: Path) -> Path:
    """``path`` itself, or its single sub-folder when train/ and test/ sit one level down."""
    if (path / "train").is_dir() or (path / "test").is_dir():
        return path
    subs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subs) == 1 and ((subs[0] / "train").is_dir() or (subs[0] / "test").is_dir()):
        return subs[0]
    return path


def load_imagefolder(arg: str, cache_dir: Path, image_size: int | None = None) -> Dataset:
    """``image_size``: bring every image to image_size x image_size at decode time (shorter side, then centre
    crop; see :func:`nclab.data.decode.decode_one`), for folders of mixed sizes. Cached per size."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise NclabError(f"image_size must be a positive integer (pixels), got {image_size!r}")
    path = Path(arg).expanduser()
    if not path.exists():
        raise NclabError(f"image folder {path} not found (a relative path starts at the working directory); give "
                         "imagefolder:PATH to a folder or .tar/.tar.gz archive (train: --set data.source=...; "
                         "reproduce, sweep: --data ...)")
    if path.is_file():
        if not is_archive(path):
            raise NclabError(f"{path} is a file but not a .tar/.tar.gz archive; give a folder or a tar archive")
        checksum = file_digests(path)["sha256"]
    else:
        path = _resolve_root(path)
        lay = _scan_folder(path)
        lay.classes()  # validate before hashing
        # paths relative to the root (a relative root would otherwise be joined twice)
        checksum = listing_checksum(path, [Path(p).relative_to(path) for *_, p in lay.items])

    def build():
        bar = progress(desc=f"decoding {path.name}", unit="img")
        with Decoder(bar=bar, size=image_size) as dec:
            if path.is_file():
                layout = _read_archive(path, dec)
                classes = layout.classes()
            else:
                layout = _scan_folder(path)
                classes = layout.classes()
                for _, _, _, p in layout.items:
                    dec.add(_read(p))
            images = dec.results()
        bar.close()
        order = {c: i for i, c in enumerate(classes)}
        arrays = {}
        for split in SPLITS:
            # sample order = (class index, path) whatever order the files were read in
            items = sorted((order[c], name, pos) for pos, (s, c, name, _) in enumerate(layout.items) if s == split)
            names = [f"{path}:{name}" if path.is_file() else str(path / name) for _, name, _ in items]
            arrays[f"{split}_x"] = stack_images([images[pos] for _, _, pos in items], names)
            arrays[f"{split}_y"] = np.asarray([k for k, _, _ in items], dtype=np.int64)
        if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
            raise NclabError(f"{path}: train images are {arrays['train_x'].shape[1:]} but test images are "
                             f"{arrays['test_x'].shape[1:]} (C, H, W); use one size and colour mode")
        return arrays, {"class_names": classes}

    kind = "imagefolder" if image_size is None else f"imagefolder-{image_size}px"
    arrays, meta = cached(cache_dir, kind, checksum, build)
    return Dataset.from_arrays(path.name.split(".")[0] if path.is_file() else path.name, arrays, meta["class_names"],
                               source=f"imagefolder:{path}", checksum=checksum, path=path)


def _read(p: Path) -> bytes:
    try:
        return Path(p).read_bytes()
    except OSError as e:
        raise NclabError(f"cannot read image {p}: {e.strerror or e}") from None
