"""N-gram language models: build them with KenLM's ``lmplz`` and decode CTC output with them.

Decoding is a CTC prefix beam search with shallow fusion through pyctcdecode: a beam's score is
its acoustic log-probability + ``lm_weight`` x the KenLM log-probability (natural log) of its
words + ``word_bonus`` x its number of words. Words the LM has never seen are penalised.

``lmplz`` and ``build_binary`` are not on PyPI: ``make lm-tools`` builds them from the C++ tree in
the kenlm source distribution into the virtual environment's ``bin`` (the Python ``kenlm``
package, which pyctcdecode uses, can only query a model).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xasr import checks
from xasr.data.vocab import SPACE, Vocab
from xasr.decode.strategy import CtcStrategy
from xasr.errors import DataError, XasrError
from xasr.io import output_file

if TYPE_CHECKING:  # no torch at import: `xasr transcribe --onnx` runs without it
    from torch import Tensor

BLANK_LABEL = ""  # pyctcdecode's CTC blank
UNK_LABEL = "⁇"  # pyctcdecode's unknown token (character vocabularies)
UNK_PIECE_LABEL = "▁⁇▁"  # ... and in a sentencepiece ("BPE") alphabet
WORD_START = "▁"  # sentencepiece's word boundary
UNIGRAMS_SUFFIX = ".unigrams.txt"  # beside a binary LM: its words, which pyctcdecode needs
NEVER = -1e4  # log-probability given to <unk> so that the search never emits it
TOOLS_HINT = "run `make lm-tools` (builds KenLM's lmplz and build_binary into .venv/bin)"


# --------------------------------------------------------------------------- building


def kenlm_tool(name: str) -> Path:
    """Path of a KenLM program (``lmplz``, ``build_binary``): beside this Python, or on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    if found is None:
        raise XasrError(f"KenLM's {name} is not installed; {TOOLS_HINT}")
    return Path(found)


def normalize_lm_text(text: str) -> str:
    """Transcripts' form: NFC, lower case, single spaces (``|`` is not a word character)."""
    return " ".join(unicodedata.normalize("NFC", text).lower().replace(SPACE, " ").split())


def read_lm_sentences(source: str | Path, lang: str | None = None) -> list[str]:
    """Sentences of a plain text file (one per line) or of a manifest's ``text`` fields.

    A ``.jsonl``/``.json``/``.csv`` file is read as a manifest. With ``lang``, plain text goes
    through the corpus normalisation of that language (``xasr.data.text.normalize_text``) and
    sentences it cannot normalise are dropped; otherwise it is lower-cased only.
    """
    path = Path(source)
    if not path.is_file():
        raise DataError(f"LM text {path} does not exist; pass a text file or a manifest")
    if path.suffix.lower() in (".jsonl", ".json", ".csv"):
        from xasr.data.manifest import read_manifest

        lines = [u.text for u in read_manifest(path)]
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not valid UTF-8 (byte {err.start})") from None
    if lang:
        from xasr.data.text import normalize_text

        normalized = [normalize_text(line, lang) for line in lines]
    else:
        normalized = [normalize_lm_text(line) for line in lines]
    return [s for s in normalized if s]


def build_lm(
    texts: Sequence[str | Path],
    out: str | Path,
    order: int = 3,
    lang: str | None = None,
    exclude: Sequence[str | Path] = (),
    memory: str = "1G",
) -> dict:
    """Train an order-``order`` modified Kneser-Ney LM with ``lmplz`` on the sentences of
    ``texts`` (files or manifests) and write it to ``out``: ARPA, or KenLM's binary format when
    ``out`` ends in ``.bin`` (then with a ``.unigrams.txt`` word list beside it).

    Sentences equal to or containing (as a run of words) a sentence of an ``exclude``
    manifest/file are dropped: keep test and dev sentences out of the LM.
    ``--discount_fallback`` lets lmplz train on small corpora.
    Returns a summary: sentences, words, vocabulary size, excluded count, seconds, path.
    """
    if not 1 < order <= 6:
        raise XasrError(f"--order must be 2..6 (KenLM is built for at most 6), got {order}")
    out = output_file(out, "--out")
    started = time.perf_counter()
    sentences = [s for source in texts for s in read_lm_sentences(source, lang)]
    banned = {s for source in exclude for s in read_lm_sentences(source, lang)}
    lengths = {len(s.split()) for s in banned}
    kept = [s for s in sentences if not _contains_any(s, banned, lengths)]
    if not kept:
        raise DataError(f"no LM sentences left in {', '.join(map(str, texts))}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    binary = out.suffix == ".bin"
    lmplz = kenlm_tool("lmplz")
    build_binary = kenlm_tool("build_binary") if binary else None
    with tempfile.TemporaryDirectory(prefix="xasr-lm-") as tmp:
        corpus = Path(tmp) / "text.txt"
        corpus.write_text("".join(s + "\n" for s in kept), encoding="utf-8")
        arpa = Path(tmp) / "lm.arpa" if binary else out.with_name(out.name + ".tmp")
        _run(
            [
                str(lmplz),
                "--order",
                str(order),
                "--discount_fallback",
                "--memory",
                memory,
                "--temp_prefix",
                tmp + "/",
                "--text",
                str(corpus),
                "--arpa",
                str(arpa),
            ],
            "lmplz",
        )
        if binary:
            _run([str(build_binary), str(arpa), str(out)], "build_binary")
            words = sorted(load_unigrams(arpa))
            unigrams = out.with_name(out.name + UNIGRAMS_SUFFIX)
            unigrams.write_text("".join(w + "\n" for w in words), encoding="utf-8")
        else:
            arpa.replace(out)
    vocabulary = {w for s in kept for w in s.split()}
    return {
        "path": str(out),
        "order": order,
        "sentences": len(kept),
        "words": sum(len(s.split()) for s in kept),
        "vocabulary": len(vocabulary),
        "excluded_sentences": len(sentences) - len(kept),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _contains_any(sentence: str, banned: set[str], lengths: set[int]) -> bool:
    """True if a run of whole words of ``sentence`` (all of it included) is in ``banned``, whose
    sentences have the word counts ``lengths``."""
    words = sentence.split()
    return any(
        " ".join(words[i : i + n]) in banned for n in lengths for i in range(len(words) - n + 1)
    )


def _run(cmd: list[str], name: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise XasrError(f"{name} failed (exit {proc.returncode}):\n{tail}")


def is_arpa(path: str | Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(64)
    return head.lstrip().startswith(b"\\data\\")


def load_unigrams(path: str | Path) -> set[str]:
    """The words of an ARPA file (``<s>``, ``</s>``, ``<unk>`` left out), or of a binary LM's
    ``.unigrams.txt`` list."""
    path = Path(path)
    if not is_arpa(path):
        listing = path.with_name(path.name + UNIGRAMS_SUFFIX)
        if not listing.is_file():
            raise XasrError(
                f"{path} is a binary LM without its word list {listing.name}; rebuild it with "
                "`xasr build-lm --out NAME.bin` or pass the ARPA file"
            )
        return set(listing.read_text(encoding="utf-8").split())
    words, inside = set(), False
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
                continue
            if not inside or not line:
                continue
            if line.startswith("\\"):  # the 2-grams (or \end\)
                break
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] not in ("<s>", "</s>", "<unk>"):
                words.add(parts[1])
    if not words:
        raise XasrError(f"{path} has no unigrams: not an ARPA language model")
    return words


# --------------------------------------------------------------------------- decoding


@contextmanager
def _quiet_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def ctc_labels(vocab: Vocab) -> list[str]:
    """xasr's tokens as pyctcdecode labels, index for index.

    Characters: blank -> ``""``, ``<unk>`` -> ``"⁇"``, ``|`` -> ``" "``, other characters as
    themselves. Sentencepiece: blank -> ``""``, ``<unk>`` -> ``"▁⁇▁"``, pieces as they are (``▁``
    starts a word), which pyctcdecode decodes as a "BPE" alphabet.
    """
    if vocab.kind == "sentencepiece":
        labels = [BLANK_LABEL, UNK_PIECE_LABEL, *vocab.tokens[2:]]
        if not any(t.startswith(WORD_START) for t in labels[2:]):
            raise XasrError(
                f"the sentencepiece vocabulary has no piece starting with {WORD_START!r}: "
                "LM decoding cannot tell where words start"
            )
    elif vocab.kind == "char":
        special = {vocab.blank_id: BLANK_LABEL, vocab.unk_id: UNK_LABEL}
        labels = [
            special.get(i, " " if token == SPACE else token) for i, token in enumerate(vocab.tokens)
        ]
        if any(len(label) > 1 for label in labels) or any(
            label.startswith(WORD_START) for label in labels
        ):
            raise XasrError("a character vocabulary with multi-character or '▁' tokens")
    else:
        raise XasrError(f"LM decoding does not support {vocab.kind!r} vocabularies")
    if len(set(labels)) != len(labels):
        raise XasrError(
            f"the vocabulary has a token that collides with a decoder label ({BLANK_LABEL!r}, "
            f"{UNK_LABEL!r}, ' '); LM decoding cannot map it"
        )
    return labels


@dataclass(frozen=True)
class BeamSearchOptions:
    """CTC prefix beam search with LM fusion: ``beam_width`` hypotheses, score = acoustic +
    ``lm_weight`` x LM log-probability + ``word_bonus`` per word."""

    beam_width: int = 32
    lm_weight: float = 0.5
    word_bonus: float = 1.0

    def __post_init__(self):
        checks.integer("--beam-width", self.beam_width, at_least=1)
        checks.number("--lm-weight", self.lm_weight, at_least=0)
        checks.number("--word-bonus", self.word_bonus)


class LmDecoder(CtcStrategy):
    """CTC prefix beam search with an n-gram LM (pyctcdecode + KenLM) for one vocabulary: a
    decoding strategy (``xasr.decode.strategy``) of any model with CTC log-probabilities.

    ``decode_log_probs(log_probs, lengths)`` decodes a batch (as ``greedy_texts`` does);
    ``decode_one(log_probs)`` one (frames, vocab) array. ``<unk>`` is never emitted.
    """

    name = "ctc-beam-lm"

    def __init__(
        self,
        vocab: Vocab,
        lm_path: str | Path,
        beam_width: int = 32,
        lm_weight: float = 0.5,
        word_bonus: float = 1.0,
        unk_score_offset: float = -10.0,
    ):
        try:
            from pyctcdecode import build_ctcdecoder
        except ImportError:
            raise XasrError(
                "pyctcdecode is not installed; `make venv` installs it (or "
                "`pip install --no-deps pyctcdecode==0.5.0 pygtrie`)"
            ) from None
        lm_path = Path(lm_path)
        if not lm_path.is_file():
            raise XasrError(f"language model {lm_path} does not exist; `xasr build-lm` makes one")
        BeamSearchOptions(beam_width, lm_weight, word_bonus)  # range checks
        self.vocab = vocab
        self.lm_path = lm_path
        self.beam_width = beam_width
        self.lm_weight = lm_weight
        self.word_bonus = word_bonus
        self.labels = ctc_labels(vocab)
        unigrams = load_unigrams(lm_path)
        logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # small-LM and ARPA chatter
        try:
            with _quiet_stderr():  # KenLM draws a progress bar on fd 2 while loading
                self.decoder = build_ctcdecoder(
                    self.labels,
                    kenlm_model_path=str(lm_path),
                    unigrams=sorted(unigrams),
                    alpha=lm_weight,
                    beta=word_bonus,
                    unk_score_offset=unk_score_offset,
                )
        except OSError as err:  # KenLM's own message says what is wrong with the file
            raise XasrError(f"cannot load language model {lm_path}: {err}") from None

    def info(self) -> dict:
        return {
            "name": self.name,
            "lm": str(self.lm_path),
            "beam_width": self.beam_width,
            "lm_weight": self.lm_weight,
            "word_bonus": self.word_bonus,
        }

    def set_weights(self, lm_weight: float, word_bonus: float) -> None:
        """Change the LM weight and word bonus in place (the LM stays loaded): how the weights
        are tuned on dev (``xasr.decode.lm_tuning``)."""
        BeamSearchOptions(self.beam_width, lm_weight, word_bonus)  # range checks
        self.lm_weight, self.word_bonus = lm_weight, word_bonus
        self.decoder.reset_params(alpha=lm_weight, beta=word_bonus)

    def decode_one(self, log_probs: np.ndarray) -> str:
        log_probs = np.array(log_probs, dtype=np.float32)  # a copy: <unk> is masked below
        log_probs[:, self.vocab.unk_id] = NEVER
        text = self.decoder.decode(log_probs, beam_width=self.beam_width)
        return " ".join(text.replace(UNK_LABEL, " ").split())

    def decode_arrays(self, arrays: Iterable[np.ndarray]) -> list[str]:
        return [self.decode_one(a) for a in arrays]

    def decode_log_probs(self, log_probs: Tensor, lengths: Tensor) -> list[str]:
        log_probs, lengths = log_probs.float().cpu().numpy(), lengths.cpu().tolist()
        return self.decode_arrays(log_probs[i, :n] for i, n in enumerate(lengths))
