"""`prepare_corpus("fillets", ...)`: Fish Fillets NG's voice acting, on a small fake tree in the
installed layout (the real file names, Lua escapes, a stereo 22.05 kHz file, a sound effect, an
empty file, a line with digits, a line without a transcript)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xasr.data.corpora import prepare_corpus
from xasr.data.fillets import HeldOut, read_dialogs
from xasr.data.manifest import read_manifest
from xasr.errors import DataError, XasrError

GAME = Path("usr/share/games/fillets-ng")


def voice(path: Path, seconds: float, rate: int = 22_050, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sf.write(str(path), np.stack([audio] * channels, axis=1), rate, format="OGG")


def dialogs(path: Path, lines: dict[str, tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n-- Init\n"
    for key, (english, czech) in lines.items():
        body += f'\ndialogId("{key}", "font_small", "{english}")\ndialogStr(\n"{czech}")\n\n'
    path.write_text(body, encoding="utf-8")


@pytest.fixture
def game(tmp_path) -> Path:
    """An unpacked package: three levels (rooms) of Czech voices."""
    root = tmp_path / "unpacked" / GAME
    dialogs(root / "script/airplane/dialogs_cs.lua", {
        "let-m-divna": ("What kind of strange ship is that?", "Co je to za divnou loď?"),
        "let-v-vrak2": ("The airplane Poseidon 737.", "Letadlo Poseidon 737."),
        "let-v-oko": ("A \\\"glass\\\" eye.", "Skleněné \\\"oko\\\"."),
        "let-v-nic": ("Nothing.", ""),
    })  # fmt: skip
    voice(root / "sound/airplane/cs/let-m-divna.ogg", 2.0)
    voice(root / "sound/airplane/cs/let-v-vrak2.ogg", 2.5)  # digits: dropped by the rules
    voice(root / "sound/airplane/cs/let-v-oko.ogg", 1.5, 44_100, channels=2)
    voice(root / "sound/airplane/cs/let-v-nic.ogg", 1.0)  # no transcript: dropped
    voice(root / "sound/airplane/cs/let-x-bum.ogg", 0.5)  # a sound effect
    (root / "sound/airplane/cs/let-m-prazdny.ogg").write_bytes(b"")  # an empty file
    dialogs(root / "script/barrel/dialogs_cs.lua", {"bar-m-sud": ("A barrel.", "Sud.")})
    voice(root / "sound/barrel/cs/bar-m-sud.ogg", 1.0)
    dialogs(root / "script/cave/dialogs_cs.lua", {"jes-v-tma": ("Dark.", "Je tu tma.")})
    voice(root / "sound/cave/cs/jes-v-tma.ogg", 1.0)
    voice(root / "sound/cave/cs/jes-v-navic.ogg", 1.0)  # a file the script has no line for
    return tmp_path / "unpacked"


def test_the_lua_dialogs_are_read_with_their_escapes(game):
    read = read_dialogs(game / GAME / "script/airplane/dialogs_cs.lua")
    assert read["let-m-divna"] == ("What kind of strange ship is that?", "Co je to za divnou loď?")
    assert read["let-v-oko"] == ('A "glass" eye.', 'Skleněné "oko".')


def test_fillets_manifests_counts_and_whole_levels(game, tmp_path):
    held = HeldOut(dev_levels=1, test_levels=1, seed=3)
    prepared = prepare_corpus("fillets", game, tmp_path / "out", lang="cs", held_out=held)
    assert prepared.skipped == {
        "sound effect": 1, "empty or unreadable audio": 1, "no line in the script": 1,
    }  # fmt: skip
    rows = {split: read_manifest(path) for split, path in prepared.manifests.items()}
    levels = {split: {u.extra["level"] for u in utts} for split, utts in rows.items()}
    assert sorted(levels) == ["dev", "test", "train"]
    assert all(len(found) == 1 for found in levels.values())  # one level each, none in two
    assert set.union(*levels.values()) == {"airplane", "barrel", "cave"}
    everything = {u.id: u for utts in rows.values() for u in utts}
    assert set(everything) == {"let-m-divna", "let-v-oko", "bar-m-sud", "jes-v-tma"}
    divna = everything["let-m-divna"]
    assert divna.text == "co je to za divnou loď" and divna.lang == "cs"
    assert divna.extra["speaker"] == "m"
    assert divna.extra["translation"] == "What kind of strange ship is that?"
    stereo = everything["let-v-oko"]
    info = sf.info(str(stereo.audio_filepath))
    assert (info.samplerate, info.channels) == (16_000, 1)
    assert stereo.duration == pytest.approx(1.5, abs=0.01)
    airplane = next(s for s, found in levels.items() if "airplane" in found)
    summary = prepared.summary[airplane]
    assert "dropped 1 (digits)" in summary and "dropped 1 (empty after normalisation)" in summary


def test_fillets_splits_by_minutes_are_seeded(game, tmp_path):
    def levels(seed: int, out: str) -> dict:
        held = HeldOut(dev_minutes=0.01, test_minutes=0.01, seed=seed)
        prepared = prepare_corpus("fillets", game, tmp_path / out, lang="cs", held_out=held)
        return {
            s: {u.extra["level"] for u in read_manifest(p)} for s, p in prepared.manifests.items()
        }

    assert levels(1, "a") == levels(1, "b")
    assert any(levels(seed, f"s{seed}") != levels(1, "a") for seed in range(2, 8))


def test_fillets_refuses_a_folder_without_the_game_and_held_out_splits_taking_all(game, tmp_path):
    with pytest.raises(DataError, match="no Fish Fillets NG data"):
        prepare_corpus("fillets", tmp_path, tmp_path / "out", lang="cs")
    with pytest.raises(DataError, match="take every level"):
        prepare_corpus("fillets", game, tmp_path / "out", lang="cs",
                       held_out=HeldOut(dev_levels=2, test_levels=1))  # fmt: skip


def test_a_synthetic_twin_speaks_the_same_lines_in_the_same_splits(game, tmp_path):
    """XLT-Synth's Czech voice renders the real corpus's lines: the same ids and texts per
    split, training voice variants for train and held-out ones elsewhere; a second call with
    the same lines reuses the build, another line rebuilds it."""
    from xasr.data.synth.paired import synth_paired
    from xasr.data.synth.plan import HELDOUT_VARIANTS, TRAIN_VARIANTS

    held = HeldOut(dev_levels=1, test_levels=1, seed=3)
    real = prepare_corpus("fillets", game, tmp_path / "real", lang="cs", held_out=held).manifests
    twin = synth_paired(real, tmp_path / "synth", "cs", workers=1, progress=False)
    assert set(twin) == set(real)
    for split in real:
        real_lines, synthetic = read_manifest(real[split]), read_manifest(twin[split])
        assert [(u.id, u.text) for u in synthetic] == [(u.id, u.text) for u in real_lines]
        variants = TRAIN_VARIANTS if split == "train" else HELDOUT_VARIANTS
        assert all(u.extra["variant"] in variants and u.extra["voice"] == "cs" for u in synthetic)
        assert all(u.duration > 0.2 and u.extra["paired_audio"] for u in synthetic)
    first = twin["train"].stat().st_mtime_ns
    assert synth_paired(real, tmp_path / "synth", "cs", workers=1, progress=False) == twin
    assert twin["train"].stat().st_mtime_ns == first
    changed = tmp_path / "changed.jsonl"
    line = read_manifest(real["dev"])[0]
    changed.write_text(
        json.dumps({**line.to_json(), "text": line.text + " navíc"}, ensure_ascii=False) + "\n"
    )
    again = synth_paired({"dev": changed}, tmp_path / "synth", "cs", workers=1, progress=False)
    assert read_manifest(again["dev"])[0].text.endswith("navíc")


def test_a_grid_prepares_the_corpus_and_its_twin_with_the_same_lines(game, tmp_path):
    """Grid targets `corpus: fillets` (prepared when the experiment runs, once) and `paired:`
    (its synthetic twin): each size's training prefix holds the same lines in both."""
    import yaml

    from xasr.experiments.kinds.grid import GridKind

    config = {
        "name": "real-cs", "out": str(tmp_path / "out"), "bases": ["en-small"],
        "targets": {
            "cs": {"corpus": "fillets", "dir": str(game), "lang": "cs", "dev_levels": 1,
                   "test_levels": 1, "seed": 3},
            "cs-synth": {"paired": "cs", "lang": "cs"},
        },
        "train_minutes": [0.02], "seeds": [0], "budget": {"steps": 2},
    }  # fmt: skip
    path = tmp_path / "real-cs.yaml"
    path.write_text(yaml.safe_dump(config))
    kind = GridKind()
    exp = kind.load(path, None)
    _, targets = kind.prepare(exp, progress=False)
    real, twin = (read_manifest(targets[t].train[0.02]) for t in ("cs", "cs-synth"))
    assert [u.id for u in real] == [u.id for u in twin] and real
    assert all(u.extra["paired_audio"] for u in twin)
    spec = tmp_path / "out" / "data" / "cs" / "corpus" / "corpus-spec.json"
    first = spec.stat().st_mtime_ns
    kind.prepare(exp, progress=False)  # prepared once
    assert spec.stat().st_mtime_ns == first
    config["targets"]["cs-synth"]["paired"] = "cs-synth"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(XasrError, match="paired must name another target"):
        kind.load(path, None)
