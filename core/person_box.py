"""The request's ``person_box``: which person of a group photo the automatic mask is for.

A field type of its own (:data:`PersonBox`) so the contract module stays one screenful per
concern; :mod:`core.contract` declares the field, :mod:`core.masking.auto` clips it to the photo
(a box outside it is ``invalid_input``). Torch-free: handlers import the contract.
"""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

DESCRIPTION = (
    "The person whose garments are masked in a photo of several: [x0, y0, x1, y1] px of the "
    "(oriented) photo around them, x0 < x1, y0 < y1; absent: the largest person. Ignored when "
    "`mask` is given; faces and hands of everyone stay protected.")


def _check(v: list[float]) -> list[float]:
    x0, y0, x1, y1 = v
    if not all(map(math.isfinite, v)) or x0 < 0 or y0 < 0 or x0 >= x1 or y0 >= y1:
        raise PydanticCustomError(
            "invalid_box", "must be [x0, y0, x1, y1] px with 0 <= x0 < x1 and 0 <= y0 < y1")
    return v


#: ``[x0, y0, x1, y1]`` px, four finite numbers, ``0 <= x0 < x1``, ``0 <= y0 < y1``.
PersonBox = Annotated[list[float], Field(min_length=4, max_length=4), AfterValidator(_check)]
