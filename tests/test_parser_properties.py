"""Property-based tests of the parsers a user's files go through: whatever the bytes, the
manifest, vocabulary and token-map readers give a result or an ``XasrError``, never another
exception (hypothesis generates the inputs)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xasr.data.manifest import read_manifest
from xasr.data.vocab import CharVocab, load_vocab, vocab_from_json
from xasr.errors import XasrError
from xasr.transfer.vocab_map import map_tokens, parse_user_map, read_user_map

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# No subnormal floats: train() flushes denormals process-wide (torch.set_flush_denormal), and
# hypothesis refuses to generate them then.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
# Rows that look like manifest lines, so most examples get past the JSON layer: the two
# required keys with string values (odd paths included), the optional ones anything.
optional_keys = {"duration": json_values, "lang": json_values, "id": json_values}
manifest_rows = st.fixed_dictionaries(
    {"audio_filepath": st.text(max_size=20), "text": st.text(max_size=20)},
    optional=optional_keys,
) | st.fixed_dictionaries(
    {},
    optional={"audio_filepath": json_values, "text": json_values, **optional_keys},
)
line_endings = st.sampled_from(["\n", "\r\n", "\r", ""])


def parse(path):
    try:
        return read_manifest(path)
    except XasrError:
        return None


@SETTINGS
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".csv", ".json"]))
def test_manifest_from_any_bytes(tmp_path, data, suffix):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(data)
    parse(path)


@SETTINGS
@given(
    rows=st.lists(manifest_rows | json_values, max_size=4),
    ending=line_endings,
    bom=st.booleans(),
)
def test_manifest_from_json_like_lines(tmp_path, rows, ending, bom):
    path = tmp_path / "m.jsonl"
    text = "".join(json.dumps(row) + (ending or "\n") for row in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    utterances = parse(path)
    if utterances is not None:  # what is accepted is well-formed
        for utt in utterances:
            assert isinstance(utt.text, str) and utt.audio_filepath.is_absolute()
            assert utt.duration is None or utt.duration >= 0
            assert utt.lang is None or isinstance(utt.lang, str)


@SETTINGS
@given(
    lines=st.lists(st.text(max_size=30), max_size=4),
    ending=line_endings,
)
def test_csv_manifest_from_any_text(tmp_path, lines, ending):
    path = tmp_path / "m.csv"
    path.write_text((ending or "\n").join(lines), encoding="utf-8", errors="surrogatepass")
    parse(path)


@SETTINGS
@given(data=json_values)
def test_vocabulary_from_any_json(data):
    try:
        vocab = vocab_from_json(data)
    except XasrError:
        return
    assert vocab.tokens[:2] == ["<blank>", "<unk>"]


@SETTINGS
@given(data=st.binary(max_size=200))
def test_vocabulary_file_from_any_bytes(tmp_path, data):
    (tmp_path / "vocab.json").write_bytes(data)
    try:
        load_vocab(tmp_path)
    except XasrError:
        pass


@SETTINGS
@given(text=st.text(max_size=80))
def test_token_map_from_any_text(text):
    try:
        pairs = parse_user_map(text)
    except XasrError:
        return
    assert all(" " not in k and " " not in v for k, v in pairs.items())


@SETTINGS
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".txt", ".json"]))
def test_token_map_file_from_any_bytes(tmp_path, data, suffix):
    path = tmp_path / f"map{suffix}"
    path.write_bytes(data)
    try:
        user_map = read_user_map(path)
    except XasrError:
        return
    # and any accepted map gives a token map: every target token copied, mapped or new
    target = CharVocab.from_texts(["grüße aus köln"]).tokens
    source = CharVocab.from_texts(["greetings from cologne"]).tokens
    token_map = map_tokens(target, source, user_map)
    placed = set(token_map.copied) | set(token_map.mapped) | set(token_map.new)
    assert placed == set(range(len(target)))
