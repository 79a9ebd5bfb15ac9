"""FreeDict dictionaries in dictd format: a file the test writes, and Debian's when installed."""

from __future__ import annotations

import gzip

import pytest

from xasr.data.lexicon import B64, FreeDict, dictd_number
from xasr.errors import DataError


def encode(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 64)
        digits = B64[digit] + digits
        if not number:
            return digits


def write_dictd_entries(root, name: str, entries: list[tuple[str, str]]):
    """(headword, definition text) pairs, a headword listed once per entry, in order, written
    as NAME.index + NAME.dict.dz (dictd's format)."""
    data, lines = b"", ["00databaseshort\tA\tB"]
    for word, text in entries:
        raw = text.encode("utf-8")
        lines.append(f"{word}\t{encode(len(data))}\t{encode(len(raw))}")
        data += raw
    (root / f"{name}.index").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(root / f"{name}.dict.dz", "wb") as f:
        f.write(data)
    return root / f"{name}.index"


def write_dictd(root, name: str, entries: dict[str, str]):
    """entries: headword -> definition text; written as NAME.index + NAME.dict.dz."""
    return write_dictd_entries(root, name, list(entries.items()))


def test_dictd_numbers():
    assert dictd_number("B") == 1 and dictd_number("BA") == 64
    assert all(dictd_number(encode(n)) == n for n in (0, 63, 64, 4095, 123456))


def test_reads_senses_from_a_dictd_file(tmp_path):
    index = write_dictd(
        tmp_path,
        "freedict-spa-eng",
        {
            "mañana": "mañana /maɲˈana/\n1. morning\n2. tomorrow\n",
            "grande": "grande /ɡɾˈande/\nbig, great (coll.), large\n",
            "Casa": "casa /kˈasa/\nhouse; home <fem>\n",
        },
    )
    lexicon = FreeDict(index)
    assert lexicon.senses("mañana") == ["morning", "tomorrow"]
    assert lexicon.senses("grande") == ["big", "great", "large"]
    assert lexicon.translate("casa") == "house" and "CASA" in lexicon
    assert lexicon.translate("perro") is None and lexicon.senses("perro") == []
    assert FreeDict.pair("es", "en", root=tmp_path).translate("grande") == "big"


def test_picks_the_right_entry_of_several_and_skips_run_together_senses(tmp_path):
    write_dictd_entries(
        tmp_path,
        "freedict-eng-spa",
        [
            ("the", "The Hague /ðə heɪɡ/\nla haya\n"),
            ("the", "the /ð/\nel\n"),
            ("good", "good /ɡˈʊd/\ndespedida\n"),  # good-bye, filed under good
            ("good", "good /gud/\nbueno\n"),
            ("night", "night /nait/\nnoche\n"),
            ("last", "last /lɑːst/\nultimo\n"),
        ],
    )
    write_dictd_entries(
        tmp_path,
        "freedict-spa-eng",
        [
            ("bueno", "bueno /bweno/\ngood\n"),
            ("despedida", "despedida /despeðiða/\nfarewell\n"),
            ("anoche", "anoche /anotʃe/\nlastnight, last night\n"),
            ("el", "el /el/\nthe\n"),
            ("noche", "noche /notʃe/\nnight\n"),
        ],
    )
    english = FreeDict.pair("en", "es", root=tmp_path)
    assert english.translate("the") == "el"  # its own headword, not The Hague's
    assert english.translate("good") == "bueno"  # the entry that translates back to good
    spanish = FreeDict.pair("es", "en", root=tmp_path)
    # "lastnight" is no English word (not a headword of eng-spa): the next sense is taken
    assert spanish.translate("anoche") == "last night"


def test_a_missing_dictionary_names_its_package(tmp_path):
    with pytest.raises(DataError, match="dict-freedict-deu-eng"):
        FreeDict.pair("de", "en", root=tmp_path)


def test_debians_spanish_english_dictionary():
    try:
        lexicon = FreeDict.pair("es", "en")
    except DataError:
        pytest.skip("dict-freedict-spa-eng is not installed (make system installs it)")
    assert lexicon.translate("perro") == "dog"
    assert "tomorrow" in lexicon.senses("mañana")


# --- xasr translate ---------------------------------------------------------------------------


def manifest_of(tmp_path, texts, lang="en"):
    import json

    path = tmp_path / "m.jsonl"
    rows = [
        {"audio_filepath": f"a{i}.wav", "duration": 1.0, "text": t, "lang": lang, "id": f"u{i}"}
        for i, t in enumerate(texts)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def translated(path):
    import json

    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_dictionary_backend_translates_word_by_word(tmp_path):
    from xasr.data.translate import DictionaryTranslator, translate_manifest

    index = write_dictd(
        tmp_path, "freedict-eng-spa", {"dog": "dog\nperro\n", "big": "big\ngrande\n"}
    )
    translator = DictionaryTranslator("en", "es", FreeDict(index))
    figures = translate_manifest(
        manifest_of(tmp_path, ["big dog", "the dog"]),
        tmp_path / "es.jsonl",
        "es",
        translator=translator,
    )
    rows = translated(tmp_path / "es.jsonl")
    assert [r["translation"] for r in rows] == ["grande perro", "the perro"]
    assert {r["translation_kind"] for r in rows} == {"dictionary"}
    assert figures["untranslated_words"] == 1 and figures["lines"] == 2


def test_command_backend_and_given_translations(tmp_path):
    import json

    from xasr.data.translate import translate_manifest
    from xasr.errors import XasrError

    out = tmp_path / "up.jsonl"
    figures = translate_manifest(
        manifest_of(tmp_path, ["hola amigo", "que tal"]),
        out,
        "en",
        "command",
        command="tr a-z A-Z",
    )
    assert [r["translation"] for r in translated(out)] == ["hola amigo", "que tal"]  # normalised
    assert figures["kind"] == "command"
    again = translate_manifest(out, tmp_path / "same.jsonl", "en", "command", command="false")
    assert again["kind"] == "given"  # every line already has an English translation
    partly = tmp_path / "partly.jsonl"  # one line with a given translation, one without
    rows = translated(out)
    rows[1].pop("translation")
    partly.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    mixed = translate_manifest(partly, tmp_path / "p.jsonl", "en", "command", command="rev")
    assert [r["translation"] for r in translated(tmp_path / "p.jsonl")] == ["hola amigo", "lat euq"]
    assert mixed["given"] == 1 and mixed["translated"] == 1
    with pytest.raises(XasrError, match="one line per input line"):
        translate_manifest(
            manifest_of(tmp_path, ["a b", "c d"]),
            tmp_path / "x.jsonl",
            "en",
            "command",
            command="head -n 1",
        )
    with pytest.raises(XasrError, match="failed"):
        translate_manifest(
            manifest_of(tmp_path, ["a b"]), tmp_path / "x.jsonl", "en", "command", command="false"
        )


def test_apertium_backend(tmp_path):
    import shutil

    from xasr.data.translate import translate_manifest

    if shutil.which("apertium") is None:
        pytest.skip("apertium is not installed (apt-get install apertium-eng-spa)")
    out = tmp_path / "es.jsonl"
    figures = translate_manifest(
        manifest_of(tmp_path, ["the dog eats in the house", "the zorblax is here"]),
        out,
        "es",
        "apertium",
    )
    rows = translated(out)
    assert rows[0]["translation"] == "el perro come en la casa"
    assert "zorblax" in rows[1]["translation"] and figures["untranslated_words"] == 1
    marks = translate_manifest(
        manifest_of(tmp_path, ["he is o'brien's friend", "i think so"]), out, "es", "apertium"
    )
    rows = translated(out)
    assert "*" not in rows[0]["translation"] and rows[1]["translation"] == "creo que sí"
    assert marks["untranslated_words"] == 1  # o'brien


def tiny_translation_model(directory):
    """A random Marian model and a word-level tokenizer, saved with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "the", "dog", "eats", "el", "perro", "come"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = MarianConfig(
        vocab_size=len(words),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        forced_eos_token_id=1,
    )
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    MarianMTModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def test_hf_backend_on_a_tiny_random_model(tmp_path):
    pytest.importorskip("transformers")
    from xasr.data.translate import translate_manifest

    tiny_translation_model(tmp_path / "mt")
    out = tmp_path / "es.jsonl"
    figures = translate_manifest(
        manifest_of(tmp_path, ["the dog eats", "the dog"]),
        out,
        "es",
        "hf",
        model=str(tmp_path / "mt"),
    )
    rows = translated(out)
    assert figures["kind"] == "hf" and figures["lines"] == 2
    vocabulary = {"the", "dog", "eats", "el", "perro", "come"}
    assert all(set(r["translation"].split()) <= vocabulary for r in rows)  # the model's words


def test_translate_command_line_errors_name_the_command(tmp_path, capsys):
    from xasr.cli import main

    argv = ["translate", "--manifest", str(tmp_path / "none.jsonl"), "--to", "es"]
    assert main([*argv, "--backend", "command", "--command", "cat", "--out", "o.jsonl"]) == 2
    assert capsys.readouterr().err.startswith("xasr translate: error:")


CEDICT_LINES = [
    "# CC-CEDICT, a few lines written by the test",
    "吃飯 吃饭 [chi1 fan4] /to have a meal/to eat/",
    "電影 电影 [dian4 ying3] /movie/film/CL:部[bu4],個|个[ge4]/",
    "我 我 [wo3] /I/me/my/",
    "看 看 [kan4] /to see/to look at/",
    "李 李 [Li3] /surname Li/",
    "李 李 [li3] /plum/",
    "個 个 [ge4] /CL:個|个[ge4]/individual/",
    "電 电 [dian4] /electric/electricity/",
]


def test_cedict_segments_by_the_dictionary_and_translates_plain_glosses(tmp_path):
    import pickle

    from xasr.data.lexicon import Cedict

    text = tmp_path / "cedict_ts.u8"
    text.write_text("\n".join(CEDICT_LINES) + "\n", encoding="utf-8")
    lexicon = Cedict(text)
    # forward maximum matching: the longest headword first, an unknown character alone
    assert lexicon.segment("我看电影 吃饭好") == ["我", "看", "电影", "吃饭", "好"]
    assert lexicon.segment("我看電影") == ["我", "看", "電影"]  # traditional headwords too
    assert lexicon.translate("吃饭") == "have a meal"  # "to " dropped
    assert lexicon.translate("电影") == "movie"
    assert lexicon.translate("我") == "i"
    assert lexicon.translate("李") == "plum"  # not the surname's entry
    assert lexicon.translate("个") == "individual"  # not the classifier note
    assert lexicon.translate("好") is None
    # the PyPI package's form: a pickled list of the lines, read without running code
    dat = tmp_path / "dump.dat"
    dat.write_bytes(pickle.dumps(CEDICT_LINES[1:]))
    assert Cedict(dat).translate("电影") == "movie"

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    dat.write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(DataError, match="holds an object"):
        Cedict(dat)


def test_code_switched_chinese_keeps_stretches_without_spaces(tmp_path):
    import numpy as np

    from xasr.data.lexicon import Cedict
    from xasr.data.synth.codeswitch import switch_words

    text = tmp_path / "cedict_ts.u8"
    text.write_text("\n".join(CEDICT_LINES) + "\n", encoding="utf-8")
    lexicon = Cedict(text)
    for seed in range(10):
        cs = switch_words("我看电影然后吃饭", lexicon, np.random.default_rng(seed), "zh", "en")
        assert cs is not None
        pieces = [(s.lang, cs.text[s.start : s.end]) for s in cs.stretches]
        assert " ".join(p for _, p in pieces) == cs.text
        for lang, piece in pieces:
            assert (" " not in piece) if lang == "zh" else piece.isascii()
        assert "然后" in cs.text  # no entry: never switched
