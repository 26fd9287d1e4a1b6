"""The prompt check: hand-written hostile and fashion prompt sets (tests/data), the
normalisation that defeats obfuscation, negative prompts never blocked, and the operator's
extra term list."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from core.contract import JobRequest, parse_job
from core.errors import ErrorCode, JobError
from core.moderation.prompt import compile_terms, load_terms, normalise
from core.moderation.stage import CHECKED_TEXT_FIELDS, UNCHECKED_TEXT_FIELDS, screen_prompt
from core.settings import Settings

DATA = Path(__file__).parent / "data"
#: The fashion examples every release must let through.
FASHION_MUST_PASS = ["nude heels", "nude-colour trench coat", "flesh-tone slip dress",
                     "sheer blouse over a camisole", "bikini top", "lingerie-style lace top",
                     "strapless dress"]


def _lines(name: str) -> list[str]:
    text = (DATA / name).read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


@pytest.fixture(scope="module")
def terms():
    return load_terms()


def test_hostile_set_is_blocked(terms):
    hostile = _lines("prompts_hostile.txt")
    assert len(hostile) >= 150 and len(set(hostile)) == len(hostile)
    missed = [p for p in hostile if terms.match(p) is None]
    assert len(missed) <= 0.03 * len(hostile), missed


def test_fashion_set_passes(terms):
    fashion = _lines("prompts_fashion.txt")
    assert len(fashion) >= 300 and len(set(fashion)) == len(fashion)
    assert set(FASHION_MUST_PASS) <= set(fashion)
    blocked = [(p, terms.match(p)) for p in fashion if terms.match(p) is not None]
    assert blocked == []


@pytest.mark.parametrize("text", [
    "n u d e", "n.a.k.e.d", "n-a-k-e-d", "N4K3D", "nak-ed", "ｎｕｄｅ", "n\u200bu\u200bd\u200be",
    "n\u0430ked",  # Cyrillic a
    "nuuuude", "nüdé", "$ex", "t0pl3ss woman",
])
def test_obfuscations_are_seen_through(terms, text):
    assert terms.match(text) is not None


def test_normalise_readings():
    assert normalise("N.U.D.E heels").split == ["nude", "heels"]
    assert normalise("nak-ed").joined == ["naked"]
    assert normalise("Schöne Brüste").split == ["schone", "bruste"]
    assert normalise("size 10 boots").split == ["size", "10", "boots"]  # digits alone stay


def test_context_lets_the_colour_pass_but_not_the_person(terms):
    assert terms.match("nude heels") is None and terms.match("escarpins nude") is None
    assert terms.match("nude woman") == "nudity" and terms.match("a woman, nude") == "nudity"
    assert terms.match("robe dos nu") is None and terms.match("homme nu") == "nudity"


def test_categories_name_what_was_refused(terms):
    assert terms.match("remove her shirt") == "undressing"
    assert terms.match("naked") == "nudity"
    assert terms.match("porn") == "sexual"


def _job(**kw):
    return parse_job("j1", {"image": "aGVsbG8=", "prompt": "a red coat", **kw})


def test_negative_prompt_is_never_blocked():
    screen_prompt(_job(negative_prompt="nude, naked, nsfw, topless, porn"), Settings())


def test_prompt_block_names_check_and_category_not_the_term(caplog):
    prompt = "a woman, completely naked, studio light"
    with caplog.at_level(logging.WARNING, logger="maskpaint.safety"), \
            pytest.raises(JobError) as e:
        screen_prompt(_job(prompt=prompt), Settings())
    err = e.value
    assert (err.code, err.field, err.retryable) == (ErrorCode.content_blocked, "prompt", False)
    assert err.message.startswith("prompt:") and "nudity" in err.message
    assert "naked" not in err.message
    audit = [r.getMessage() for r in caplog.records if r.name == "maskpaint.safety"]
    assert len(audit) == 1 and "check=prompt" in audit[0] and "prompt_sha256=" in audit[0]
    assert "naked" not in audit[0] and "studio" not in audit[0]


def test_safety_off_checks_nothing():
    screen_prompt(_job(prompt="naked"), Settings(safety="off"))


def test_every_free_text_field_is_classified():
    """A new free-text request field must be added to the checked or the unchecked list."""
    # identifiers and enums, not text a model reads
    not_text = {"image", "mask", "garment_image", "model", "task", "control", "idempotency_key"}
    text_fields = {name for name, f in JobRequest.model_fields.items()
                   if "str" in str(f.annotation) and name not in not_text}
    assert text_fields == set(CHECKED_TEXT_FIELDS) | set(UNCHECKED_TEXT_FIELDS)


def test_operator_term_list_extends_the_packaged_one(tmp_path):
    extra = tmp_path / "terms.json"
    extra.write_text(json.dumps({"version": 1, "categories": {"nudity": ["zorblax*"]}}))
    settings = Settings(moderation_terms_path=extra)
    with pytest.raises(JobError) as e:
        screen_prompt(_job(prompt="a Zorblaxed model"), settings)
    assert "nudity" in e.value.message
    with pytest.raises(JobError):  # the packaged terms still apply
        screen_prompt(_job(prompt="naked"), settings)


def test_a_term_list_needs_a_version():
    with pytest.raises(ValueError):
        compile_terms({"categories": {}})
