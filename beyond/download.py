"""Downloading MovieLens on its registered SHA-256, and a clear message when it cannot be had.

The tutorial's `tfds.load` downloads MovieLens itself. Offline it retries for minutes, and it gives up on
a server whose certificate fails verification, as GroupLens's did when it expired (docs/offline.md). But
TensorFlow Datasets registers the SHA-256 of every MovieLens archive, and bytes with that digest are the
right bytes whoever served them. So this module, before the core's load_movielens reads anything:

    1. looks for the archive in TFDS's manual-download folder, and checks its digest
    2. else reuses a complete copy TFDS downloaded earlier
    3. else downloads it, from --download-url or GroupLens, accepting a failed certificate with a note
    4. keeps the bytes only if their digest is the registered one, renaming them into place whole
    5. lets TFDS prepare the dataset from that folder, where it looks first

Every failure ends in a DataUnavailableError that says what went wrong and the ways out:

    python recommend.py --user 42 --download-url https://mirror.example/ml-100k.zip
"""

import contextlib
import hashlib
import os
import pathlib
import re
import sys
import urllib.parse
import warnings

import requests
import tensorflow_datasets as tfds
import tqdm
import urllib3

import recommend
from beyond import ratings_cache
from beyond.guards import DataUnavailableError, make_folders, remove_empty_folders

# A server silent for this long is not going to send 5 MB in a useful time either.
DOWNLOAD_TIMEOUT_SECONDS = 10
DOWNLOAD_CHUNK_BYTES = 1 << 16


class DownloadFailed(Exception):
    """The archive could not be had; the message says why, in one line."""


def load_movielens(
    data_dir: str | None, download_url: str | None, size: str
) -> tuple[recommend.MovieLens, str]:
    """The core's load_movielens (for MovieLens 1M and up, the numbers parsed once and kept), once both
    datasets are on disk; a damaged copy is reported by name. Returns the data and how it was had."""
    for name in dataset_names(size):
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as error:  # TFDS could not even read the prepared copy's description
            raise DataUnavailableError(damaged_data_message(name, data_dir, error)) from None
        prepare_dataset(builder, download_url)
    try:
        # The tutorial's size goes through the core's own loader, so that a learner's run is the code they
        # read; the big ones are parsed once, then read back (beyond/ratings_cache.py).
        if size == "100k":
            return recommend.load_movielens(data_dir, size), "parsed"
        return ratings_cache.load_movielens(data_dir, size)
    except recommend.DatasetUnreadable as unreadable:
        name, error = unreadable.args
        raise DataUnavailableError(damaged_data_message(name, data_dir, error)) from None


def dataset_names(size: str) -> tuple[str, str]:
    """TFDS's names for one MovieLens size: its ratings and its movies."""
    return f"movielens/{size}-ratings", f"movielens/{size}-movies"


def prepare_dataset(builder: tfds.core.DatasetBuilder, download_url: str | None = None) -> None:
    """Makes sure TFDS has the dataset on disk, fetching its archive first when it is not there."""
    if builder.is_prepared():
        return
    archive = find_or_fetch_archive(builder, download_url)
    recommend.progress(
        f"Preparing {builder.name}/{builder.builder_config.name} in {builder.data_dir_root} from {archive.name}"
    )
    try:
        # TFDS prints its "Downloading and preparing" banner on stdout, which is reserved for results.
        with contextlib.redirect_stdout(sys.stderr):
            builder.download_and_prepare()
    except Exception as error:  # Whatever went wrong, the ways out are the same.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataUnavailableError(no_data_message(builder, reason)) from None


def damaged_data_message(name: str, data_dir: str | None, error: Exception) -> str:
    """Says which prepared dataset cannot be read, and that preparing it afresh is the way out."""
    folder = pathlib.Path(data_dir or tfds.core.constants.get_default_data_dir()) / name
    detail = (getattr(error, "message", None) or str(error) or type(error).__name__).strip().splitlines()[0]
    # TensorFlow wraps its messages in the name of the graph function and op that failed: drop those.
    detail = re.sub(r"^\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", detail)
    return (
        f"The prepared copy of {name} cannot be read:\n"
        f"  {detail[:300]}\n"
        "Its files may be damaged, truncated or left from an interrupted prepare. Delete\n"
        f"  {folder}\n"
        "and run again: TensorFlow Datasets then prepares it afresh (from the archive in its\n"
        "downloads/manual/ folder if that is there, else downloading it)."
    )


def no_data_message(builder: tfds.core.DatasetBuilder, reason: str) -> str:
    url = builder.builder_config.download_url
    filename = builder.url_infos[url].filename
    return (
        f"MovieLens is not in {builder.data_dir_root}, and it could not be downloaded:\n"
        f"  {reason}\n"
        "Ways out:\n"
        f"  - Fetch {filename} from a mirror instead: --download-url https://<mirror>/{filename}\n"
        "    (it is accepted only if its SHA-256 is the one TensorFlow Datasets registered).\n"
        f"  - Or download {filename} yourself, from\n"
        f"      {url} or any mirror,\n"
        "    put it in\n"
        f"      {manual_download_dir(builder)}/\n"
        "    and run this again.\n"
        "  - Or point --data-dir (or the TFDS_DATA_DIR environment variable) at a TensorFlow Datasets\n"
        f"    folder that already holds {builder.name}/{builder.builder_config.name}."
    )


def manual_download_dir(builder: tfds.core.DatasetBuilder) -> pathlib.Path:
    return pathlib.Path(builder.data_dir_root) / "downloads" / "manual"


def find_or_fetch_archive(builder: tfds.core.DatasetBuilder, download_url: str | None) -> pathlib.Path:
    """Returns the dataset's archive in TFDS's manual-download folder, verified, getting it if need be:
    from a download TFDS made earlier, else from download_url, else from the URL TFDS knows."""
    expected = builder.url_infos[builder.builder_config.download_url]
    archive = manual_download_dir(builder) / expected.filename
    url = download_url or builder.builder_config.download_url
    created = []
    try:
        if archive.exists():
            received = sha256_of(archive)
            if received != expected.checksum:
                raise DownloadFailed(
                    f"{archive} is not the registered {expected.filename}: its SHA-256 is {received}, "
                    f"expected {expected.checksum}. Delete or replace it."
                )
            return archive
        created = make_folders(archive.parent)
        earlier = find_earlier_download(pathlib.Path(builder.data_dir_root) / "downloads", expected)
        if earlier is not None:
            recommend.progress(
                f"Using the {expected.filename} that TensorFlow Datasets downloaded earlier: {earlier}"
            )
            save_verified(file_chunks(earlier), archive, expected, source=str(earlier))
        else:
            save_verified(download_chunks(url, expected), archive, expected, source=url)
    except (DownloadFailed, requests.RequestException, OSError) as error:
        remove_empty_folders(created)
        if isinstance(error, requests.RequestException):
            reason = describe_download_failure(url, error)
        elif isinstance(error, OSError):
            where = error.filename or archive.parent
            reason = f"could not read or write {where}: {error.strerror or error}"
        else:
            reason = str(error)
        raise DataUnavailableError(no_data_message(builder, reason)) from None
    except BaseException:
        remove_empty_folders(created)
        raise
    return archive


def save_verified(chunks, archive: pathlib.Path, expected, source: str) -> None:
    """Writes the chunks beside archive and renames them into place only if their SHA-256 is the registered
    one. Whatever happens, no partial file is left behind."""
    digest = hashlib.sha256()
    size = 0
    partial = archive.with_name(f".{archive.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as file:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                if size > int(expected.size):  # a wrong file, or an endless stream: stop filling the disk
                    break
                file.write(chunk)
        if digest.hexdigest() != expected.checksum:
            raise DownloadFailed(
                f"{source} sent {'more than ' if size > int(expected.size) else ''}{size:,} bytes with "
                f"SHA-256 {digest.hexdigest()}, but {expected.filename} "
                f"is registered as {int(expected.size):,} bytes with SHA-256 {expected.checksum}; refused and deleted"
            )
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)


def download_chunks(url: str, expected):
    """Yields the bytes at url with a progress bar on stderr. A certificate that fails verification is
    accepted, with a note, because save_verified checks the bytes themselves."""
    try:
        response = http_get(url, verify=True)
    except requests.exceptions.SSLError as error:
        problem = certificate_problem(error)
        if problem is None:
            raise
        host = urllib.parse.urlsplit(url).hostname
        recommend.progress(
            f"certificate of {host} {problem}; accepting {expected.filename} on its registered SHA-256 instead"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            response = http_get(url, verify=False)
    bar = tqdm.tqdm(
        total=int(expected.size),  # TFDS's Size type does not add to floats, as tqdm needs
        desc=f"Downloading {expected.filename}",
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        # A bar that redraws is for a terminal; in a log file, a line every few seconds is enough.
        mininterval=0.2 if sys.stderr.isatty() else 5,
    )
    with response, bar:
        for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
            bar.update(len(chunk))
            yield chunk


def http_get(url: str, verify: bool) -> requests.Response:
    # TFDS downloads with `requests` too, so this sees the same proxies (HTTPS_PROXY, NO_PROXY) and
    # certificate settings (REQUESTS_CA_BUNDLE). The timeout bounds each wait, not the whole download.
    response = requests.get(url, stream=True, verify=verify, timeout=DOWNLOAD_TIMEOUT_SECONDS)
    try:
        response.raise_for_status()
    except requests.HTTPError:
        response.close()
        raise
    return response


def certificate_problem(error: requests.exceptions.SSLError) -> str | None:
    """What is wrong with the server's certificate, or None if the TLS error is something else."""
    text = str(error)
    if "CERTIFICATE_VERIFY_FAILED" not in text:
        return None
    for marker, problem in (
        ("expired", "has expired"),
        ("not yet valid", "is not valid yet"),
        ("self-signed", "is self-signed"),
        ("self signed", "is self-signed"),
        ("Hostname mismatch", "is for another host"),
        ("local issuer", "is not from an authority this machine trusts"),
    ):
        if marker in text:
            return problem
    return "could not be verified"


def describe_download_failure(url: str, error: requests.RequestException) -> str:
    exceptions = requests.exceptions
    if isinstance(error, exceptions.ProxyError):
        return f"{url}: could not connect to the proxy (HTTPS_PROXY)"
    if isinstance(error, exceptions.SSLError):
        return f"{url}: TLS error ({str(error)[-160:]})"
    if isinstance(error, exceptions.Timeout):
        return f"{url}: no answer within {DOWNLOAD_TIMEOUT_SECONDS} s"
    if isinstance(error, (exceptions.ChunkedEncodingError, exceptions.ContentDecodingError)):
        return f"{url}: the transfer broke off before the end"
    if isinstance(error, exceptions.ConnectionError) and "Read timed out" in str(error):
        return f"{url}: the server stopped sending for {DOWNLOAD_TIMEOUT_SECONDS} s in the middle of the transfer"
    if isinstance(error, exceptions.ConnectionError):
        return f"{url}: could not connect (is this machine offline?)"
    if isinstance(error, exceptions.HTTPError):
        return f"{url}: the server answered {error.response.status_code} {error.response.reason}"
    return f"{url}: {str(error)[:200]}"


def find_earlier_download(downloads: pathlib.Path, expected) -> pathlib.Path | None:
    """A complete copy of the archive that TFDS downloaded before a failed prepare, if there is one."""
    for folder, subfolders, files in os.walk(downloads):
        subfolders[:] = [name for name in subfolders if name not in ("manual", "extracted")]
        for name in files:
            path = pathlib.Path(folder, name)
            with contextlib.suppress(OSError):  # a file this user cannot read is not the one
                if path.stat().st_size == expected.size and sha256_of(path) == expected.checksum:
                    return path
    return None


def file_chunks(path: pathlib.Path):
    with open(path, "rb") as file:
        while chunk := file.read(DOWNLOAD_CHUNK_BYTES):
            yield chunk


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()
