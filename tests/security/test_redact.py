"""The masking of personal numbers in texts: the quick pre-check never lets a number through."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from config.security import ID_NUMBER_RE, PHONE_RE, redact_text

pytestmark = [pytest.mark.embedded]


def _masked_without_precheck(text: str) -> str:
    text = ID_NUMBER_RE.sub(lambda m: f"{m.group(1)}{'*' * 10}{m.group(2)}", text)
    return PHONE_RE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)


separators = st.sampled_from(["", "", "-", " "])
phones = st.builds(
    lambda prefix, a, s1, b, s2, c: f"{prefix}1{a}{s1}{b}{s2}{c}",
    st.sampled_from(["", "+86", "86-", "+86 "]),
    st.from_regex(r"[3-9][0-9]", fullmatch=True),
    separators,
    st.from_regex(r"[0-9]{4}", fullmatch=True),
    separators,
    st.from_regex(r"[0-9]{4}", fullmatch=True),
)
ids = st.from_regex(r"[0-9]{17}[0-9Xx]", fullmatch=True)
noise = st.text(alphabet=st.sampled_from(list("0123456789 -+.:TZ报警电话身份证abcX（）")), max_size=30)
texts = st.lists(st.one_of(phones, ids, noise), max_size=6).map("".join)


@settings(max_examples=1000, deadline=None)
@given(texts)
@example("报警人 13812345678，身份证 440304199001011234")
@example("138-1234-5678 / +86 139 8765 4321")
@example("2026-12-07T16:00:00.123456+00:00 4403040010010001 113.9412345")
def test_the_precheck_masks_exactly_what_the_two_patterns_mask(text: str) -> None:
    assert redact_text(text) == _masked_without_precheck(text)


def test_numbers_are_masked_and_the_rest_left_alone() -> None:
    assert redact_text("电话 13812345678") == "电话 138****5678"
    assert redact_text("证件 44030419900101123X") == "证件 4403**********123X"
    plain = "2026-12-07T16:00:00+00:00 code 440304-20261207-0001 lon 113.94123456789"
    assert redact_text(plain) == plain
