"""Writing outputs so that a kill or a full disk never leaves half of them (docs/security.md).

Every file secsuite writes goes through `write_atomic` (or `save_torch`, which serialises first):
a temp file in the same folder, flushed to disk, then renamed over the target, so the target is
the old file or the new one, never a mix; a write error (full disk, file-size limit) removes the
temp file, keeps the old one and is one OutputError line. A set of files that belong together (the
report's json, md and html) is swapped in at once by `replace_file_set`. Files and folders are
created with the permissions the umask allows, like any other program's.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from secsuite.errors import OutputError

# OUT/.report links to the folder holding the current set; OUT/report.json links to .report/report.json.
SET_LINK = ".report"
SET_PREFIX = ".report-"


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(error: OSError) -> str:
    return f"{error.filename}: {error.strerror}" if error.filename and error.strerror else (error.strerror or str(error))


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Replace `path` with `content` (str is written as UTF-8) in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {_reason(error)}") from None
    try:
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        with os.fdopen(handle, "wb") as stream:
            os.fchmod(stream.fileno(), 0o666 & ~umask())
            stream.write(content.encode() if isinstance(content, str) else content)
            stream.flush()
            # A full disk can surface only when the data reaches it: before the rename, not after.
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException as error:
        Path(temp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from None
        raise


def save_torch(path: str | Path, obj: Any) -> None:
    """`torch.save` through `write_atomic`: serialised in memory first, so a write error is a plain OSError."""
    import torch  # here, so that commands that write no tensors (`secsuite report`) start without torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getvalue())


def check_output_dir(path: str | Path) -> Path:
    """Create the output folder if needed and create (and remove) a file in it, before any work is done."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise OutputError(f"output folder {path} is a file" if folder == path else f"output folder {path} is under a file, {folder}")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path, prefix=".secsuite-write-check.")
    except OSError as error:
        raise OutputError(f"output folder {path} cannot be created or written: {error.strerror or error}") from None
    os.close(handle)
    os.unlink(probe)
    return path


def replace_file_set(folder: str | Path, files: Mapping[str, str | bytes]) -> list[Path]:
    """Put `files` ({name: content}) into `folder` so that a reader or a kill sees the old set or the new one.

    The set is written to a fresh `.report-XXXX` folder, then `.report` is re-pointed to it with one
    rename; each public name is a link through `.report`. The set just replaced is kept, for a reader
    that resolved `.report` before the swap; older ones are removed.
    """
    folder = check_output_dir(folder)
    # Plain files under the set's names (an older secsuite, `secsuite report -o`) first become a set of
    # their own, byte for byte, so that turning them into links changes nothing a reader sees.
    plain = [name for name in files if (folder / name).is_file() and not (folder / name).is_symlink()]
    if plain:
        _swap_in(folder, {name: (folder / name).read_bytes() for name in files if (folder / name).is_file()})
    _swap_in(folder, files)
    return [folder / name for name in files]


def _swap_in(folder: Path, files: Mapping[str, str | bytes]) -> None:
    new = Path(tempfile.mkdtemp(prefix=SET_PREFIX, dir=folder))
    try:
        os.chmod(new, 0o777 & ~umask())
        for name, content in files.items():
            write_atomic(new / name, content)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    pointer = folder / SET_LINK
    previous = os.readlink(pointer) if pointer.is_symlink() else None
    _point(pointer, new.name)
    for name in files:
        if not ((folder / name).is_symlink() and os.readlink(folder / name) == f"{SET_LINK}/{name}"):
            _point(folder / name, f"{SET_LINK}/{name}")
    for entry in folder.iterdir():
        # A name of the old set that the new one lacks (a format no longer written) would dangle or mislead.
        if entry.is_symlink() and os.readlink(entry).startswith(f"{SET_LINK}/") and entry.name not in files:
            entry.unlink()
        elif entry.name.startswith(SET_PREFIX) and entry.name not in (new.name, previous):
            shutil.rmtree(entry, ignore_errors=True)


def _point(link: Path, target: str) -> None:
    """Make `link` a symlink to `target` in one rename, whatever `link` was before."""
    temp = link.with_name(f".{link.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.symlink(target, temp)
        os.replace(temp, link)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {link}: {error.strerror or error}") from None
