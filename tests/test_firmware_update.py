"""Signed firmware (= compiled-in model) updates on a board: Python builds the release and its CHUNK
messages (training/codegen/release.py), the C core (firmware/core/pw_update.c, SHA-256 in C, Ed25519 from
libsodium) receives them; only a complete, newer, correctly signed image for the board's fleet is accepted."""
from __future__ import annotations

import os
import struct
import subprocess

import pytest

from tests.conftest import ROOT
from training.codegen import toolchain

pytestmark = pytest.mark.firmware


def _libsodium() -> str | None:
    """The linker flag for the system's libsodium (Debian libsodium-dev, which `make setup` installs)."""
    probe = subprocess.run(["gcc", "-xc", "-", "-lsodium", "-o", os.devnull], input="int main(void){return 0;}",
                           capture_output=True, text=True)
    return "-lsodium" if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    toolchain.need("gcc")
    libsodium = _libsodium()
    if libsodium is None:
        pytest.skip("libsodium missing (apt-get install libsodium-dev, as make setup does): the host test borrows "
                    "its Ed25519")
    out = tmp_path_factory.mktemp("update")
    exe = out / "run_update"
    core = ROOT / "firmware" / "core"
    build = subprocess.run(["gcc", *toolchain.WARNINGS, "-O2", f"-I{core}", str(core / "pw_update.c"),
                            str(core / "pw_sha256.c"), str(core / "pw_wire.c"), str(ROOT / "firmware/tests/run_update.c"),
                            "-o", str(exe), libsodium], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return exe, out


def _keys():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _deliver(board, chunks: list[bytes], public: bytes, fleet: str = "ward3", running: int = 6) -> tuple[str, bytes]:
    exe, out = board
    (out / "key.bin").write_bytes(public)
    (out / "chunks.bin").write_bytes(b"".join(struct.pack("<I", len(c)) + c for c in chunks))
    run = subprocess.run([str(exe), str(out / "chunks.bin"), str(out / "key.bin"), fleet, str(running),
                          str(out / "flash.bin")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip(), (out / "flash.bin").read_bytes()


def test_signed_newer_image_is_written_and_accepted(board):
    from training.codegen.release import firmware_chunks, firmware_payload

    key, public = _keys()
    image = os.urandom(50_000)  # an ESP32 app image is larger; 50 KB is 58 chunks of 900 bytes
    chunks = firmware_chunks(firmware_payload(image, key, "ward3", 7), "ward3", 7, message_id=1, chunk_size=900)
    verdict, flashed = _deliver(board, chunks, public)
    assert verdict == "ready 1 version 7 bytes 50000"
    assert flashed == image


@pytest.mark.parametrize("case, reason", [
    ("other_key", "bad_signature"), ("not_newer", "not_newer"), ("other_fleet_in_head", "wrong_fleet"),
    ("tampered_image", "digest_mismatch"), ("out_of_order", "out_of_order"), ("truncated", "incomplete"),
])
def test_bad_releases_are_refused(board, case, reason):
    from training.codegen.release import SIGNED_HEAD, firmware_chunks, firmware_payload

    key, public = _keys()
    image = os.urandom(5_000)
    payload = firmware_payload(image, key, "ward3", 7)
    if case == "other_key":
        payload = firmware_payload(image, _keys()[0], "ward3", 7)
    elif case == "not_newer":
        payload = firmware_payload(image, key, "ward3", 6)
    elif case == "other_fleet_in_head":
        payload = firmware_payload(image, key, "ward4", 7)
    elif case == "tampered_image":  # a valid head for the original image, one byte of the image changed
        payload = payload[:SIGNED_HEAD.size + 64 + 100] + bytes([payload[SIGNED_HEAD.size + 64 + 100] ^ 1]) + \
            payload[SIGNED_HEAD.size + 64 + 101:]
    chunks = firmware_chunks(payload, "ward3", 7, message_id=2, chunk_size=512)
    if case == "out_of_order":
        chunks[3], chunks[4] = chunks[4], chunks[3]
    elif case == "truncated":
        chunks = chunks[:-1]
    verdict, _ = _deliver(board, chunks, public)
    assert verdict == f"refused {reason}"


def test_cli_release_with_the_fleet_release_key_is_accepted_by_the_board(board, tmp_path):
    """`pulsewire keys` + `pulsewire firmware release --out`: the chunks a broker would carry."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

    from tools.cli import main

    assert main(["keys", "--out", str(tmp_path / "keys")]) == 0
    image = os.urandom(3000)
    (tmp_path / "app.bin").write_bytes(image)
    assert main(["firmware", "release", "--image", str(tmp_path / "app.bin"), "--signing-key",
                 str(tmp_path / "keys" / "aggregator.key"), "--fleet", "ward3", "--version", "9",
                 "--out", str(tmp_path / "chunks.bin")]) == 0
    public = load_pem_public_key((tmp_path / "keys" / "aggregator.pub").read_bytes()).public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    raw, chunks = (tmp_path / "chunks.bin").read_bytes(), []
    while raw:
        n = struct.unpack_from("<I", raw)[0]
        chunks.append(raw[4:4 + n])
        raw = raw[4 + n:]
    verdict, flashed = _deliver(board, chunks, public)
    assert verdict == "ready 1 version 9 bytes 3000" and flashed == image
