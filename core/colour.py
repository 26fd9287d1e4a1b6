"""Colour management: a photo's embedded ICC profile, and conversions to and from sRGB.

The diffusion and masking models were trained on sRGB pixels, but phones and cameras tag photos
with other RGB spaces (every recent iPhone photo is Display P3; many cameras offer Adobe RGB).
A job therefore keeps the photo's own pixel values and profile for everything it does not
repaint, gives the models sRGB pixels, and converts what the model painted back into the photo's
space before compositing. Conversions run through LittleCMS (Pillow's :mod:`PIL.ImageCms`),
relative colorimetric intent; colours outside sRGB are clipped on the way to the model only.

Arrays: H x W x 3 uint8 RGB (0-255) in the space named by the profile.
"""

from __future__ import annotations

import functools
import io
import struct

import numpy as np
from PIL import Image, ImageCms

# CIE 1931 xy chromaticities. Sources: IEC 61966-2-1 (sRGB), SMPTE EG 432-1 / Apple
# "Display P3" (P3 primaries, D65 white, sRGB transfer curve), Adobe RGB (1998) Color Image
# Encoding v2005-05 (gamma 563/256).
D65_XY = (0.3127, 0.3290)
SRGB_PRIMARIES_XY = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
P3_PRIMARIES_XY = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
ADOBE_RGB_PRIMARIES_XY = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
ADOBE_RGB_GAMMA = 563 / 256
#: The ICC profile connection space white (ICC.1:2001-04 section 6.3.4.3), XYZ.
D50_XYZ = (0.9642, 1.0, 0.8249)
#: Bradford cone response matrix (Lam 1985; as used by ICC.1 Annex E for chromatic adaptation).
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614],
                      [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])

_INTENT = ImageCms.Intent.RELATIVE_COLORIMETRIC


def _xy_to_xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _s15f16(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def _tag_xyz(xyz) -> bytes:
    return b"XYZ " + b"\0" * 4 + b"".join(_s15f16(v) for v in xyz)


def _tag_curve(trc: float | str) -> bytes:
    if trc == "srgb":  # IEC 61966-2-1 piecewise curve, sampled: v2 has no parametric curves
        x = np.linspace(0.0, 1.0, 1024)
        y = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
        table = np.round(y * 65535).astype(">u2").tobytes()
        return b"curv" + b"\0" * 4 + struct.pack(">I", 1024) + table
    # a single entry is a pure gamma, u8Fixed8Number (ICC.1:2001-04 6.5.2)
    return b"curv" + b"\0" * 4 + struct.pack(">IH", 1, int(round(float(trc) * 256)))


def _tag_desc(text: str) -> bytes:
    ascii_ = text.encode("ascii") + b"\0"
    # textDescriptionType: ASCII, then empty Unicode and ScriptCode parts (ICC.1:2001-04 6.5.16)
    return (b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_)) + ascii_
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67)


def matrix_profile(
    description: str,
    primaries_xy: tuple[tuple[float, float], ...],
    white_xy: tuple[float, float] = D65_XY,
    trc: float | str = "srgb",
) -> bytes:
    """Build an ICC v2 matrix/TRC display profile (bytes) for an RGB space.

    Hand-written because LittleCMS's profile builders are not exposed by Pillow
    (``ImageCms.createProfile`` knows only sRGB, LAB and XYZ). The colorants are the primaries'
    XYZ, scaled so that RGB = 1 is ``white_xy``, then adapted to the D50 PCS white with the
    Bradford transform (ICC.1:2001-04 Annex E); the media white point is D50, as in Apple's and
    Adobe's display profiles.

    Args:
        description: the profile's name (ASCII), shown by viewers.
        primaries_xy: red, green, blue CIE xy chromaticities.
        white_xy: the space's white point, CIE xy (default D65).
        trc: a gamma (e.g. 2.2) or ``"srgb"`` for the sRGB piecewise transfer curve.
    """
    prim = np.stack([_xy_to_xyz(*p) for p in primaries_xy], axis=1)  # columns: R, G, B
    white = _xy_to_xyz(*white_xy)
    m = prim * np.linalg.solve(prim, white)  # RGB -> XYZ, white maps to `white`
    src, dst = _BRADFORD @ white, _BRADFORD @ np.array(D50_XYZ)
    adapt = np.linalg.inv(_BRADFORD) @ np.diag(dst / src) @ _BRADFORD
    m50 = adapt @ m
    curve = _tag_curve(trc)
    tags = [(b"desc", _tag_desc(description)),
            (b"cprt", b"text" + b"\0" * 4 + b"No copyright, use freely\0"),
            (b"wtpt", _tag_xyz(D50_XYZ)),
            (b"rXYZ", _tag_xyz(m50[:, 0])), (b"gXYZ", _tag_xyz(m50[:, 1])),
            (b"bXYZ", _tag_xyz(m50[:, 2])),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    table, data = [], b""
    offset = 128 + 4 + 12 * len(tags)
    placed: dict[bytes, int] = {}
    for sig, body in tags:
        if body not in placed:  # the three TRC tags share one curve
            placed[body] = offset + len(data)
            data += body + b"\0" * (-len(body) % 4)
        table.append(struct.pack(">4sII", sig, placed[body], len(body)))
    size = offset + len(data)
    header = (struct.pack(">I4sI4s4s4s", size, b"\0" * 4, 0x02100000, b"mntr", b"RGB ", b"XYZ ")
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 4
              + struct.pack(">I", 0) + b"\0" * 8 + b"\0" * 8 + struct.pack(">I", 0)
              + b"".join(_s15f16(v) for v in D50_XYZ) + b"\0" * 4 + b"\0" * 16 + b"\0" * 28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + b"".join(table) + data


@functools.cache
def display_p3_profile() -> bytes:
    """Display P3 (P3 primaries, D65 white, the sRGB transfer curve) as ICC v2 bytes."""
    return matrix_profile("Display P3", P3_PRIMARIES_XY, D65_XY, "srgb")


#: nclx transfer_characteristics (ITU-T H.273 table 3) of SDR curves: BT.709, BT.601, sRGB,
#: BT.2020 10/12-bit. HEIF files that describe their colour with an nclx box (instead of an ICC
#: profile) and one of these curves get a matrix profile built from their primaries.
_NCLX_TRANSFER_SRGB_LIKE = {1, 6, 13, 14, 15}


def nclx_profile(nclx: dict | None) -> bytes | None:
    """An ICC profile for a HEIF nclx colour description (iPhone: P3 primaries, sRGB curve).

    Only SDR transfer curves are mapped (drawn with the sRGB curve, which viewers use for them
    too); HDR curves (PQ, HLG) and BT.709 primaries give None (pixels taken as sRGB).
    """
    if not nclx or nclx.get("color_primaries") in (1, 2, None):
        return None
    if nclx.get("transfer_characteristics") not in _NCLX_TRANSFER_SRGB_LIKE:
        return None
    try:
        prim = tuple((nclx[f"color_primary_{c}_x"], nclx[f"color_primary_{c}_y"])
                     for c in ("red", "green", "blue"))
        white = (nclx["color_primary_white_x"], nclx["color_primary_white_y"])
        name = "Display P3" if nclx["color_primaries"] == 12 else "HEIF nclx RGB"
        return matrix_profile(name, prim, white, "srgb")
    except (KeyError, TypeError, ValueError, ZeroDivisionError, np.linalg.LinAlgError):
        return None


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def parse_profile(icc: bytes | None) -> ImageCms.ImageCmsProfile | None:
    """Parse ICC bytes; None when absent or unreadable (then the pixels are taken as sRGB)."""
    if not icc:
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except Exception:  # a broken profile is treated like no profile, as browsers do
        return None


def profile_space(profile: ImageCms.ImageCmsProfile) -> str:
    """The profile's data colour space signature, stripped: ``RGB``, ``GRAY``, ``CMYK``, …"""
    return profile.profile.xcolor_space.strip()


def to_srgb_image(img: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    """Convert a Pillow image in ``profile``'s space (mode L, RGB or CMYK to match) to sRGB RGB."""
    return ImageCms.profileToProfile(img, profile, _srgb(), renderingIntent=_INTENT,
                                     outputMode="RGB")


# A grid over the RGB cube used to recognise profiles that behave like sRGB (17 steps per
# channel, the usual ICC LUT grid size): converting those would only add rounding.
_GRID = np.stack(np.meshgrid(*(np.linspace(0, 255, 17).round().astype(np.uint8),) * 3,
                             indexing="ij"), axis=-1).reshape(17, 289, 3)


class ColourSpace:
    """An RGB photo's colour space: its ICC profile (None = sRGB) and transforms to/from sRGB.

    ``icc`` is what outputs embed (PNG ``iCCP``, JPEG/WebP ``icc_profile``), so that pixels a job
    did not repaint look the same in a colour-managed viewer. Profiles that map every grid point
    of the RGB cube to sRGB within 1 level are treated as sRGB (no conversion, profile still
    embedded).
    """

    def __init__(self, icc: bytes | None = None,
                 profile: ImageCms.ImageCmsProfile | None = None) -> None:
        self.icc = icc or None
        self._to = self._from = None
        if self.icc is None:
            return
        profile = profile or parse_profile(self.icc)
        if profile is None or profile_space(profile) != "RGB":
            raise ValueError("not an RGB ICC profile")
        to = ImageCms.buildTransform(profile, _srgb(), "RGB", "RGB", renderingIntent=_INTENT)
        grid = Image.fromarray(_GRID, "RGB")
        probe = np.asarray(ImageCms.applyTransform(grid, to), np.int16)
        if np.abs(probe - _GRID).max() > 1:
            self._to = to
            self._from = ImageCms.buildTransform(_srgb(), profile, "RGB", "RGB",
                                                 renderingIntent=_INTENT)

    @property
    def is_srgb(self) -> bool:
        """True when no conversion is needed (no profile, or one that behaves like sRGB)."""
        return self._to is None

    @staticmethod
    def _apply(rgb: np.ndarray, transform) -> np.ndarray:
        return np.asarray(ImageCms.applyTransform(Image.fromarray(rgb, "RGB"), transform))

    def to_srgb(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 in this space -> sRGB (the same array when :attr:`is_srgb`)."""
        return rgb if self._to is None else self._apply(rgb, self._to)

    def from_srgb(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 sRGB -> this space (the same array when :attr:`is_srgb`)."""
        return rgb if self._from is None else self._apply(rgb, self._from)


SRGB = ColourSpace(None)
