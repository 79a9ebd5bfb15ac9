"""WER, CER and MER through jiwer, kept as error counts so they can be summed across batches,
devices and languages before dividing.

MER is the mixed error rate of code-switching work (e.g. Mandarin-English): the edit rate
over tokens where each CJK character (Han ideographs, kana) is one token and each word of
another script is one, so that a Chinese sentence with English words is scored neither by
characters (which would split the English words) nor by words (Chinese has no spaces). For
text without CJK characters MER equals WER; for text of CJK characters alone, CER without
spaces.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import jiwer


@dataclass
class ErrorCounts:
    """Edit operations against the reference; ``*_ref`` is the reference length."""

    word_errors: int = 0
    word_ref: int = 0
    word_hits: int = 0
    word_insertions: int = 0
    char_errors: int = 0
    char_ref: int = 0
    utterances: int = 0
    mixed_errors: int = 0
    mixed_ref: int = 0

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple())))

    def as_tuple(self) -> tuple[int, ...]:
        return (
            self.word_errors,
            self.word_ref,
            self.word_hits,
            self.word_insertions,
            self.char_errors,
            self.char_ref,
            self.utterances,
            self.mixed_errors,
            self.mixed_ref,
        )

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.word_ref, 1)

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.char_ref, 1)

    @property
    def mer(self) -> float:
        """The mixed error rate: edits over CJK characters and other words (module docstring)."""
        return self.mixed_errors / max(self.mixed_ref, 1)

    def to_json(self) -> dict:
        return {
            "wer": self.wer,
            "cer": self.cer,
            "mer": self.mer,
            "utterances": self.utterances,
            "word_errors": self.word_errors,
            "words": self.word_ref,
            "char_errors": self.char_errors,
            "chars": self.char_ref,
            "mixed_errors": self.mixed_errors,
            "mixed_tokens": self.mixed_ref,
        }


def error_counts(references: list[str], hypotheses: list[str]) -> ErrorCounts:
    """Word and character edit counts. An empty hypothesis counts as all deletions."""
    pairs = [(r.strip(), h.strip()) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]  # jiwer rejects empty references
    if not pairs:
        return ErrorCounts()
    refs, hyps = [p[0] for p in pairs], [p[1] for p in pairs]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    mixed = jiwer.process_words([mixed_tokens(r) for r in refs], [mixed_tokens(h) for h in hyps])
    word_ref = words.substitutions + words.deletions + words.hits
    char_ref = chars.substitutions + chars.deletions + chars.hits
    return ErrorCounts(
        word_errors=words.substitutions + words.deletions + words.insertions,
        word_ref=word_ref,
        word_hits=words.hits,
        word_insertions=words.insertions,
        char_errors=chars.substitutions + chars.deletions + chars.insertions,
        char_ref=char_ref,
        utterances=len(pairs),
        mixed_errors=mixed.substitutions + mixed.deletions + mixed.insertions,
        mixed_ref=mixed.substitutions + mixed.deletions + mixed.hits,
    )


def is_cjk(char: str) -> bool:
    """Han ideographs (with extensions and compatibility forms) and Japanese kana."""
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0x3400 <= code <= 0x4DBF  # Han extension A
        or 0x4E00 <= code <= 0x9FFF  # Han
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0x20000 <= code <= 0x3134F  # Han extensions B-G
    )


def mixed_tokens(text: str) -> str:
    """MER's tokens, space-separated: "我喜欢 jazz音乐" -> "我 喜 欢 jazz 音 乐"."""
    tokens = []
    for word in text.split():
        run = ""
        for char in word:
            if is_cjk(char):
                tokens += [run] if run else []
                tokens.append(char)
                run = ""
            else:
                run += char
        tokens += [run] if run else []
    return " ".join(tokens)


def error_counts_by_language(
    references: list[str], hypotheses: list[str], langs: list[str]
) -> dict[str, ErrorCounts]:
    groups = defaultdict(lambda: ([], []))
    for ref, hyp, lang in zip(references, hypotheses, langs, strict=True):
        groups[lang or "unknown"][0].append(ref)
        groups[lang or "unknown"][1].append(hyp)
    return {lang: error_counts(refs, hyps) for lang, (refs, hyps) in sorted(groups.items())}


def errors_by_stretch(
    references: list[str], hypotheses: list[str], stretches: list[list[dict]]
) -> dict[str, dict]:
    """WER and CER within each language's stretches of code-switched references.

    ``stretches[i]``: utterance i's stretches (``{"start", "end", "lang"}``, character offsets
    into its reference, as XLT-Synth's code-switched manifests record them). The reference and
    hypothesis are aligned (jiwer) by words and by characters; a substitution or deletion
    counts for the language of its reference word (character), an insertion for that of the
    reference word (character) before it (after it at the start). The space after a stretch
    counts for that stretch. Returns {lang: {"wer", "cer", "word_errors", "words",
    "char_errors", "chars"}}.
    """
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for ref, hyp, spans in zip(references, hypotheses, stretches, strict=True):
        if not ref.strip():
            continue
        lead = len(ref) - len(ref.lstrip())  # offsets are into the text as the manifest has it
        char_langs = _char_languages(ref, spans)[lead : lead + len(ref.strip())]
        ref, hyp = ref.strip(), hyp.strip()
        starts = [m.start() for m in re.finditer(r"[^ ]+", ref)]  # words as jiwer splits them
        word_langs = [char_langs[s] for s in starts]
        words = jiwer.process_words(ref, hyp).alignments[0]
        chars = jiwer.process_characters(ref, hyp).alignments[0]
        for lang, errors in _attributed(words, word_langs).items():
            totals[lang][0] += errors
        for lang, errors in _attributed(chars, char_langs).items():
            totals[lang][2] += errors
        for lang in word_langs:
            totals[lang][1] += 1
        for lang in char_langs:
            totals[lang][3] += 1
    return {
        lang: {
            "wer": w_err / max(w_ref, 1),
            "cer": c_err / max(c_ref, 1),
            "word_errors": w_err,
            "words": w_ref,
            "char_errors": c_err,
            "chars": c_ref,
        }
        for lang, (w_err, w_ref, c_err, c_ref) in sorted(totals.items())
    }


def _char_languages(text: str, spans: list[dict]) -> list[str]:
    """The language of each character of ``text``; a gap after a stretch takes its language."""
    langs = [""] * len(text)
    for span in sorted(spans, key=lambda s: s["start"]):
        for i in range(span["start"], len(text)):
            langs[i] = span["lang"]
    first = min(spans, key=lambda s: s["start"])["lang"]
    return [lang or first for lang in langs]


def _attributed(chunks, langs: list[str]) -> dict[str, int]:
    """Edit counts of one alignment by the language of the reference items they touch."""
    out: dict[str, int] = defaultdict(int)
    for chunk in chunks:
        if chunk.type in ("substitute", "delete"):
            for i in range(chunk.ref_start_idx, chunk.ref_end_idx):
                out[langs[i]] += 1
        elif chunk.type == "insert":
            at = chunk.ref_start_idx - 1 if chunk.ref_start_idx > 0 else 0
            out[langs[min(at, len(langs) - 1)]] += chunk.hyp_end_idx - chunk.hyp_start_idx
    return out


def translation_scores(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu's defaults, 0-100) of ``hypotheses`` against one
    reference each: a speech-translation model's quality (``xasr.transfer.st``)."""
    import sacrebleu

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
    return {
        "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
        "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
    }
