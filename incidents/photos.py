"""Photo intake checks: decide the type from the content, refuse bad files, strip location metadata.

A photo is accepted when its first bytes say JPEG, PNG or WebP *and* Pillow opens it as that format,
verifies it and decodes it completely. The filename is only used in messages: a PNG named
``.jpg`` is stored as PNG, a text file named ``photo.jpg`` is refused. Refusals raise
:class:`PhotoRejected` with a ``reason`` code.

HEIC/HEIF (and AVIF) are refused with a message that says so: iOS Safari normally converts HEIC
photos to JPEG when a page uploads them through ``<input type="file" accept="image/*">``, removing
location from HEIC without re-encoding needs an ISO-BMFF box editor, and re-encoding through
pillow-heif would alter the picture and put a native libheif decoder on the intake path. Animated
PNG/WebP are refused too.

Location stripping (``strip_location=True``) edits the metadata containers and never re-encodes,
so the picture data stay byte-for-byte what the camera wrote:

* EXIF (JPEG APP1 ``Exif``, PNG ``eXIf``, WebP ``EXIF``): the GPSInfo entry (tag 0x8825) is taken
  out of IFD0 (and IFD1) and the GPS IFD with all its values is overwritten with zero bytes. The
  edit keeps the length, so every other offset stays valid and the rest of the EXIF (orientation,
  camera, exposure, time taken, thumbnail) is kept. Then every EXIF byte that no kept directory
  points to is zeroed too, because editors that "remove location" often only unlink the GPS IFD
  and leave its coordinates behind (``exif_unreferenced``). EXIF that cannot be parsed is replaced
  by a minimal EXIF holding only the orientation.
* XMP (JPEG APP1 standard and extended XMP, PNG ``XML:com.adobe.xmp`` text, WebP ``XMP ``) is
  removed whole: location hides in many XMP namespaces (``exif:GPS*``, ``drone-dji:Gps*``,
  ``photoshop:City``, ``Iptc4xmpCore:Location``).
* Other JPEG APP1 segments (unknown metadata in the EXIF/XMP slot) are removed whole.
* IPTC (JPEG APP13 ``Photoshop 3.0``; PNG "Raw profile type" iptc/exif/xmp text) is removed whole
  (IPTC has city and sub-location fields).
* Anything after the end of the image (JPEG after EOI, PNG after IEND, WebP after the RIFF chunk)
  is dropped: phones append motion-photo videos (with their own GPS atom), depth maps and second
  MPO pictures there. A JPEG's APP2 ``MPF`` index, which points into those trailing pictures, goes
  with them.

Not handled: location written into vendor MakerNotes or into the picture itself. With
``strip_location=False`` the bytes are stored exactly as received.

This module has no Django import: limits come in as arguments.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_COUNT",
    "DEFAULT_MAX_PIXELS",
    "CheckedPhoto",
    "PhotoRejected",
    "check_photo",
    "check_photos",
]

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: 50 megapixels: above any phone camera in use, far below what would exhaust memory on decoding.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_COUNT = 9

RejectReason = Literal["too_large", "unsupported_type", "corrupt", "too_many_pixels", "too_many"]

# Pillow format name → (content type, extension without the dot). Pillow reports a JPEG with an MPF
# index as MPO.
_TYPES = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
}
_PILLOW_FORMATS = {"JPEG": {"JPEG", "MPO"}, "PNG": {"PNG"}, "WEBP": {"WEBP"}}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}

_GPS_IFD_TAG = 0x8825
_ORIENTATION_TAG = 0x0112
# Byte size of one value of each TIFF field type (TIFF 6.0 and EXIF 2.3: 13 is IFD).
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_MAX_IFD_ENTRIES = 1000
_MAX_IFDS = 16
# Pointers to the sub-directories kept: Exif, Interoperability, SubIFDs (never GPS).
_SUB_IFD_TAGS = {0x8769, 0xA005, 0x014A}
# GPS tags run from 0 (GPSVersionID) to 31 (GPSHPositioningError) in EXIF 2.32/3.0.
_MAX_GPS_TAG = 0x1F

_EXIF_HEADER = b"Exif\x00\x00"
_XMP_HEADERS = (b"http://ns.adobe.com/xap/1.0/\x00", b"http://ns.adobe.com/xmp/extension/\x00")
_PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"
_MPF_HEADER = b"MPF\x00"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = {b"tEXt", b"zTXt", b"iTXt"}
_PNG_DROPPED_KEYWORDS = {
    b"xml:com.adobe.xmp": "xmp",
    b"raw profile type exif": "exif",
    b"raw profile type app1": "exif",
    b"raw profile type xmp": "xmp",
    b"raw profile type iptc": "iptc",
    b"raw profile type 8bim": "iptc",
}
_WEBP_FLAG_EXIF = 0x08
_WEBP_FLAG_XMP = 0x04


class PhotoRejected(ValueError):
    """A photo that was refused; ``reason`` is a stable code, the message names the file."""

    def __init__(self, reason: RejectReason, message: str, *, filename: str = "") -> None:
        super().__init__(message)
        self.reason: RejectReason = reason
        self.filename = filename


@dataclass(frozen=True, slots=True)
class CheckedPhoto:
    """An accepted photo: the bytes to store and what was learnt about them.

    ``extension`` has no leading dot (``jpg``, ``png``, ``webp``). ``width`` and ``height`` are
    those of the stored picture (before any EXIF orientation turns it for display). ``removed``
    lists what stripping took out (``exif_gps``, ``exif``, ``xmp``, ``app1``, ``iptc``, ``mpf``,
    ``trailer``);
    ``location_stripped`` is true when it is not empty.
    """

    content: bytes
    content_type: str
    extension: str
    width: int
    height: int
    sha256: str
    location_stripped: bool
    removed: tuple[str, ...] = ()


class _Malformed(Exception):
    """A metadata container whose structure cannot be walked."""


def check_photo(
    data: bytes,
    *,
    filename: str = "",
    max_bytes: int = DEFAULT_MAX_BYTES,
    strip_location: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> CheckedPhoto:
    """Check one uploaded photo and return what to store, or raise :class:`PhotoRejected`."""
    name = filename or "photo"
    data = bytes(data)
    if len(data) > max_bytes:
        raise PhotoRejected(
            "too_large",
            f"{name}: {len(data):,} bytes is larger than the limit of {max_bytes:,} bytes",
            filename=filename,
        )
    kind = _sniff(data, name, filename)
    width, height, orientation = _decode(data, kind, name, filename, max_pixels)

    content = data
    removed: tuple[str, ...] = ()
    if strip_location:
        try:
            content, removed = _strip(data, kind, orientation, rebuild_exif=False)
            # Belt and braces: if Pillow still finds GPS, keep no EXIF beyond the orientation.
            if _still_has_gps(content, kind, width, height):
                content, removed = _strip(data, kind, orientation, rebuild_exif=True)
                if _still_has_gps(content, kind, width, height):
                    raise _Malformed("location data survived stripping")
        except _Malformed as exc:
            raise PhotoRejected(
                "corrupt",
                f"{name}: the {kind} metadata structure is damaged ({exc})",
                filename=filename,
            ) from exc
    content_type, extension = _TYPES[kind]
    return CheckedPhoto(
        content=content,
        content_type=content_type,
        extension=extension,
        width=width,
        height=height,
        sha256=hashlib.sha256(content).hexdigest(),
        location_stripped=bool(removed),
        removed=removed,
    )


def check_photos(
    files: Sequence[tuple[str, bytes]],
    *,
    max_count: int = DEFAULT_MAX_COUNT,
    max_bytes: int = DEFAULT_MAX_BYTES,
    strip_location: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[CheckedPhoto]:
    """Check ``(filename, bytes)`` pairs, at most ``max_count`` of them; the first refusal raises."""
    if len(files) > max_count:
        raise PhotoRejected("too_many", f"{len(files)} photos is more than the limit of {max_count}")
    return [
        check_photo(
            data,
            filename=filename,
            max_bytes=max_bytes,
            strip_location=strip_location,
            max_pixels=max_pixels,
        )
        for filename, data in files
    ]


# --- type and integrity ---------------------------------------------------------------------------


def _sniff(data: bytes, name: str, filename: str) -> str:
    """The format the magic bytes announce, or a refusal."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if not data:
        raise PhotoRejected("unsupported_type", f"{name}: the file is empty", filename=filename)
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        raise PhotoRejected(
            "unsupported_type",
            f"{name}: HEIC/HEIF/AVIF photos are not accepted; send JPEG, PNG or WebP "
            "(on an iPhone: Settings → Camera → Formats → Most Compatible)",
            filename=filename,
        )
    raise PhotoRejected("unsupported_type", f"{name}: not a JPEG, PNG or WebP image", filename=filename)


def _decode(data: bytes, kind: str, name: str, filename: str, max_pixels: int) -> tuple[int, int, int | None]:
    """Open, verify and fully decode the image; return its size and EXIF orientation."""
    try:
        # `formats` keeps Pillow from trying every other parser it has on untrusted bytes.
        with Image.open(io.BytesIO(data), formats=[kind]) as im:
            if im.format not in _PILLOW_FORMATS[kind]:
                raise PhotoRejected(
                    "unsupported_type", f"{name}: not a {kind} image after all", filename=filename
                )
            width, height = im.size
            if width * height > max_pixels:
                raise _too_many_pixels(name, filename, width, height, max_pixels)
            if kind != "JPEG" and getattr(im, "n_frames", 1) > 1:
                raise PhotoRejected(
                    "unsupported_type", f"{name}: animated images are not accepted", filename=filename
                )
            im.verify()
        with Image.open(io.BytesIO(data), formats=[kind]) as im:
            if kind == "JPEG":
                # Decoding at 1/8 scale still reads every entropy-coded byte (so truncation and
                # corruption show), for 1/64 of the memory.
                im.draft(None, (1, 1))
            im.load()
            orientation = _orientation(im)
    except PhotoRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise PhotoRejected(
            "too_many_pixels", f"{name}: too many pixels to decode safely ({exc})", filename=filename
        ) from exc
    except Exception as exc:
        # Pillow's decoders raise many types on malformed input (OSError, SyntaxError, ValueError,
        # struct.error, EOFError …); all of them mean the same thing here.
        raise PhotoRejected(
            "corrupt", f"{name}: the {kind} image is damaged or truncated ({exc})", filename=filename
        ) from exc
    return width, height, orientation


def _too_many_pixels(name: str, filename: str, width: int, height: int, max_pixels: int) -> PhotoRejected:
    return PhotoRejected(
        "too_many_pixels",
        f"{name}: {width}×{height} is {width * height:,} pixels, more than the limit of {max_pixels:,}",
        filename=filename,
    )


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(_ORIENTATION_TAG)
    except Exception:
        # Unreadable EXIF is not a reason to refuse the picture; it only loses the orientation.
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _still_has_gps(content: bytes, kind: str, width: int, height: int) -> bool:
    """Whether Pillow still reads GPS from the stripped bytes (or cannot read them as before)."""
    # Pillow decodes a whole PNG to look for EXIF that may follow the pixels; skip that when the
    # stripped file has no container Pillow could read EXIF from.
    if kind == "PNG" and b"eXIf" not in content and b"Raw profile type" not in content:
        return False
    try:
        with Image.open(io.BytesIO(content), formats=[kind]) as im:
            if im.size != (width, height):
                return True
            exif = im.getexif()
            return _GPS_IFD_TAG in exif or bool(exif.get_ifd(_GPS_IFD_TAG))
    except Exception:
        return True


# --- stripping ------------------------------------------------------------------------------------


def _strip(
    data: bytes, kind: str, orientation: int | None, *, rebuild_exif: bool
) -> tuple[bytes, tuple[str, ...]]:
    """Return the bytes without location metadata and the names of what was removed."""
    removed: list[str] = []
    if kind == "JPEG":
        content = _strip_jpeg(data, orientation, rebuild_exif, removed)
    elif kind == "PNG":
        content = _strip_png(data, orientation, rebuild_exif, removed)
    else:
        content = _strip_webp(data, orientation, rebuild_exif, removed)
    if not removed:
        return data, ()
    return content, tuple(dict.fromkeys(removed))


def _clean_tiff(tiff: bytes, orientation: int | None, rebuild: bool, removed: list[str]) -> bytes | None:
    """EXIF TIFF data without GPS (``None``: drop the container); names what went in ``removed``."""
    if not rebuild:
        buffer = bytearray(tiff)
        try:
            if _remove_gps(buffer):
                removed.append("exif_gps")
            if _zero_unreferenced(buffer):
                removed.append("exif_unreferenced")
            return bytes(buffer)
        except _Malformed:
            pass
    removed.append("exif")
    if orientation is None:
        return None
    minimal = Image.Exif()
    minimal[_ORIENTATION_TAG] = orientation
    return minimal.tobytes()[len(_EXIF_HEADER) :]


def _remove_gps(tiff: bytearray) -> bool:
    """Unlink and zero the GPS IFD of TIFF/EXIF data in place, keeping its length; True if found."""
    order = _tiff_order(tiff)
    (offset,) = struct.unpack_from(order + "I", tiff, 4)
    found = False
    seen: set[int] = set()
    # GPSInfo belongs in IFD0; IFD1 (the thumbnail's) is checked too because it costs nothing.
    for _ in range(2):
        if offset == 0:
            break
        if offset in seen:
            raise _Malformed("EXIF IFD chain loops")
        seen.add(offset)
        count = _ifd_count(tiff, offset, order)
        index = 0
        while index < count:
            entry = offset + 2 + 12 * index
            tag, _type, _n, value = struct.unpack_from(order + "HHII", tiff, entry)
            if tag != _GPS_IFD_TAG:
                index += 1
                continue
            _wipe_ifd(tiff, value, order)
            # Shift the later entries and the next-IFD pointer up over the GPSInfo entry; the
            # 12 freed bytes at the end become zeros, and no offset anywhere else changes.
            block_end = offset + 2 + 12 * count + 4
            tiff[entry : block_end - 12] = tiff[entry + 12 : block_end]
            tiff[block_end - 12 : block_end] = bytes(12)
            count -= 1
            struct.pack_into(order + "H", tiff, offset, count)
            found = True
        (offset,) = struct.unpack_from(order + "I", tiff, offset + 2 + 12 * count)
    return found


def _zero_unreferenced(tiff: bytearray) -> bool:
    """Zero every byte no kept directory points to; True if any of them was not zero already.

    Editors that "remove location" often unlink the GPS IFD and leave its bytes behind, and a
    damaged pointer can orphan coordinates the same way: only what the structure reaches stays.
    """
    order = _tiff_order(tiff)
    keep = [(0, 8)]
    pending = [struct.unpack_from(order + "I", tiff, 4)[0]]
    seen: set[int] = set()
    while pending:
        offset = pending.pop()
        if offset == 0 or offset in seen:
            continue
        if len(seen) >= _MAX_IFDS:
            raise _Malformed("too many EXIF IFDs")
        seen.add(offset)
        count = _ifd_count(tiff, offset, order)
        keep.append((offset, 2 + 12 * count + 4))
        values: dict[int, tuple[int, int, int]] = {}
        for index in range(count):
            entry = offset + 2 + 12 * index
            tag, kind, n, value = struct.unpack_from(order + "HHII", tiff, entry)
            size = _TIFF_TYPE_SIZES.get(kind, 0) * n
            values[tag] = (kind, n, entry + 8 if size <= 4 else value)
            if size > 4:
                keep.append((value, size))
            if tag in _SUB_IFD_TAGS and size == 4:
                pending.append(value)
        # The thumbnail: a JPEG (offset + length) or TIFF strips (offset and length arrays).
        for data_tag, length_tag in ((0x0201, 0x0202), (0x0111, 0x0117), (0x0144, 0x0145)):
            if data_tag in values and length_tag in values:
                keep.extend(
                    zip(
                        _tiff_ints(tiff, order, values[data_tag]),
                        _tiff_ints(tiff, order, values[length_tag]),
                        strict=False,
                    )
                )
        (next_ifd,) = struct.unpack_from(order + "I", tiff, offset + 2 + 12 * count)
        pending.append(next_ifd)
    dirty = False
    cursor = 0
    for start, end in sorted((start, start + size) for start, size in keep if 0 <= start < len(tiff)):
        if start > cursor:
            dirty |= any(tiff[cursor:start])
            tiff[cursor:start] = bytes(start - cursor)
        cursor = max(cursor, end)
    if cursor < len(tiff):
        dirty |= any(tiff[cursor:])
        tiff[cursor:] = bytes(len(tiff) - cursor)
    return dirty


def _tiff_ints(tiff: bytearray, order: str, field: tuple[int, int, int]) -> list[int]:
    """The SHORT or LONG values of one field (at most a few thousand)."""
    kind, n, at = field
    code = {3: "H", 4: "I"}.get(kind)
    if code is None or n > _MAX_IFD_ENTRIES * 10 or at + n * struct.calcsize(code) > len(tiff):
        return []
    return list(struct.unpack_from(f"{order}{n}{code}", tiff, at))


def _tiff_order(tiff: bytearray) -> str:
    if len(tiff) < 8:
        raise _Malformed("EXIF shorter than its header")
    if tiff[:4] == b"II*\x00":
        return "<"
    if tiff[:4] == b"MM\x00*":
        return ">"
    raise _Malformed("EXIF without a TIFF header")


def _ifd_count(tiff: bytearray, offset: int, order: str) -> int:
    if offset + 2 > len(tiff):
        raise _Malformed(f"EXIF IFD offset {offset} out of range")
    (count,) = struct.unpack_from(order + "H", tiff, offset)
    if count > _MAX_IFD_ENTRIES or offset + 2 + 12 * count + 4 > len(tiff):
        raise _Malformed(f"EXIF IFD at {offset} runs past the end")
    return int(count)


def _wipe_ifd(tiff: bytearray, offset: int, order: str) -> None:
    """Zero an IFD and the out-of-line values it points to, so no coordinate stays behind."""
    count = _ifd_count(tiff, offset, order)
    spans = []
    for index in range(count):
        tag, kind, n, value = struct.unpack_from(order + "HHII", tiff, offset + 2 + 12 * index)
        size = _TIFF_TYPE_SIZES.get(kind, 0) * n
        # A GPS IFD with foreign tags, unknown types or values outside the data is not what it
        # claims (offsets shifted by a bad edit): zeroing by its offsets could miss the real
        # coordinates, so the caller falls back to rebuilding the EXIF.
        if tag > _MAX_GPS_TAG or kind not in _TIFF_TYPE_SIZES or (size > 4 and value + size > len(tiff)):
            raise _Malformed(f"GPS IFD entry {index} is inconsistent")
        if size > 4:
            spans.append((value, size))
    for value, size in spans:
        tiff[value : value + size] = bytes(size)
    tiff[offset : offset + 2 + 12 * count + 4] = bytes(2 + 12 * count + 4)


def _strip_jpeg(data: bytes, orientation: int | None, rebuild: bool, removed: list[str]) -> bytes:
    """Walk the JPEG marker segments, edit or drop metadata ones, copy the rest verbatim."""
    out = bytearray(data[:2])
    pos, size = 2, len(data)
    while True:
        if pos + 1 >= size:
            # No EOI: a decoder accepted it, so keep what is there.
            out += data[pos:]
            return bytes(out)
        if data[pos] != 0xFF:
            # Decoders skip stray bytes between segments; do the same rather than refuse the photo.
            pos = data.find(b"\xff", pos)
            if pos < 0:
                raise _Malformed("JPEG marker expected")
            continue
        while pos + 1 < size and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        marker = data[pos + 1]
        pos += 2
        if marker == 0xD9:  # EOI: the end of the (first) picture
            out += b"\xff\xd9"
            if pos < size:
                removed.append("trailer")
            return bytes(out)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            out += bytes((0xFF, marker))
            continue
        if pos + 2 > size:
            raise _Malformed("JPEG segment length missing")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > size:
            raise _Malformed(f"JPEG segment at byte {pos - 2} runs past the end")
        payload = data[pos + 2 : pos + length]
        pos += length
        if marker == 0xDA:  # SOS: the header, then entropy-coded data up to the next real marker
            out += bytes((0xFF, marker)) + struct.pack(">H", length) + payload
            scan_end = _jpeg_scan_end(data, pos)
            out += data[pos:scan_end]
            pos = scan_end
            continue
        new_payload = _jpeg_segment(marker, payload, orientation, rebuild, removed)
        if new_payload is None:
            continue
        if len(new_payload) + 2 > 0xFFFF:
            raise _Malformed("JPEG metadata segment too long after editing")
        out += bytes((0xFF, marker)) + struct.pack(">H", len(new_payload) + 2) + new_payload


def _jpeg_scan_end(data: bytes, pos: int) -> int:
    """Index of the first marker after entropy-coded data starting at ``pos`` (or the end)."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        # FF00 is a stuffed data byte and FFD0–FFD7 restart markers live inside the scan.
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            pos += 2
            continue
        return pos


def _jpeg_segment(
    marker: int, payload: bytes, orientation: int | None, rebuild: bool, removed: list[str]
) -> bytes | None:
    """The payload to keep for one metadata segment (``None`` drops it)."""
    if marker == 0xE1 and payload.startswith(_EXIF_HEADER):
        tiff = _clean_tiff(payload[len(_EXIF_HEADER) :], orientation, rebuild, removed)
        return None if tiff is None else _EXIF_HEADER + tiff
    if marker == 0xE1:
        # APP1 holds EXIF or XMP by convention; anything else there is unknown metadata.
        removed.append("xmp" if payload.startswith(_XMP_HEADERS) else "app1")
        return None
    if marker == 0xED and payload.startswith(_PHOTOSHOP_HEADER):
        removed.append("iptc")
        return None
    if marker == 0xE2 and payload.startswith(_MPF_HEADER):
        # The index points at the pictures after EOI, which are dropped.
        removed.append("mpf")
        return None
    return payload


def _strip_png(data: bytes, orientation: int | None, rebuild: bool, removed: list[str]) -> bytes:
    """Walk the PNG chunks, edit ``eXIf`` and drop metadata text chunks; copy the rest verbatim."""
    out = bytearray(_PNG_SIGNATURE)
    pos, size = len(_PNG_SIGNATURE), len(data)
    while pos < size:
        if pos + 12 > size:
            raise _Malformed(f"PNG chunk header cut off at byte {pos}")
        length, chunk_type = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > size:
            raise _Malformed(f"PNG chunk {chunk_type!r} runs past the end")
        body = data[pos + 8 : pos + 8 + length]
        if chunk_type == b"eXIf":
            exif = body[len(_EXIF_HEADER) :] if body.startswith(_EXIF_HEADER) else body
            tiff = _clean_tiff(exif, orientation, rebuild, removed)
            if tiff is not None:
                out += _png_chunk(chunk_type, tiff)
        elif chunk_type in _PNG_TEXT_CHUNKS and body.split(b"\x00", 1)[0].lower() in _PNG_DROPPED_KEYWORDS:
            removed.append(_PNG_DROPPED_KEYWORDS[body.split(b"\x00", 1)[0].lower()])
        else:
            out += data[pos:end]
        pos = end
        if chunk_type == b"IEND":
            if pos < size:
                removed.append("trailer")
            break
    return bytes(out)


def _png_chunk(chunk_type: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + chunk_type + body + struct.pack(">I", crc)


def _strip_webp(data: bytes, orientation: int | None, rebuild: bool, removed: list[str]) -> bytes:
    """Walk the WebP RIFF chunks, edit ``EXIF``, drop ``XMP ``, fix the VP8X flags and sizes."""
    (riff_size,) = struct.unpack_from("<I", data, 4)
    end = 8 + riff_size
    if end > len(data) or riff_size < 4:
        raise _Malformed("WebP RIFF size does not match the file")
    chunks: list[bytearray] = []
    clear_flags = 0
    pos = 12
    while pos + 8 <= end:
        fourcc, length = struct.unpack_from("<4sI", data, pos)
        body_end = pos + 8 + length
        if body_end > end:
            raise _Malformed(f"WebP chunk {fourcc!r} runs past the end")
        body = data[pos + 8 : body_end]
        pos = body_end + (length & 1)
        if fourcc == b"EXIF":
            prefixed = body.startswith(_EXIF_HEADER)
            tiff = _clean_tiff(body[len(_EXIF_HEADER) :] if prefixed else body, orientation, rebuild, removed)
            if tiff is None:
                clear_flags |= _WEBP_FLAG_EXIF
                continue
            body = (_EXIF_HEADER + tiff) if prefixed else tiff
        elif fourcc == b"XMP ":
            removed.append("xmp")
            clear_flags |= _WEBP_FLAG_XMP
            continue
        chunks.append(bytearray(struct.pack("<4sI", fourcc, len(body)) + body + b"\x00" * (len(body) & 1)))
    if pos < end:
        raise _Malformed("WebP chunk header cut off")
    if clear_flags:
        for chunk in chunks:
            if chunk[:4] == b"VP8X" and len(chunk) > 8:
                chunk[8] &= ~clear_flags & 0xFF
    if len(data) > end:
        removed.append("trailer")
    body_bytes = b"".join(chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body_bytes)) + b"WEBP" + body_bytes
