"""Downloading MovieLens from local servers (127.0.0.1 only): accepted on its registered SHA-256, even
over a certificate that fails verification; refused, with nothing left behind, whenever it is not."""

import datetime
import hashlib
import http.server
import ipaddress
import json
import os
import socket
import ssl
import threading
import time

import pytest
import tensorflow_datasets as tfds
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import recommend
from beyond import download
from conftest import MOVIES_DATASET, PLANTED_MOVIE, RATINGS_DATASET, tiny_archive
from test_cli import TINY_TRAINING, assert_one_line_error, run

ARCHIVE = tiny_archive()
OTHER_BYTES = b"<html>Mirror maintenance: back soon</html>"


class ArchiveHandler(http.server.BaseHTTPRequestHandler):
    """Serves the tiny archive at /ml-100k.zip, and the ways a server goes wrong at other paths."""

    def do_GET(self):
        if self.path == "/ml-100k.zip":
            self.send_body(ARCHIVE)
        elif self.path == "/wrong/ml-100k.zip":
            self.send_body(OTHER_BYTES)
        elif self.path == "/endless/ml-100k.zip":
            # No length promised, and more bytes than any archive has: a misconfigured mirror.
            self.send_response(200)
            self.end_headers()
            for _ in range(1000):
                self.wfile.write(b"x" * 65536)
            self.close_connection = True
        elif self.path == "/dies/ml-100k.zip":
            # Promises the whole archive, sends half of it, then hangs up.
            self.send_response(200)
            self.send_header("Content-Length", str(len(ARCHIVE)))
            self.end_headers()
            self.wfile.write(ARCHIVE[: len(ARCHIVE) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            self.send_error(404)

    def send_body(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def no_proxy(monkeypatch):
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def serve(tls_context=None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    if tls_context is not None:
        server.socket = tls_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls_context else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def http_server(no_proxy):
    server, address = serve()
    yield address
    server.shutdown()


def certificate(subject, key, issuer, issuer_key, not_before, not_after, authority):
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=authority, path_length=None), critical=True)
    )
    if not authority:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def pem(path, *objects):
    with open(path, "wb") as file:
        for item in objects:
            if isinstance(item, x509.Certificate):
                file.write(item.public_bytes(serialization.Encoding.PEM))
            else:
                file.write(
                    item.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
    return str(path)


@pytest.fixture
def https_server(tmp_path_factory, no_proxy, monkeypatch):
    """Returns serve(kind): an HTTPS server whose certificate is "expired" (issued by an authority this
    machine trusts, for 127.0.0.1, but out of date) or "self-signed" (in date, trusted by nobody)."""
    folder = tmp_path_factory.mktemp("certificates")
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    servers = []

    def start(kind):
        key = ec.generate_private_key(ec.SECP256R1())
        if kind == "expired":
            authority_key = ec.generate_private_key(ec.SECP256R1())
            authority = certificate(
                "Test Authority",
                authority_key,
                "Test Authority",
                authority_key,
                now - 90 * day,
                now + 90 * day,
                True,
            )
            leaf = certificate(
                "127.0.0.1", key, "Test Authority", authority_key, now - 60 * day, now - day, False
            )
            # requests trusts the bundle this variable names, as it does on a machine with a company CA.
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", pem(folder / "authority.pem", authority))
        else:
            leaf = certificate("127.0.0.1", key, "127.0.0.1", key, now - day, now + 30 * day, False)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem(folder / f"{kind}.pem", leaf, key))
        server, address = serve(context)
        servers.append(server)
        return address

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def registered(monkeypatch, tmp_path_factory):
    """Registers the tiny archive's size and SHA-256 for an address, as TFDS registers the real one's, and
    makes that address MovieLens's download URL. Everything else that runs is the real code."""
    movielens_builder = type(tfds.builder(RATINGS_DATASET))

    def register(url, checksum=hashlib.sha256(ARCHIVE).hexdigest()):
        # Parsed by TFDS from a line of its own checksums format, exactly as it reads url_checksums/movielens.txt.
        registry = tmp_path_factory.mktemp("checksums") / "movielens.txt"
        registry.write_text(f"{url}\t{len(ARCHIVE)}\t{checksum}\tml-100k.zip\n")
        info = tfds.core.download.checksums.load_url_infos(registry)[url]
        monkeypatch.setattr(movielens_builder, "url_infos", {url: info})
        for name in (RATINGS_DATASET, MOVIES_DATASET):
            monkeypatch.setattr(tfds.builder(name).builder_config, "_download_url", url)

    return register


def files_under(folder):
    return sorted(
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
    )


def recommend_after_download(capsys, data_dir, *extra):
    return run(
        capsys, "--user", "1", "--k", "3", "--json", "--data-dir", str(data_dir), *TINY_TRAINING, *extra
    )


def test_a_plain_http_download_is_verified_then_trained_on(http_server, registered, tmp_path, capsys):
    registered(f"{http_server}/ml-100k.zip")
    status, out, err = recommend_after_download(capsys, tmp_path)
    assert status == 0, err
    assert json.loads(out)["recommendations"][0]["title"] == PLANTED_MOVIE
    assert "Downloading ml-100k.zip" in err
    assert "certificate" not in err
    assert (tmp_path / "downloads" / "manual" / "ml-100k.zip").read_bytes() == ARCHIVE
    # The second run finds the prepared data and downloads nothing.
    status, again, err = recommend_after_download(capsys, tmp_path)
    assert (status, again) == (0, out)
    assert "Downloading" not in err


def test_an_expired_certificate_is_reported_and_the_bytes_accepted_on_their_checksum(
    https_server, registered, tmp_path, capsys
):
    registered(f"{https_server('expired')}/ml-100k.zip")
    status, out, err = recommend_after_download(capsys, tmp_path)
    assert status == 0, err
    assert json.loads(out)["recommendations"][0]["title"] == PLANTED_MOVIE
    assert (
        "certificate of 127.0.0.1 has expired; accepting ml-100k.zip on its registered SHA-256 instead" in err
    )
    assert "Traceback" not in err and "InsecureRequestWarning" not in err


def test_a_self_signed_mirror_given_with_download_url_is_accepted_on_the_checksum(
    https_server, registered, tmp_path, capsys
):
    registered("https://files.example.invalid/ml-100k.zip")  # GroupLens stand-in, never contacted
    mirror = f"{https_server('self-signed')}/ml-100k.zip"
    status, out, err = recommend_after_download(capsys, tmp_path, "--download-url", mirror)
    assert status == 0, err
    assert json.loads(out)["recommendations"][0]["title"] == PLANTED_MOVIE
    assert "certificate of 127.0.0.1 is self-signed; accepting ml-100k.zip" in err


def assert_refused_leaving_nothing(status, out, err, data_dir, *fragments):
    assert status == 1
    assert out == ""
    assert "Traceback" not in err
    assert "--download-url" in err  # the ways out include a mirror
    for fragment in fragments:
        assert fragment in err
    assert files_under(data_dir) == []


def test_other_bytes_are_refused_with_both_checksums_and_deleted(http_server, registered, tmp_path, capsys):
    registered(f"{http_server}/ml-100k.zip")
    mirror = f"{http_server}/wrong/ml-100k.zip"
    status, out, err = recommend_after_download(capsys, tmp_path, "--download-url", mirror)
    assert_refused_leaving_nothing(
        status,
        out,
        err,
        tmp_path,
        f"sent {len(OTHER_BYTES)} bytes with SHA-256 {hashlib.sha256(OTHER_BYTES).hexdigest()}",
        f"registered as {len(ARCHIVE):,} bytes with SHA-256 {hashlib.sha256(ARCHIVE).hexdigest()}",
    )
    # Nothing of the refused download lingers to trip up the next run, which starts clean.
    status, out, err = recommend_after_download(capsys, tmp_path)
    assert status == 0, err


def test_a_stream_longer_than_the_archive_is_cut_off_and_refused(http_server, registered, tmp_path, capsys):
    registered(f"{http_server}/ml-100k.zip")
    status, out, err = recommend_after_download(
        capsys, tmp_path, "--download-url", f"{http_server}/endless/ml-100k.zip"
    )
    assert_refused_leaving_nothing(status, out, err, tmp_path, "sent more than", "refused and deleted")


def test_a_server_that_dies_mid_transfer_leaves_nothing_behind(http_server, registered, tmp_path, capsys):
    registered(f"{http_server}/dies/ml-100k.zip")
    status, out, err = recommend_after_download(capsys, tmp_path)
    assert_refused_leaving_nothing(status, out, err, tmp_path, "the transfer broke off before the end")


def test_a_missing_file_on_the_mirror_is_refused(http_server, registered, tmp_path, capsys):
    registered(f"{http_server}/ml-100k.zip")
    status, out, err = recommend_after_download(
        capsys, tmp_path, "--download-url", f"{http_server}/old/ml-100k.zip"
    )
    assert_refused_leaving_nothing(status, out, err, tmp_path, "the server answered 404 Not Found")


def test_a_server_that_never_answers_is_given_up_on_quickly(
    no_proxy, registered, tmp_path, capsys, monkeypatch
):
    # A socket that accepts connections (the kernel does that) but never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        registered(f"http://127.0.0.1:{silent.getsockname()[1]}/ml-100k.zip")
        monkeypatch.setattr(download, "DOWNLOAD_TIMEOUT_SECONDS", 1)
        started = time.perf_counter()
        status, out, err = recommend_after_download(capsys, tmp_path)
    assert time.perf_counter() - started < 10
    assert_refused_leaving_nothing(status, out, err, tmp_path, "no answer within 1 s")


def test_a_download_tfds_made_before_a_failed_prepare_is_used_offline(offline, registered, tmp_path, capsys):
    registered("https://files.example.invalid/ml-100k.zip")
    # Where TFDS keeps what it downloaded: downloads/<sanitised url><checksum>.zip, beside an .INFO file.
    earlier = tmp_path / "downloads" / "files.example.invalid_ml-100kSomeChecksum.zip"
    earlier.parent.mkdir(parents=True)
    earlier.write_bytes(ARCHIVE)
    (tmp_path / "downloads" / "unrelated.zip").write_bytes(OTHER_BYTES)
    status, out, err = recommend_after_download(capsys, tmp_path)
    assert status == 0, err
    assert "downloaded earlier" in err and str(earlier) in err
    assert earlier.read_bytes() == ARCHIVE  # TFDS's own copy is left where it was


def test_a_wrong_archive_in_the_manual_folder_is_named_and_kept(offline, registered, tmp_path, capsys):
    registered("https://files.example.invalid/ml-100k.zip")
    placed = tmp_path / "downloads" / "manual" / "ml-100k.zip"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(ARCHIVE[:1000])  # an interrupted browser download, say
    status, out, err = recommend_after_download(capsys, tmp_path)
    assert status == 1 and out == ""
    assert f"{placed} is not the registered ml-100k.zip" in err
    assert hashlib.sha256(ARCHIVE).hexdigest() in err and hashlib.sha256(ARCHIVE[:1000]).hexdigest() in err
    assert placed.read_bytes() == ARCHIVE[:1000]  # the user's file: named, not deleted


def test_the_right_archive_in_the_manual_folder_needs_no_network(offline, registered, tmp_path, capsys):
    registered("https://files.example.invalid/ml-100k.zip")
    placed = tmp_path / "downloads" / "manual" / "ml-100k.zip"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(ARCHIVE)
    status, out, err = recommend_after_download(capsys, tmp_path)
    assert status == 0, err
    assert "Downloading ml-100k.zip" not in err


@pytest.mark.parametrize("address", ["ftp://mirror.example/ml-100k.zip", "ml-100k.zip", "https://"])
def test_a_download_url_that_is_not_http_is_refused_in_one_line(address, capsys):
    assert_one_line_error(
        *run(capsys, "--user", "1", "--download-url", address),
        "--download-url: expected an http:// or https://",
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def offline(monkeypatch):
    """Makes every download fail at once, online or not: all HTTP(S) goes to a closed local port."""
    proxy = f"http://127.0.0.1:{closed_port()}"
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, proxy)
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)


def test_no_data_and_no_download_explains_the_ways_out_in_seconds(tmp_path, offline, capsys):
    started = time.perf_counter()
    status = recommend.main(["--user", "42", "--data-dir", str(tmp_path)])
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    assert "Traceback" not in err
    assert "ml-100k.zip" in err
    assert os.path.join(str(tmp_path), "downloads", "manual") + "/" in err
    assert "--data-dir" in err and "TFDS_DATA_DIR" in err and "--download-url" in err
    assert elapsed < 30  # TFDS alone would retry for minutes


def test_a_manually_placed_zip_is_used_instead_of_the_network(tmp_path, offline, capsys):
    manual_dir = tmp_path / "downloads" / "manual"
    manual_dir.mkdir(parents=True)
    (manual_dir / "ml-100k.zip").write_bytes(b"not the real archive")
    status = recommend.main(["--user", "42", "--data-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    # The file was checked without going online, and its SHA-256 shows it is not the real one.
    assert status == 1
    assert out == ""
    assert "Traceback" not in err
    assert "is not the registered ml-100k.zip: its SHA-256 is" in err
