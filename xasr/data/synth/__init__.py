"""XLT-Synth: the embedded corpus. espeak-ng speaks real sentences from the fortune collections.

Each utterance is one normalised sentence spoken by an espeak-ng voice + variant at a random
speed and pitch, resampled to 16 kHz mono, then (``conditions="noisy"``) passed through random
recording conditions: babble, reverberation, coloured noise, telephone band, gain. Every random
choice of utterance ``i`` of split ``s`` comes from a generator seeded by
``(seed, code, s, i)``, so a corpus is identical whatever the number of workers, and the clean
and noisy builds of one seed pair up (same text, voice, speed and pitch per utterance).

Splits never share a sentence: the language's sentences are shuffled with ``seed``, kept only
if their topic (fortune file) is among ``topics`` when given, and cut into test, dev and train
pools in that order. Codes with the same text language (``en`` and its accents
``en-gb-scotland``, ``en-029``, ``en-gb-x-gbclan``, ``en-gb-x-gbcwmd``, ``en-us-nyc``; ``cmn``,
``yue``) cut the same pools for one seed, the same topics and equal dev/test sizes, so one
code's test sentences never occur in another's train split. Topics change the pools: builds
with disjoint topic sets share no sentence at all (a domain-shift pair such as computing vs
literature is clean), but builds whose topic sets overlap (all topics, the default, overlaps
every selection) cut different pools, so a test sentence of one may be a train sentence of the
other. dev and test are spoken by held-out voice variants only (``HELDOUT_VARIANTS``), train by
the others (``TRAIN_VARIANTS``).

Layout: ``OUT/<code>/{train,dev,test}.jsonl`` (NeMo JSONL, relative audio paths),
``OUT/<code>/audio/<split>/<id>.wav`` (16-bit PCM) and ``OUT/<code>/synth.json``.
"""

from xasr.data.synth.build import CONDITIONS, SPLITS, build_per_language, build_xlt_synth
from xasr.data.synth.plan import HELDOUT_VARIANTS, TRAIN_VARIANTS
from xasr.data.synth.sentences import (
    FORTUNE_ROOT,
    SYNTH_LANGUAGES,
    Sentence,
    SynthLanguage,
    available_sentences,
    topics_of,
)

__all__ = [
    "CONDITIONS",
    "FORTUNE_ROOT",
    "HELDOUT_VARIANTS",
    "SPLITS",
    "SYNTH_LANGUAGES",
    "TRAIN_VARIANTS",
    "Sentence",
    "SynthLanguage",
    "available_sentences",
    "build_per_language",
    "build_xlt_synth",
    "topics_of",
]
