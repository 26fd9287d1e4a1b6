"""The prompt check: normalise free text, then match it against a term list kept as data.

Hand-written because no maintained library covers what this needs together: six languages,
fashion words that must pass ("nude heels", "dos nu", "sheer blouse"), undressing phrasings
("remove her shirt") and the obfuscations people use to get past a word list. Wordlist
libraries (better-profanity, profanity-check) are English-only swear filters; a text
classifier would be a second model to bake for what a list and a few rules catch.

Normalisation (:func:`normalise`), in order:

1. Unicode NFKC (full-width and mathematical letters become ASCII ones), zero-width and
   soft-hyphen characters removed, common Cyrillic/Greek look-alike letters mapped to Latin;
2. case folded, accents stripped (NFKD without combining marks; ``œ`` -> ``oe``, ``ø`` -> ``o``);
3. ``@``/``$``/``!`` next to letters read as ``a``/``s``/``i``; inside a token that mixes letters
   and digits, leetspeak digits read as letters (``0`` o, ``1`` i, ``3`` e, ``4`` a, ``5`` s,
   ``7`` t, ``8`` b);
4. tokens are runs of letters and digits; a run of three or more one-character tokens is one
   word ("n u d e", "n.a.k.e.d"); a second reading joins the pieces of a word split by ``.``,
   ``-``, ``_``, ``*`` or similar (``nak-ed`` -> ``naked``); a term matches in either reading;
5. a letter repeated three or more times matches as itself once or twice (``nuuude``).

The term list (``terms.json`` beside this module; :func:`load_terms`, extended by the
operator's ``MASKPAINT_MODERATION_TERMS_PATH`` file in the same format) has:

- ``categories``: category -> terms. A term is one or more tokens; a trailing ``*`` matches
  any token starting with it (``desnud*``).
- ``context``: term -> ``pass_before`` / ``pass_after`` word lists: the term does not match
  when the token right before it (or right after) is in the list ("nude heels", "dos nu").
- ``combos``: a sequence of slots (``seq``, each a word list), each slot's token at most
  ``within`` tokens after the previous one (1 = adjacent): "remove | her | shirt",
  "nothing | underneath", "zieh | aus".
- ``sets``: named word lists, referenced as ``@NAME`` in any list above.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

TERMS_PATH = Path(__file__).with_name("terms.json")

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e"
                                     "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063"
                                     "\u2064\u206a\u206b\u206c\u206d\u206e\u206f\ufeff"))
#: Cyrillic and Greek letters that look like Latin ones (Unicode confusables, lower case).
_LOOKALIKE = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i",
    "ј": "j", "ѕ": "s", "ԁ": "d", "к": "k", "м": "m", "т": "t", "в": "b", "н": "h",
    "α": "a", "ε": "e", "ο": "o", "ρ": "p", "κ": "k", "ν": "v", "τ": "t", "ι": "i",
    "œ": "oe", "æ": "ae", "ø": "o", "ł": "l", "đ": "d", "ı": "i",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b"})
_SYMBOL_LETTER = re.compile(r"(?<=[a-z])[@$!]|[@$!](?=[a-z])")
_SYMBOLS = {"@": "a", "$": "s", "!": "i"}
_TOKEN = re.compile(r"[a-z0-9]+")
#: Separators that may split one word ("nak-ed", "n.u.d.e"); a space is not one of them.
_INWORD = set(".-_*'`·•|/\\~^+:")
_REPEAT3 = re.compile(r"(.)\1{2,}")


@dataclass
class Normalised:
    """Two token readings of one text (see the module docstring): ``split`` and ``joined``."""

    split: list[str]
    joined: list[str]


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    text = text.casefold().translate(_LOOKALIKE)
    text = "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c))
    return _SYMBOL_LETTER.sub(lambda m: _SYMBOLS[m.group()], text)


def _leet(token: str) -> str:
    if any(c.isalpha() for c in token) and any(c.isdigit() for c in token):
        return token.translate(_LEET)
    return token


def normalise(text: str) -> Normalised:
    """The token readings of ``text`` that the term list is matched against.

    Returns:
        :class:`Normalised`; tokens are lower-case ASCII letters and digits.
    """
    text = _clean(text)
    spans = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
    raw = [text[a:b] for a, b in spans]
    gaps = [text[spans[i][1]:spans[i + 1][0]] for i in range(len(spans) - 1)]

    # runs of >= 3 one-character tokens are one word ("n u d e", "n.a.k.e.d", "n 4 k 3 d")
    split: list[str] = []
    groups: list[list[int]] = []  # token indices per word of the split reading
    i = 0
    while i < len(raw):
        j = i
        while j < len(raw) and len(raw[j]) == 1 and (j == i or len(gaps[j - 1]) <= 3):
            j += 1
        if j - i >= 3:
            groups.append(list(range(i, j)))
            i = j
        else:
            groups.append([i])
            i += 1
    split = [_leet("".join(raw[k] for k in g)) for g in groups]

    # joined reading: words split only by in-word separators are one token
    joined: list[str] = []
    for n, g in enumerate(groups):
        prev_gap = gaps[groups[n - 1][-1]] if n else " "
        if n and prev_gap and all(c in _INWORD for c in prev_gap) and len(prev_gap) <= 2:
            joined[-1] = _leet(joined[-1] + split[n])
        else:
            joined.append(split[n])
    return Normalised(split=split, joined=joined)


def _variants(token: str) -> set[str]:
    """``token`` and its forms with letters repeated 3+ times cut to two and to one."""
    return {token, _REPEAT3.sub(r"\1\1", token), _REPEAT3.sub(r"\1", token)}


def _token_matches(pattern: str, variants: set[str]) -> bool:
    if pattern.endswith("*"):
        stem = pattern[:-1]
        return any(v.startswith(stem) for v in variants)
    return pattern in variants


@dataclass
class TermList:
    """A compiled term list (see the module docstring for the format)."""

    #: (category, term tokens) for every term
    terms: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    #: term (as written) -> (tokens that, right before it, let it pass; right after it)
    context: dict[str, tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)
    #: (category, slots (each: exact tokens, prefixes), within)
    combos: list[tuple[str, tuple[tuple[str, ...], ...], int]] = field(default_factory=list)
    _index: tuple | None = field(default=None, repr=False)

    def match(self, text: str) -> str | None:
        """The category of the first term, context rule or combo that ``text`` matches, or
        None. The matching term is never returned (it must not reach a caller or a log)."""
        norm = normalise(text)
        for tokens in (norm.split, norm.joined):
            found = self._match_tokens(tokens)
            if found:
                return found
        return None

    def _match_tokens(self, tokens: list[str]) -> str | None:
        var = [_variants(t) for t in tokens]
        n = len(tokens)
        if self._index is None:
            self._build_index()
        exact, prefix = self._index
        for i in range(n):
            candidates = [t for v in var[i] for t in exact.get(v, ())]
            candidates += [t for stem, t in prefix if any(v.startswith(stem) for v in var[i])]
            for category, term in candidates:
                k = len(term)
                if i + k <= n and all(_token_matches(term[j], var[i + j]) for j in range(1, k)):
                    if not self._passes(" ".join(term), tokens, i, i + k):
                        return category
        for category, slots, within in self.combos:
            if any(_seq_at(var, i, slots, within) for i in range(n)):
                return category
        return None

    def _build_index(self) -> None:
        """Terms by their first token (exact), and the ones whose first token is a prefix."""
        exact: dict[str, list] = {}
        prefix: list = []
        for category, term in self.terms:
            if term[0].endswith("*"):
                prefix.append((term[0][:-1], (category, term)))
            else:
                exact.setdefault(term[0], []).append((category, term))
        self._index = (exact, prefix)

    def _passes(self, term: str, tokens: list[str], start: int, end: int) -> bool:
        rule = self.context.get(term)
        if rule is None:
            return False
        before, after = rule
        return ((start > 0 and tokens[start - 1] in before)
                or (end < len(tokens) and tokens[end] in after))


def _slot(patterns) -> tuple[frozenset[str], tuple[str, ...]]:
    """A combo slot as (exact tokens, prefixes) for fast lookup."""
    return (frozenset(p for p in patterns if not p.endswith("*")),
            tuple(p[:-1] for p in patterns if p.endswith("*")))


def _in_slot(slot, variants: set[str]) -> bool:
    exact, prefixes = slot
    return not exact.isdisjoint(variants) or any(
        v.startswith(stem) for stem in prefixes for v in variants)


def _seq_at(var: list[set[str]], i: int, slots, within: int) -> bool:
    """Whether ``slots[0]`` matches token ``i`` and the rest follow, each within ``within``."""
    if not _in_slot(slots[0], var[i]):
        return False
    if len(slots) == 1:
        return True
    return any(_seq_at(var, j, slots[1:], within)
               for j in range(i + 1, min(len(var), i + 1 + within)))


def _expand(words: list[str], sets: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for w in words:
        if w.startswith("@"):
            out += _expand(sets[w[1:]], sets)
        else:
            out.append(w)
    return out


def _norm_term(term: str) -> tuple[str, ...]:
    star = term.endswith("*")
    tokens = _TOKEN.findall(_clean(term.rstrip("*")))
    if star and tokens:
        tokens[-1] += "*"
    return tuple(tokens)


def compile_terms(*docs: dict) -> TermList:
    """Compile one or more term documents (the packaged list, then the operator's) into a
    :class:`TermList`: categories, context rules, combos and sets are merged, later documents
    adding to earlier ones.

    Raises:
        KeyError: a ``@NAME`` that no document defines.
        ValueError: a document without ``version`` 1.
    """
    sets: dict[str, list[str]] = {}
    for doc in docs:
        if doc.get("version") != 1:
            raise ValueError("a moderation term list must have \"version\": 1")
        for name, words in doc.get("sets", {}).items():
            sets.setdefault(name, []).extend(words)
    out = TermList()
    for doc in docs:
        for category, terms in doc.get("categories", {}).items():
            out.terms += [(category, t) for t in map(_norm_term, _expand(terms, sets)) if t]
        for term, rule in doc.get("context", {}).items():
            key = " ".join(_norm_term(term))
            old = out.context.get(key, (frozenset(), frozenset()))
            before = {" ".join(_norm_term(w)) for w in _expand(rule.get("pass_before", []), sets)}
            after = {" ".join(_norm_term(w)) for w in _expand(rule.get("pass_after", []), sets)}
            out.context[key] = (old[0] | before, old[1] | after)
        for c in doc.get("combos", []):
            slots = tuple(_slot([" ".join(_norm_term(w)) for w in _expand(slot, sets)])
                          for slot in c["seq"])
            out.combos.append((c["category"], slots, int(c.get("within", 1))))
    return out


@lru_cache(maxsize=8)
def load_terms(extra_path: str | None = None) -> TermList:
    """The packaged term list, extended by the JSON file at ``extra_path`` (same format).

    Raises:
        OSError / ValueError / KeyError: the extra file cannot be read or is malformed (a
            worker must not start with a term list it cannot read; see
            :func:`core.moderation.stage.Moderator.build`).
    """
    docs = [json.loads(TERMS_PATH.read_text(encoding="utf-8"))]
    if extra_path:
        docs.append(json.loads(Path(extra_path).read_text(encoding="utf-8")))
    return compile_terms(*docs)
