"""The command line: results on stdout/files, user errors as one line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xasr.cli import build_parser, main
from xasr.cli.options import train_config
from xasr.config import TrainConfig


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_evaluate_json(en_model, corpus, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--model",
            str(en_model),
            "--manifest",
            str(corpus.mixed),
            "--json",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.read_text(encoding="utf-8"))
    assert printed["wer"] == written["wer"] and printed["cer"] == written["cer"]
    assert set(written["by_language"]) == {"en", "de"}
    assert len(written["hypotheses"]) == 6
    assert all({"id", "ref", "hyp"} <= set(u) for u in written["hypotheses"])


def test_transfer_without_from_is_a_one_line_error(xasr, corpus, tmp_path, subprocess_env):
    proc = subprocess.run(
        [
            xasr,
            "transfer",
            "--train",
            str(corpus.de_train),
            "--valid",
            str(corpus.de_dev),
            "--out",
            str(tmp_path / "run"),
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=600,  # a hang fails; a slow, shared CI machine does not
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("xasr transfer: error: --from is required")
    assert proc.stdout == ""
    assert not (tmp_path / "run").exists()


def test_transfer_from_a_missing_model(corpus, tmp_path, capsys):
    code = main(
        [
            "transfer",
            "--from",
            str(tmp_path / "nowhere"),
            "--train",
            str(corpus.de_train),
            "--valid",
            str(corpus.de_dev),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    assert code == 2
    line = error_line(capsys)
    assert line.startswith("xasr transfer: error: no model directory")


def test_transfer_scratch_needs_a_size(corpus, tmp_path, capsys):
    code = main(
        [
            "transfer",
            "--scratch",
            "--train",
            str(corpus.de_train),
            "--valid",
            str(corpus.de_dev),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2
    assert "--scratch without --from needs --size" in error_line(capsys)


def test_transfer_size_mismatch(en_model, corpus, tmp_path, capsys):
    code = main(
        [
            "transfer",
            "--from",
            str(en_model),
            "--size",
            "small",
            "--train",
            str(corpus.de_train),
            "--valid",
            str(corpus.de_dev),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    assert code == 2
    line = error_line(capsys)
    assert "architecture differs" in line and "d_model" in line


def test_train_with_a_bad_manifest_line(corpus, tmp_path, capsys):
    bad = tmp_path / "train.jsonl"
    lines = corpus.en_train.read_text(encoding="utf-8").splitlines()
    lines.insert(2, '{"audio_filepath": "x.wav", "text": "unterminated"')
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code = main(
        [
            "train",
            "--train",
            str(bad),
            "--valid",
            str(corpus.en_dev),
            "--out",
            str(tmp_path / "run"),
            "--size",
            "tiny",
            "--no-progress",
        ]
    )
    assert code == 2
    line = error_line(capsys)
    assert line.startswith("xasr train: error: ")
    assert f"{bad}:3:" in line
    assert not (tmp_path / "run").exists()


def test_train_with_unknown_size_or_config_key(corpus, tmp_path, capsys):
    args = [
        "train",
        "--train",
        str(corpus.en_train),
        "--valid",
        str(corpus.en_dev),
        "--out",
        str(tmp_path / "run"),
    ]
    assert main([*args, "--size", "huge"]) == 2
    assert "unknown model size 'huge'" in error_line(capsys)
    config = tmp_path / "recipe.yaml"
    config.write_text("max_steps: 10\nlearning_rate: 0.1\n")
    assert main([*args, "--size", "tiny", "--config", str(config)]) == 2
    line = error_line(capsys)
    assert "unknown key(s) learning_rate" in line and str(config) in line


def test_train_options_override_the_config(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("max_steps: 10\nlr: 0.01\nval_every: 3\n")
    args = build_parser().parse_args(
        [
            "train",
            "--train",
            "t",
            "--valid",
            "v",
            "--out",
            "o",
            "--config",
            str(config),
            "--max-steps",
            "7",
            "--workers",
            "0",
            "--batch-seconds",
            "12.5",
            "--no-spec-augment",
        ]
    )
    cfg = train_config(args)
    assert cfg.max_steps == 7 and cfg.lr == 0.01 and cfg.val_every == 3
    assert cfg.num_workers == 0 and cfg.max_batch_seconds == 12.5 and cfg.spec_augment is False
    assert cfg.warmup_steps == TrainConfig().warmup_steps  # unset options keep the default
    args = build_parser().parse_args(
        [
            "transfer",
            "--train",
            "t",
            "--valid",
            "v",
            "--out",
            "o",
            "--freeze-layers",
            "2",
            "--freeze-steps",
            "50",
        ]
    )
    cfg = train_config(args)
    assert cfg.freeze_layers == 2 and cfg.freeze_steps == 50 and cfg.spec_augment is True


def test_transcribe(en_model, corpus, capsys):
    rows = corpus.en_rows[:2]
    paths = [str(corpus.root / r["audio_filepath"]) for r in rows]
    assert main(["transcribe", "--model", str(en_model), "--device", "cpu", *paths]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == paths


def test_evaluate_with_a_missing_model_dir(corpus, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path), "--manifest", str(corpus.en_dev)]) == 2
    assert "not an xasr model directory" in error_line(capsys)


@pytest.mark.parametrize("argv", [["train"], ["nonsense"]])
def test_argparse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_every_recipe_key_is_in_one_group():
    from dataclasses import fields

    from xasr.config import TRAIN_FLAGS, TRAIN_GROUPS

    grouped = [key for keys in TRAIN_GROUPS.values() for key in keys]
    assert sorted(grouped) == sorted(f.name for f in fields(TrainConfig))  # each key once
    assert set(TRAIN_FLAGS) <= set(grouped)


def help_of(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


META_FLAGS = ("--meta-transfer", "--inner-lr", "--meta-clip", "--k-train", "--k-valid")


@pytest.mark.parametrize("command", ["masks", "pretrain", "rank-sources"])
def test_a_command_shows_only_the_recipe_flags_it_uses(command, capsys):
    shown = help_of(command, capsys)
    assert "--lr" in shown and "--max-minutes" in shown and "--workers" in shown
    assert not [flag for flag in (*META_FLAGS, "--meta-tasks", "--freeze-layers") if flag in shown]
    if command == "pretrain":  # no transcripts read, frames masked by the task itself
        assert "--mixing" in shown and "--vocab" not in shown and "--no-spec-augment" not in shown
    else:  # one manifest a run, transferred: the vocabulary is of the source's kind
        assert "--mixing" not in shown and "--vocab " not in shown and "--vocab-size" in shown
    if command == "rank-sources":  # --steps, and early stopping off
        assert "--max-steps" not in shown and "--patience" not in shown
        assert "--skip-bad" not in shown


def test_train_and_transfer_show_meta_transfer_and_only_transfer_freezes(capsys):
    train, transfer = help_of("train", capsys), help_of("transfer", capsys)
    assert all(flag in train and flag in transfer for flag in META_FLAGS)
    assert "--freeze-layers" in transfer and "--freeze-layers" not in train
    assert "--vocab {" in train and "--vocab {" not in transfer  # a transfer keeps the kind


def test_choices_come_from_the_modules_that_own_them():
    from xasr.config import ARCH_FLAGS
    from xasr.data.translate import BACKENDS
    from xasr.decode.options import DECODERS

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # argparse keeps them there

    def choices(command: str, dest: str):
        action = next(a for a in commands[command]._actions if a.dest == dest)
        return tuple(action.choices)

    assert choices("transcribe", "decoder") == choices("evaluate", "decoder") == DECODERS
    assert choices("translate", "backend") == choices("transfer", "translate_with") == BACKENDS
    assert choices("train", "arch") == choices("transfer", "arch") == tuple(ARCH_FLAGS)


def test_a_run_imports_only_its_commands_module(subprocess_env, tmp_path):
    code = (
        "import json, sys; from xasr.cli import main\n"
        "assert main(['translate', '--manifest', 'none.jsonl', '--to', 'es', '--out', 'o']) == 2\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('xasr.cli.'))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ["xasr.cli.data", "xasr.cli.options"]


def test_python_m_xasr_cli(subprocess_env):
    """The experiment engine's workers run ``python -m xasr.cli experiment ...``."""
    proc = subprocess.run(
        [sys.executable, "-m", "xasr.cli", "experiment", "--help"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "--dry-run" in proc.stdout
