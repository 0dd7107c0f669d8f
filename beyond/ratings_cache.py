"""MovieLens 1M and up, parsed once: the numbers kept beside TFDS's prepared files, and read back.

Parsing MovieLens 25M's TFRecords takes minutes, every run, while the numbers it gives (recommend.MovieLens:
each rating's user, title and stars; the users' ids and the titles) are 300 MB that read back from disk
in a second or two. So the first run on 1M, 20M or 25M keeps them, as numpy's .npy files (arrays that
can be memory-mapped, no pickle), and later runs read them back. The tutorial's 100k is parsed every
time, through the core's own loader, so that a learner's run is the code they read.

    1. source: what the numbers were made from: TFDS's version and each prepared file's name and size
    2. load_movielens: read back the kept numbers if they match the prepared files and are whole; else
       parse (big_data.load_movielens) and keep them
    3. read_back: every check a kept copy must pass, or one line on stderr saying why it is not used
    4. keep: written all or nothing (staged in a new folder, renamed into place), or one line saying why
       it could not be, and the run goes on without

The copy lives in the TFDS data folder, beside the prepared files, at recommend.py/movielens-<size>/;
deleting that folder only makes the next run parse again (docs/bigger-data.md):

    python recommend.py --dataset 25m --user 1 --timings     # "load ... (parsed and kept)", then "(read back)"
"""

import errno
import hashlib
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np
import tensorflow_datasets as tfds

import recommend
from beyond import big_data
from beyond.guards import failure_reason

# Which numbers are kept and how: a copy written under another FORMAT is parsed again. Change it with
# anything that changes what load_movielens gives.
FORMAT = "recommend.py MovieLens numbers, 1"
MANIFEST = "manifest.json"
# Text kept as one array of UTF-8 bytes, and where each entry ends in it.
TEXT_FIELDS = ("users", "titles", "movies")
NUMBER_FIELDS = ("rating_users", "rating_titles", "rating_stars", "catalogue_rows")


def folder(data_dir: str | None, size: str) -> pathlib.Path:
    """Where the numbers of one MovieLens size are kept: in the TFDS data folder that holds it."""
    ratings = tfds.builder(f"movielens/{size}-ratings", data_dir=data_dir)
    root = pathlib.Path(ratings.data_dir).parents[2]  # <root>/movielens/<size>-ratings/<version>
    return root / "recommend.py" / f"movielens-{size}"


def source(data_dir: str | None, size: str) -> dict:
    """What the numbers are made from: TFDS's version, and each prepared file of the ratings and the
    movies, by name and size. A copy made from anything else is not used."""
    made_from = {"tensorflow_datasets": tfds.__version__}
    for name in (f"movielens/{size}-ratings", f"movielens/{size}-movies"):
        builder = tfds.builder(name, data_dir=data_dir)
        files = sorted(pathlib.Path(builder.data_dir).iterdir())
        made_from[name] = {
            "version": str(builder.version),
            "files": {path.name: path.stat().st_size for path in files if path.is_file()},
        }
    return made_from


def load_movielens(data_dir: str | None, size: str) -> tuple[recommend.MovieLens, str]:
    """MovieLens SIZE as numbers, and how they were had: "read back", "parsed and kept", or "parsed but
    not kept" and why."""
    where, made_from = folder(data_dir, size), source(data_dir, size)
    data = read_back(where, made_from, size)
    if data is not None:
        return data, "read back"
    data = big_data.load_movielens(data_dir, size)
    return data, "parsed " + keep(data, where, made_from)


def read_back(where: pathlib.Path, made_from: dict, size: str) -> recommend.MovieLens | None:
    """The kept numbers, or None (with one line on stderr saying why, unless there are none)."""
    try:
        manifest = json.loads((where / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None  # nothing kept yet: the first run says nothing
    except (OSError, ValueError) as error:
        return not_used(where, f"unreadable ({failure_reason(error)})")
    if manifest.get("format") != FORMAT:
        return not_used(where, "from another version of recommend.py")
    if manifest.get("source") != made_from:
        return not_used(where, "from other prepared files than those here now")
    arrays = {}
    try:
        for name, expected in manifest["arrays"].items():
            array = np.load(where / f"{name}.npy", allow_pickle=False)
            if [list(array.shape), array.dtype.str] != expected["shape_and_type"]:
                return not_used(where, f"damaged ({name}.npy is not the array kept)")
            if digest(array) != expected["digest"]:
                return not_used(where, f"damaged ({name}.npy is not the bytes kept)")
            arrays[name] = array
    except (OSError, ValueError, KeyError, TypeError) as error:
        return not_used(where, f"damaged ({failure_reason(error)})")
    texts = {field: as_texts(arrays[field], arrays[f"{field}-ends"]) for field in TEXT_FIELDS}
    return recommend.MovieLens(
        texts["users"], texts["titles"], arrays["rating_users"], arrays["rating_titles"],
        arrays["rating_stars"], texts["movies"], arrays["catalogue_rows"], size,
    )  # fmt: skip


def not_used(where: pathlib.Path, why: str) -> None:
    recommend.progress(f"note: the parsed numbers kept in {where} are {why}; parsing again")
    return None


def keep(data: recommend.MovieLens, where: pathlib.Path, made_from: dict) -> str:
    """Keeps DATA's numbers in WHERE, all or nothing: "and kept", or "but not kept" and why (and a line on
    stderr saying so)."""
    staging = None
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{where.name}.partial-", dir=where.parent))
        manifest = {"format": FORMAT, "source": made_from, "arrays": write_arrays(data, staging)}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        settle(staging)
        put_in_place(staging, where)
        return "and kept"
    except OSError as error:
        why = failure_reason(error)
        recommend.progress(
            f"note: the parsed numbers could not be kept in {where.parent} ({why}); the next run parses again"
        )
        return f"but not kept: {why}"
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)  # gone already once it is in place


def write_arrays(data: recommend.MovieLens, staging: pathlib.Path) -> dict:
    """Writes each array of DATA as NAME.npy in STAGING; returns each one's shape, type and digest."""
    arrays = {field: getattr(data, field) for field in NUMBER_FIELDS}
    for field in TEXT_FIELDS:
        arrays[field], arrays[f"{field}-ends"] = as_bytes(getattr(data, field))
    written = {}
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        np.save(staging / f"{name}.npy", array, allow_pickle=False)
        written[name] = {"shape_and_type": [list(array.shape), array.dtype.str], "digest": digest(array)}
    return written


def settle(staging: pathlib.Path) -> None:
    """Flushes every file of STAGING to the disk, so that a crash cannot leave a renamed, empty copy."""
    for path in staging.iterdir():
        with open(path, "rb") as file:
            os.fsync(file.fileno())


def put_in_place(staging: pathlib.Path, where: pathlib.Path) -> None:
    """Renames STAGING to WHERE in one step. If WHERE is there already (another run kept the same numbers
    first, or a copy that read_back refused), it is set aside and removed."""
    try:
        os.rename(staging, where)
        return
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    aside = where.with_name(f".{where.name}.old-{os.getpid()}")
    try:
        os.rename(where, aside)
    except FileNotFoundError:
        pass  # another run set it aside in the meantime
    try:
        os.rename(staging, where)
    except OSError as error:
        # Another run put its copy in place first: theirs is as good as ours.
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    shutil.rmtree(aside, ignore_errors=True)


def as_bytes(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texts (bytes objects) as one uint8 array and where each one ends in it: exact, whatever they hold."""
    lengths = np.fromiter((len(text) for text in texts), np.int64, count=len(texts))
    return np.frombuffer(b"".join(texts), np.uint8), np.cumsum(lengths)


def as_texts(joined: np.ndarray, ends: np.ndarray) -> np.ndarray:
    raw, starts = joined.tobytes(), np.concatenate([[0], ends[:-1]]).astype(np.int64)
    texts = np.empty(len(ends), dtype=object)
    texts[:] = [raw[start:end] for start, end in zip(starts.tolist(), ends.tolist())]
    return texts


def digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).view(np.uint8), digest_size=16).hexdigest()
