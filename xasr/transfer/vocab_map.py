"""Which source token each target token starts from: the same token, a close one, or none.

A target token shared with the source vocabulary is *copied*. A new token is *mapped* from the
source token it most resembles: the one a user map file names (e.g. ``ß s``), else its Unicode
base letter (NFD without combining marks: ä, á, à -> a; ñ -> n; ç -> c). Anything else is *new*
and keeps its random initialisation.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from xasr.errors import XasrError


@dataclass
class TokenMap:
    """target index -> source index, split by how the pair was found."""

    copied: dict[int, int] = field(default_factory=dict)
    mapped: dict[int, int] = field(default_factory=dict)
    new: list[int] = field(default_factory=list)

    def pairs(self) -> dict[int, int]:
        return {**self.copied, **self.mapped}

    def describe(self, target_tokens: list[str], source_tokens: list[str]) -> dict:
        return {
            "copied": [target_tokens[t] for t in sorted(self.copied)],
            "mapped": {target_tokens[t]: source_tokens[s] for t, s in sorted(self.mapped.items())},
            "new": [target_tokens[t] for t in self.new],
        }

    def summary(self, target_tokens: list[str], source_tokens: list[str]) -> str:
        info = self.describe(target_tokens, source_tokens)
        mapped = " ".join(f"{t}<-{s}" for t, s in info["mapped"].items())
        return (
            f"head transfer: {len(self.copied)} tokens copied, {len(self.mapped)} mapped"
            f"{' (' + mapped + ')' if mapped else ''}, {len(self.new)} new"
            f"{' (' + ' '.join(info['new']) + ')' if info['new'] else ''}"
        )


def base_letter(token: str) -> str:
    """ä -> a, Ñ -> n; tokens that are not a single decomposable letter come back unchanged."""
    decomposed = unicodedata.normalize("NFD", token)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped or token


def read_user_map(path: str | Path | None) -> dict[str, str]:
    """A text file of ``target source`` pairs, one per line (``#`` comments); or a JSON object."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise XasrError(f"token map file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise XasrError(f"{path}: not valid UTF-8 (byte {err.start})") from None
    if path.suffix == ".json":
        return _json_map(text, path)
    return parse_user_map(text, path)


def _json_map(text: str, path: Path) -> dict[str, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise XasrError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in data.items()
    ):
        raise XasrError(f'{path}: expected a JSON object of tokens, e.g. {{"ß": "s"}}')
    return data


def parse_user_map(text: str, path: str | Path = "token map") -> dict[str, str]:
    """``TARGET SOURCE`` pairs, one per line, ``#`` starting a comment."""
    pairs = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise XasrError(f"{path}:{line_no}: expected 'TARGET SOURCE', got {line!r}")
        pairs[parts[0]] = parts[1]
    return pairs


def map_tokens(
    target_tokens: list[str], source_tokens: list[str], user_map: dict[str, str] | None = None
) -> TokenMap:
    source_index = {token: i for i, token in enumerate(source_tokens)}
    user_map = user_map or {}
    result = TokenMap()
    for t, token in enumerate(target_tokens):
        if token in source_index:
            result.copied[t] = source_index[token]
        elif user_map.get(token) in source_index:
            result.mapped[t] = source_index[user_map[token]]
        elif base_letter(token) in source_index:
            result.mapped[t] = source_index[base_letter(token)]
        elif base_letter(token).lower() in source_index:
            result.mapped[t] = source_index[base_letter(token).lower()]
        else:
            result.new.append(t)
    return result
