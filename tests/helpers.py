"""Checks shared by the unit tests of several dlmed modules."""

import inspect
import re
import runpy


def assert_import_has_no_side_effects(module, expected_name, tmp_path, monkeypatch):
    """Running ``module``'s top-level code afresh creates no folder (data directory or home)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DLMED_DATA", str(tmp_path / "data"))
    # run_path executes the module afresh without replacing the imported one (a reload would
    # give its exception classes new identities under the other tests' feet).
    namespace = runpy.run_path(module.__file__)
    assert expected_name in namespace, f"{module.__name__}: expected {expected_name} defined, got {sorted(namespace)[:10]}..."
    assert not (tmp_path / "data").exists(), f"importing {module.__name__} created the data directory"
    assert list(home.iterdir()) == [], f"importing {module.__name__} wrote into the home folder"


def assert_public_api_documented(module, minimum):
    """Every public function and class defined in ``module`` has a docstring (and there are ``minimum`` or more)."""
    public = [
        obj
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module.__name__
    ]
    assert len(public) >= minimum, f"{module.__name__}: expected at least {minimum} public names, got {len(public)}"
    undocumented = [obj.__name__ for obj in public if not (obj.__doc__ or "").strip()]
    assert undocumented == [], f"{module.__name__}: public names without a docstring: {undocumented}"


def squash(text):
    """Text without any white space, so highlighted or re-wrapped code still matches."""
    return re.sub(r"\s+", "", text)


RUN = 40  # characters: a run this long of a hidden-test line is a leak, however it was cut
_ANCHOR = RUN // 2  # every 40-character run of a line contains one of its 20-character blocks at a multiple of 20
_LARGE = 2**20  # decoded data larger than this is not searched for further encoded tokens (that would take minutes)


def _decoded(data: bytes, depth: int = 2):
    """``data`` and everything the standard library's decompressors and decoders make of it (``depth`` levels)."""
    import bz2
    import gzip
    import lzma
    import zlib

    found = [data]
    if depth:
        for decompress in (zlib.decompress, gzip.decompress, bz2.decompress, lzma.decompress,
                           lambda raw: zlib.decompress(raw, -15)):
            try:
                found += _decoded(decompress(data), depth - 1)
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
                pass
        if len(data) <= _LARGE or depth == 2:
            text = data.decode("latin-1")
            found += [item for token in _candidate_tokens(text) for item in _decoded_token(token, depth - 1)]
    return found


def _candidate_tokens(text: str):
    """Runs of characters that could be base64/32/85 or hex text (what a student could print encoded)."""
    return set(re.findall(r"[A-Za-z0-9+/=_-]{24,}", text) + re.findall(r"[!-u]{24,}", text)  # base64/32, ascii85
               + re.findall(r"[0-9A-Za-z!#$%&()*+;<=>?@^_`{|}~-]{24,}", text)  # base85
               + re.findall(r"[0-9a-fA-F]{48,}", text))


def _decoded_token(token: str, depth: int):
    import base64
    import binascii

    decoders = (base64.b64decode, base64.urlsafe_b64decode, base64.b32decode, base64.b85decode, base64.a85decode,
                bytes.fromhex)
    results = []
    for decode in decoders:
        for candidate in (token, token + "=" * (-len(token) % 4), token + "=" * (-len(token) % 8)):
            try:
                results += _decoded(decode(candidate), depth)
                break
            except (ValueError, binascii.Error, TypeError):
                continue
    return results


def readings(text: str):
    """Every text a student could recover from ``text`` with the standard library.

    The text itself, reversed and rot13; and, for every token that looks encoded
    (base64, base32, base85, ascii85, hex), its decodings, decompressed with zlib, gzip,
    bz2 or lzma where that works (two levels deep: base64 of zlib, hex of gzip, ...).
    """
    import codecs

    found = [text, text[::-1], codecs.encode(text, "rot13")]
    for data in _decoded(text.encode("utf-8", "surrogateescape"))[1:]:
        decoded = data.decode("utf-8", "ignore")
        if sum(character.isprintable() or character.isspace() for character in decoded) < 0.9 * len(decoded):
            continue  # bytes that decode to no text: a token that only looked encoded
        found += [decoded, decoded[::-1], codecs.encode(decoded, "rot13")]
    return found


def _runs_found(line: str, text: str, allowed: str) -> bool:
    """True when ``text`` holds a run of ``RUN`` characters of ``line`` (both squashed) that ``allowed`` does not."""
    if len(line) < RUN:
        return line in text and line not in allowed
    for anchor_at in range(0, len(line) - _ANCHOR + 1, _ANCHOR):
        anchor = line[anchor_at:anchor_at + _ANCHOR]
        position = text.find(anchor)
        while position != -1:
            left = 0
            while left < anchor_at and left < position and line[anchor_at - left - 1] == text[position - left - 1]:
                left += 1
            right = 0
            end_line, end_text = anchor_at + _ANCHOR, position + _ANCHOR
            while end_line + right < len(line) and end_text + right < len(text) and line[end_line + right] == text[end_text + right]:
                right += 1
            matched = line[anchor_at - left:end_line + right]
            if len(matched) >= RUN and any(matched[i:i + RUN] not in allowed for i in range(len(matched) - RUN + 1)):
                return True
            position = text.find(anchor, position + 1)
    return False


def hidden_test_leaks(text: str, secret, allowed: str):
    """Hidden-test lines, or 40-character runs of them, in any reading of ``text`` (see :func:`readings`).

    ``secret`` are hidden-test lines; ``allowed`` is squashed text in which a run is no leak
    (visible code, the student's own submission).
    """
    everything = "\0".join(squash(reading) for reading in readings(text))  # \0: no run spans two readings
    return sorted(line for line in secret if _runs_found(squash(line), everything, allowed))
