"""XLT-Synth's random choices for one utterance (voice, variant, speed, pitch, recording
conditions), drawn from a generator seeded by (seed, code, split, index): the same corpus
whatever the number of workers."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xasr.data.synth.sentences import SYNTH_LANGUAGES, Sentence, SynthLanguage

log = logging.getLogger(__name__)

SPEED_RANGE = (130, 200)  # espeak-ng -s, words per minute
PITCH_RANGE = (30, 70)  # espeak-ng -p, 0-99 around the variant's own pitch


TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m5", "m6", "m8", "f1", "f2", "f4", "f5", "klatt", "klatt3", "Alex",
    "Annie", "aunty", "belinda", "benjamin", "boris", "edward", "max", "Michael", "Mike",
    "paul", "quincy", "steph",
)  # fmt: skip
HELDOUT_VARIANTS = ("m4", "m7", "f3", "linda", "klatt2", "Andy", "david", "robert")


@dataclass(frozen=True)
class Voice:
    """One espeak-ng speaker: ``-v voice+variant -s speed -p pitch``."""

    voice: str
    variant: str
    speed: int
    pitch: int


@dataclass(frozen=True)
class Conditions:
    """Recording conditions of one utterance; the defaults are a clean recording."""

    babble: tuple[tuple[str, Voice], ...] = ()  # (text, speaker) of each background talker
    babble_snr: float = 0.0
    reverb_rt60: float | None = None
    noise: tuple[float, float] | None = None  # (SNR dB, spectral decay dB/octave)
    telephone: bool = False
    gain_db: float | None = None

    def describe(self) -> str:
        """Short form for the manifest: ``"babble3@14dB+reverb0.45s+pink@12dB+gain-3dB"``."""
        parts = []
        if self.babble:
            parts.append(f"babble{len(self.babble)}@{self.babble_snr:.0f}dB")
        if self.reverb_rt60 is not None:
            parts.append(f"reverb{self.reverb_rt60:.2f}s")
        if self.noise is not None:
            parts.append(f"{_NOISE_COLOURS[self.noise[1]]}@{self.noise[0]:.0f}dB")
        if self.telephone:
            parts.append("telephone")
        if self.gain_db is not None:
            parts.append(f"gain{self.gain_db:.0f}dB")  # no "+" sign: "+" joins the parts
        return "+".join(parts) or "clean"


# Spectral decay of the added noise in dB/octave (audiomentations AddColorNoise f_decay).


_NOISE_COLOURS = {0.0: "white", -3.0: "pink", -6.0: "brown", 3.0: "blue"}


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to render one utterance (drawn in the parent, picklable)."""

    path: str
    text: str
    speaker: Voice
    conditions: Conditions
    aug_seed: int  # seeds the sample-level randomness (noise, offsets, room response)
    ssml: str | None = None  # code-switched: espeak-ng speaks this markup (-m) instead
    stretches: tuple = ()  # code-switched: the text's Stretch per language


@dataclass(frozen=True)
class Build:
    """One language's build: where, with what parameters, and how jobs are mapped. Here, not
    in ``build``, because planning reads it and ``build`` imports the planner."""

    code: str
    folder: Path
    params: dict
    mapper: Callable  # ordered map over jobs: builtin map or Pool.imap
    workers: int
    progress: bool


def _utterance_rng(seed: int, code: str, split: str, index: int) -> np.random.Generator:
    """Generator for utterance ``index`` of ``split``: independent of order and worker count."""
    digest = hashlib.sha256(f"xlt-synth|{seed}|{code}|{split}|{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def plan_utterances(build: Build, split: str, index: int, pool: list[Sentence]) -> Job:
    """Draw every random choice of one utterance.

    Conditions are drawn even for a clean build, so clean and noisy builds of a seed share
    text, speaker, speed and pitch utterance by utterance.
    """
    rng = _utterance_rng(build.params["seed"], build.code, split, index)
    lang = SYNTH_LANGUAGES[build.code]
    variants = TRAIN_VARIANTS if split == "train" else HELDOUT_VARIANTS
    speaker = _draw_voice(rng, lang, variants)
    conditions = _draw_conditions(rng, lang, variants, pool, index, speaker)
    if build.params["conditions"] == "clean":
        conditions = Conditions()
    path = build.folder / "audio" / split / f"{build.code}-{split}-{index:06d}.wav"
    job = Job(str(path), pool[index].text, speaker, conditions, int(rng.integers(2**32)))
    if lang.embedded is None:
        return job
    return _code_switched(job, lang, rng)  # drawn last: the draws above stay as they were


def _code_switched(job: Job, lang: SynthLanguage, rng: np.random.Generator) -> Job:
    """The job with stretches of its text switched into the embedded language (monolingual,
    one stretch, when no word of it has a translation)."""
    from xasr.data.lexicon import lexicon_for
    from xasr.data.synth.codeswitch import CodeSwitched, Stretch, ssml, switch_words

    switched = switch_words(
        job.text, lexicon_for(lang.text_lang, lang.embedded), rng, lang.text_lang, lang.embedded
    )
    if switched is None:
        switched = CodeSwitched(job.text, (Stretch(0, len(job.text), lang.text_lang),))
    voices = {lang.text_lang: job.speaker.voice, lang.embedded: lang.embedded_voice}
    markup = ssml(switched, voices, job.speaker.variant)
    return dataclasses.replace(job, text=switched.text, ssml=markup, stretches=switched.stretches)


def _draw_voice(rng: np.random.Generator, lang: SynthLanguage, variants: Sequence[str]) -> Voice:
    return Voice(
        voice=str(rng.choice(lang.espeak_voices)),
        variant=str(rng.choice(variants)),
        speed=int(rng.integers(SPEED_RANGE[0], SPEED_RANGE[1] + 1)),
        pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
    )


def _draw_conditions(
    rng: np.random.Generator,
    lang: SynthLanguage,
    variants: Sequence[str],
    pool: list[Sentence],
    index: int,
    speaker: Voice,
) -> Conditions:
    """Babble p=0.3 (2-4 talkers, 10-25 dB), reverb p=0.3 (RT60 0.2-0.8 s), coloured noise
    p=0.8 (5-30 dB), telephone p=0.15, gain -10..+2 dB. Every value is drawn whether used or
    not, so the sequence of draws is fixed."""
    talkers = int(rng.integers(2, 5))
    others = [v for v in variants if v != speaker.variant]
    picks = [int(p) for p in rng.integers(len(pool), size=talkers)]
    babble = tuple(
        (pool[(p + (p == index)) % len(pool)].text, _draw_voice(rng, lang, others))
        for p in picks  # another sentence of the same split, another variant
    )
    babble_snr, use_babble = float(rng.uniform(10, 25)), rng.random() < 0.3 and len(pool) > 1
    rt60, use_reverb = float(rng.uniform(0.2, 0.8)), rng.random() < 0.3
    snr, decay = float(rng.uniform(5, 30)), float(rng.choice(list(_NOISE_COLOURS)))
    use_noise = rng.random() < 0.8
    telephone = bool(rng.random() < 0.15)
    return Conditions(
        babble=babble if use_babble else (),
        babble_snr=babble_snr,
        reverb_rt60=rt60 if use_reverb else None,
        noise=(snr, decay) if use_noise else None,
        telephone=telephone,
        gain_db=float(rng.uniform(-10, 2)),
    )
