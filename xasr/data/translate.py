"""Translating manifests offline: ``xasr translate`` adds a ``translation`` (and
``translation_lang``, ``translation_kind``) to every line, for speech-translation training.

Backends, each a small object with ``translate(lines) -> (translations, untranslated words)``
and ``info()``:

* ``dictionary``: word by word through a FreeDict dictionary (``xasr.data.lexicon``), the weak
  "low-resource MT"; a word without an entry stays as it is and counts as untranslated;
* ``apertium``: Debian's rule-based MT (``apertium-eng-spa``: mode ``eng-spa``), every line
  through one process (a mode list such as ``eng-spa,es-pt`` pivots); words it does not know
  (marked ``*`` by Apertium) count as untranslated and lose the mark;
* ``command``: any program that reads lines on stdin and writes one translation per line;
* ``hf``: a Hugging Face sequence-to-sequence translation model (Marian and alike) from a local
  directory, batched (needs transformers: ``pip install -e '.[hf]'``, which ``make`` does).

Lines that already have a translation into the language asked for keep it (human
translations, say); a manifest whose every line has one is written as it is (kind ``given``).
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from xasr.data.manifest import read_manifest, write_manifest
from xasr.data.text import normalize_text
from xasr.errors import DataError, XasrError
from xasr.io import output_file

log = logging.getLogger(__name__)

BACKENDS = ("dictionary", "apertium", "command", "hf")
UNKNOWN_MARK = re.compile(r"(?:(?<=\s)|(?<=^)|(?<=['’-]))[*#@](?=\w)")
NORMALISED = ("en", "es", "de", "it", "pt", "zh")  # xasr.data.text.normalize_text's languages


class DictionaryTranslator:
    name = "dictionary"

    def __init__(self, source: str, target: str, lexicon=None):
        from xasr.data.lexicon import FreeDict

        self.source, self.target = source, target
        self.lexicon = lexicon or FreeDict.pair(source, target)

    def translate(self, lines: list[str]) -> tuple[list[str], int]:
        out, missing = [], 0
        for line in lines:
            words = []
            for word in line.split():
                translated = self.lexicon.translate(word)
                missing += translated is None
                words.append(translated or word)
            out.append(" ".join(words))
        return out, missing

    def info(self) -> dict:
        return {"name": self.name, "dictionary": str(self.lexicon.index_path)}


class CommandTranslator:
    """``command`` (a shell-style string) gets all lines on stdin at once, one per line, and
    must print one line per input line."""

    name = "command"

    def __init__(self, command: str):
        self.argv = shlex.split(command)
        if not self.argv or shutil.which(self.argv[0]) is None:
            raise XasrError(f"--command {command!r}: {self.argv[:1]} is not an installed program")

    def run(self, argv: list[str], lines: list[str]) -> list[str]:
        if any("\n" in line for line in lines):
            raise DataError("a text to translate holds a line break; manifests keep one per line")
        done = subprocess.run(
            argv,
            input="".join(line + "\n" for line in lines),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            message = done.stderr.strip().splitlines()[-1:] or ["no message"]
            raise XasrError(f"{' '.join(argv)} failed (exit {done.returncode}): {message[0]}")
        out = done.stdout.splitlines()
        if len(out) != len(lines):
            raise XasrError(
                f"{' '.join(argv)} printed {len(out)} lines for {len(lines)}: a translator "
                "must print one line per input line"
            )
        return out

    def translate(self, lines: list[str]) -> tuple[list[str], int]:
        return self.run(self.argv, lines), 0

    def info(self) -> dict:
        return {"name": self.name, "command": " ".join(self.argv)}


class ApertiumTranslator(CommandTranslator):
    """``modes``: Apertium modes applied in turn (``eng-spa``; ``eng-spa,es-pt`` pivots)."""

    name = "apertium"

    def __init__(self, modes: str):
        if shutil.which("apertium") is None:
            raise XasrError(
                "apertium is not installed: install Debian's apertium and its language pair "
                "(e.g. apertium-eng-spa for mode eng-spa)"
            )
        self.modes = [m for m in modes.split(",") if m]
        self.argv = ["apertium"]

    def translate(self, lines: list[str]) -> tuple[list[str], int]:
        if self.modes and self.modes[0].startswith("eng"):
            # xasr's transcripts are lower case; Apertium knows the pronoun only as "I"
            lines = [re.sub(r"(?<!\S)i(?!\S)", "I", line) for line in lines]
        for mode in self.modes:
            lines = self.run(["apertium", mode], lines)
        # Apertium marks an unknown word *word, a generation error #word, an untranslated
        # lemma @word; a mark may follow an apostrophe (o'*brien)
        unknown = sum(bool(UNKNOWN_MARK.search(w)) for line in lines for w in line.split())
        return [UNKNOWN_MARK.sub("", line) for line in lines], unknown

    def info(self) -> dict:
        return {"name": self.name, "modes": self.modes}


class HfTranslator:
    """``directory``: a local model directory (``save_pretrained``) with its tokenizer."""

    name = "hf"

    def __init__(self, directory: str | Path, batch_size: int = 16, max_new_tokens: int = 128):
        self.directory = Path(directory)
        if not (self.directory / "config.json").is_file():
            raise XasrError(
                f"--model {directory}: not a Hugging Face model directory (no config.json)"
            )
        try:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        except ImportError:
            raise XasrError("the hf backend needs transformers: pip install -e '.[hf]'") from None
        self.tokenizer = AutoTokenizer.from_pretrained(self.directory, local_files_only=True)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(self.directory, local_files_only=True)
        self.model.eval()
        # never past the model's position table (a small model's may be short)
        positions = getattr(self.model.config, "max_position_embeddings", None) or max_new_tokens
        self.batch_size, self.max_new_tokens = batch_size, min(max_new_tokens, positions - 1)

    def translate(self, lines: list[str]) -> tuple[list[str], int]:
        import torch

        out = []
        for start in range(0, len(lines), self.batch_size):
            batch = self.tokenizer(
                lines[start : start + self.batch_size], return_tensors="pt", padding=True
            )
            batch.pop("token_type_ids", None)
            with torch.inference_mode():
                ids = self.model.generate(**batch, max_new_tokens=self.max_new_tokens)
            out += self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return out, 0

    def info(self) -> dict:
        return {"name": self.name, "model": str(self.directory)}


def make_translator(
    backend: str,
    source: str,
    target: str,
    command: str | None = None,
    model: str | None = None,
):
    if backend == "dictionary":
        return DictionaryTranslator(source, target)
    if backend == "apertium":
        iso3 = {"en": "eng", "es": "spa", "pt": "por", "it": "ita", "fr": "fra", "ca": "cat"}
        return ApertiumTranslator(
            command or f"{iso3.get(source, source)}-{iso3.get(target, target)}"
        )
    if backend == "hf":
        if not model:
            raise XasrError("--backend hf needs --model DIR (a local translation model)")
        return HfTranslator(model)
    if backend == "command":
        if not command:
            raise XasrError("--backend command needs --command 'PROGRAM ARGS'")
        return CommandTranslator(command)
    raise XasrError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")


def translate_manifest(
    manifest: str | Path,
    out: str | Path,
    to: str,
    backend: str = "dictionary",
    source_lang: str | None = None,
    command: str | None = None,
    translator=None,
    model: str | None = None,
) -> dict:
    """Write ``out``: ``manifest`` with ``translation`` (normalised as ``to``'s text where it
    can be), ``translation_lang`` and ``translation_kind`` on every line. Returns coverage
    figures: lines, lines translated (non-empty), words left untranslated, and the backend.
    ``translator``: a backend object to use instead of ``backend`` (``make_translator``)."""
    out = output_file(out, "--out")
    utterances = read_manifest(manifest)
    if not utterances:
        raise DataError(f"{manifest} has no lines to translate")
    given = [
        bool(u.extra.get("translation")) and u.extra.get("translation_lang") == to
        for u in utterances
    ]
    if all(given):
        write_manifest(out, utterances)
        return {"lines": len(utterances), "translated": len(utterances), "kind": "given"}
    source_lang = source_lang or utterances[0].lang
    if not source_lang:
        raise XasrError(f"{manifest} has no lang field: name the source language with --from")
    translator = translator or make_translator(backend, source_lang, to, command, model)
    todo = [u for u, g in zip(utterances, given) if not g]  # given translations are kept
    texts, untranslated = translator.translate([u.text for u in todo])
    unnormalised = 0
    for utterance, text in zip(todo, texts):
        normalised = normalize_text(text, to) if to in NORMALISED else None
        unnormalised += normalised is None and bool(text.strip())
        utterance.extra.update(
            translation=normalised or " ".join(text.lower().split()),
            translation_lang=to,
            translation_kind=translator.name,
        )
    write_manifest(out, utterances)
    figures = {
        "lines": len(utterances),
        "translated": sum(bool(u.extra["translation"]) for u in todo),
        "given": sum(given),
        # kept as the translator wrote them (lower case): digits, symbols, foreign letters
        "unnormalised": unnormalised,
        "untranslated_words": untranslated,
        "words": sum(len(u.text.split()) for u in todo),
        "kind": translator.name,
        "backend": translator.info(),
    }
    log.info("translated %s -> %s: %s", manifest, out, figures)
    return figures
