"""Question sets with gold answers, and the exact-match scorer every QA measurement uses.

A question set is a JSONL file, one object a line: ``{"id", "question", "answer", "aliases",
"doc"}`` (``aliases`` and ``doc`` optional; ``doc`` names the document that holds the answer: a
file name such as ``ada-lovelace.md`` or the ``id`` of a JSONL record, see ``document_name``).

A generated text answers a question when the gold answer or one of its aliases appears in it as a
whole span of words and numbers, after normalisation: case folded, accents and punctuation
dropped, thousands separators removed ("2,850" is "2850"), ordinal suffixes removed ("10th" is
"10"). Numbers compare whole, so "1815" does not match "18150" nor "189" match "1895".
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from lacy_mlx.errors import InputError

# Latin letters that NFKD does not split into a base letter and an accent.
_UNACCENT = str.maketrans({"ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ı": "i", "æ": "ae", "œ": "oe", "þ": "th",
                           "ð": "d"})
_THOUSANDS = re.compile(r"(?<=\d)[,\u00a0\u2009\u202f](?=\d{3}(?!\d))")
_ORDINAL = re.compile(r"(?<=\d)(?:st|nd|rd|th)\b")
# A number (with decimals) or a run of letters; digits and letters never share a token.
_TOKEN = re.compile(r"\d+(?:\.\d+)*|[^\W\d_]+")
_KEYS = {"id", "question", "answer", "aliases", "doc"}


@dataclass(frozen=True)
class Question:
    """One question, its gold answer, other accepted surface forms, and the document holding it."""

    id: str
    question: str
    answer: str
    aliases: tuple[str, ...] = ()
    doc: str | None = None

    @property
    def golds(self) -> tuple[str, ...]:
        """The answer followed by its aliases."""
        return (self.answer, *self.aliases)

    def matches(self, text: str) -> bool:
        """Whether ``text`` contains the answer or an alias (see ``answer_matches``)."""
        return answer_matches(text, self.answer, self.aliases)


def answer_tokens(text: str) -> tuple[str, ...]:
    """``text`` normalised into the words and numbers that answers are matched on."""
    # Separators first: NFKD turns the no-break spaces into plain ones, which do not join digits.
    text = unicodedata.normalize("NFKD", _THOUSANDS.sub("", text).casefold()).translate(_UNACCENT)
    text = _ORDINAL.sub("", "".join(ch for ch in text if not unicodedata.combining(ch)))
    return tuple(_TOKEN.findall(text))


def _contains(tokens: Sequence[str], span: Sequence[str]) -> bool:
    n = len(span)
    return any(tuple(tokens[i : i + n]) == tuple(span) for i in range(len(tokens) - n + 1))


def answer_matches(text: str, answer: str, aliases: Iterable[str] = ()) -> bool:
    """True when ``answer`` or one of ``aliases`` appears in ``text`` as a whole normalised span.

    Raises InputError for a gold answer with no letters or digits (it could never match).
    """
    tokens = answer_tokens(text)
    for gold in (answer, *aliases):
        span = answer_tokens(gold)
        if not span:
            raise InputError(f"gold answer {gold!r} has no letters or digits: give a word or a number")
        if _contains(tokens, span):
            return True
    return False


def _question(obj: object, where: str) -> Question:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object with id, question and answer")
    unknown = set(obj) - _KEYS
    if unknown:
        raise InputError(f"{where}: unknown key(s) {sorted(unknown)}; a question has {sorted(_KEYS)}")
    for key in ("id", "question", "answer"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise InputError(f"{where}: '{key}' must be a non-empty string")
    aliases = obj.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise InputError(f"{where}: 'aliases' must be a list of strings")
    doc = obj.get("doc")
    if doc is not None and (not isinstance(doc, str) or not doc.strip()):
        raise InputError(f"{where}: 'doc' must be a document name (a file name or a JSONL id)")
    for gold in (obj["answer"], *aliases):
        if not answer_tokens(gold):
            raise InputError(f"{where}: gold answer {gold!r} has no letters or digits")
    return Question(id=obj["id"], question=obj["question"], answer=obj["answer"], aliases=tuple(aliases), doc=doc)


def load_questions(path: str | Path) -> list[Question]:
    """The questions of a JSONL file, in file order. Blank lines are skipped.

    Raises InputError naming the line for invalid JSON, a missing or ill-typed field, an unknown
    key, a duplicate id, or a file with no questions.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such question file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}); convert it to UTF-8") from None
    questions: list[Question] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg})") from None
        q = _question(obj, where)
        if q.id in seen:
            raise InputError(f"{where}: duplicate question id {q.id!r}")
        seen.add(q.id)
        questions.append(q)
    if not questions:
        raise InputError(f"{path}: no questions in the file")
    return questions


def score(results: Iterable[tuple[Question, str]]) -> dict:
    """Exact-match accuracy of generated answers: ``results`` pairs each question with its text.

    Returns ``{"n", "correct", "accuracy", "missed"}`` (``missed``: ids answered wrongly, in order).
    Raises InputError when there is nothing to score.
    """
    n, missed = 0, []
    for question, text in results:
        n += 1
        if not question.matches(text):
            missed.append(question.id)
    if n == 0:
        raise InputError("no results to score: give (question, generated text) pairs")
    return {"n": n, "correct": n - len(missed), "accuracy": (n - len(missed)) / n, "missed": missed}


def document_name(external_id: str | None) -> str | None:
    """How a question's ``doc`` names a stored document: a file's name for a ``file://`` id
    (with its ``#L<n>`` line for a JSONL record without an id), the external id otherwise."""
    if external_id is None or not external_id.startswith("file://"):
        return external_id
    url = urlparse(external_id)
    name = PurePosixPath(unquote(url.path)).name
    return f"{name}#{url.fragment}" if url.fragment else name
