"""Vocabularies: characters (default) or sentencepiece pieces, saved beside the model.

Index 0 is the CTC blank and index 1 the unknown token in both kinds, so a head transfer can
always copy those two rows. A character vocabulary writes the space as ``|`` (as wav2vec2 does),
which keeps the token list readable in JSON and in transfer reports.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from xasr.errors import DataError
from xasr.io import write_text

BLANK = "<blank>"
UNK = "<unk>"
SPACE = "|"
VOCAB_FILE = "vocab.json"


class CharVocab:
    """Characters of the training transcripts plus blank and unk.

    ``encode`` handles characters outside the vocabulary as asked: ``"error"`` raises naming
    the character, ``"unk"`` maps it to ``<unk>`` (counted in ``unknown_counts``).
    """

    kind = "char"

    def __init__(self, tokens: Iterable[str]):
        tokens = list(tokens)
        if tokens[:2] != [BLANK, UNK]:
            raise ValueError(f"a vocabulary must start with {BLANK!r}, {UNK!r}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        self.tokens = tokens
        self.index = {token: i for i, token in enumerate(tokens)}
        self.unknown_counts: Counter[str] = Counter()

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharVocab:
        chars = Counter()
        for text in texts:
            chars.update(unicodedata.normalize("NFC", text).replace(" ", SPACE))
        return cls([BLANK, UNK, *sorted(chars)])

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def encode(self, text: str, on_unknown: str = "unk", where: str = "") -> list[int]:
        ids = []
        for char in unicodedata.normalize("NFC", text).replace(" ", SPACE):
            token_id = self.index.get(char)
            if token_id is None:
                if on_unknown == "error":
                    raise DataError(
                        f"{where + ': ' if where else ''}character {char!r} (U+{ord(char):04X}) "
                        f"is not in the model's vocabulary of {len(self)} tokens; normalise the "
                        "text or train with a vocabulary that has it"
                    )
                self.unknown_counts[char] += 1
                token_id = self.unk_id
            ids.append(token_id)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        pieces = [self.tokens[i] for i in ids if i != self.blank_id]
        return "".join(pieces).replace(SPACE, " ").strip()

    def to_json(self) -> dict:
        return {"kind": self.kind, "tokens": self.tokens}


class SentencePieceVocab:
    """A sentencepiece model; its ids are shifted by one so 0 stays the CTC blank."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if self.sp.unk_id() != 0:
            raise ValueError("the sentencepiece model must have unk_id=0")
        # 0 = blank; sentencepiece id k -> k + 1, so <unk> (sp id 0) lands on 1.
        self.tokens = [BLANK] + [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        self.tokens[1] = UNK
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.unknown_counts: Counter[str] = Counter()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 256) -> SentencePieceVocab:
        import io

        import sentencepiece as spm

        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(list(texts)),
                model_writer=model,
                vocab_size=vocab_size,
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                character_coverage=1.0,
                model_type="unigram",
                minloglevel=2,
            )
        except RuntimeError as err:  # e.g. "Vocabulary size too high (5000)..."
            raise DataError(
                f"vocab_size (--vocab-size) {vocab_size}: sentencepiece cannot train on these "
                f"transcripts ({str(err).strip().splitlines()[-1]})"
            ) from None
        return cls(model.getvalue())

    def __len__(self) -> int:
        return len(self.tokens)

    blank_id = 0
    unk_id = 1

    def encode(self, text: str, on_unknown: str = "unk", where: str = "") -> list[int]:
        ids = [i + 1 for i in self.sp.encode(text)]
        if on_unknown == "error" and self.unk_id in ids:
            raise DataError(
                f"{where + ': ' if where else ''}text {text!r} has pieces "
                "the sentencepiece model does not know"
            )
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i - 1 for i in ids if i > 1]).strip()

    def to_json(self) -> dict:
        import base64

        return {
            "kind": self.kind,
            "tokens": self.tokens,
            "model": base64.b64encode(self.model_proto).decode("ascii"),
        }


Vocab = CharVocab | SentencePieceVocab


def vocab_from_json(data, where: str = "vocabulary") -> Vocab:
    """The vocabulary ``to_json`` wrote; ``DataError`` naming ``where`` for anything else."""
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
    if data.get("kind") == "sentencepiece":
        import base64
        import binascii

        try:
            return SentencePieceVocab(base64.b64decode(data["model"], validate=True))
        except (KeyError, TypeError, ValueError, binascii.Error, RuntimeError) as err:
            raise DataError(f"{where}: not a valid sentencepiece vocabulary ({err})") from None
    tokens = data.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
        raise DataError(f"{where}: 'tokens' must be a list of non-empty strings")
    try:
        return CharVocab(tokens)
    except ValueError as err:
        raise DataError(f"{where}: {err}") from None


def save_vocab(vocab: Vocab, directory: Path) -> None:
    write_text(Path(directory) / VOCAB_FILE, vocab_text(vocab))


def vocab_text(vocab: Vocab) -> str:
    """The JSON text of ``vocab.json``."""
    return json.dumps(vocab.to_json(), ensure_ascii=False, indent=1)


def load_vocab(directory: Path) -> Vocab:
    path = Path(directory) / VOCAB_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing: not a model directory written by xasr")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(
            f"{path} is corrupt ({err}); it is not a vocabulary written by xasr"
        ) from None
    return vocab_from_json(data, str(path))
