"""Tests for incidents.photos: type from content, refusals, and lossless removal of location data."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, PngImagePlugin

from incidents.photos import CheckedPhoto, PhotoRejected, check_photo, check_photos

GPS = ExifTags.IFD.GPSInfo
MARKER = b"SECRET-GPS-MARKER"
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="31,13.6N"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def picture(width: int = 96, height: int = 64, seed: int = 1) -> Image.Image:
    """A noisy picture, so that compressed data are long enough to cut in the middle."""
    rng = random.Random(seed)
    return Image.frombytes(
        "RGB", (width, height), bytes(rng.getrandbits(8) for _ in range(width * height * 3))
    )


def exif_with_gps(endian: str = ">") -> Image.Exif:
    exif = Image.Exif()
    exif.endian = endian
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "TestMake"
    exif[ExifTags.IFD.Exif] = {ExifTags.Base.DateTimeOriginal: "2026:03:02 10:00:00"}
    exif[GPS] = {
        ExifTags.GPS.GPSVersionID: b"\x02\x03\x00\x00",
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (31.0, 13.0, 37.4321),
        ExifTags.GPS.GPSProcessingMethod: b"ASCII\x00\x00\x00" + MARKER,
    }
    return exif


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def reopen(photo: CheckedPhoto) -> Image.Image:
    im = Image.open(io.BytesIO(photo.content))
    im.load()
    return im


def assert_no_gps(photo: CheckedPhoto) -> Image.Exif:
    assert MARKER not in photo.content
    exif = reopen(photo).getexif()
    assert GPS not in exif
    assert exif.get_ifd(GPS) == {}
    return exif


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a size but holds no picture: the shape of a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def jpeg_segment(data: bytes, marker: int) -> bytes:
    """The payload of the first JPEG segment with ``marker`` (before the first scan)."""
    pos = 2
    while data[pos + 1] != 0xDA:
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if data[pos + 1] == marker:
            return data[pos + 4 : pos + 2 + length]
        pos += 2 + length
    raise AssertionError(f"no segment {marker:#x}")


def scan_data(data: bytes) -> bytes:
    """Everything from the first start-of-scan marker: the compressed picture itself."""
    return data[data.index(b"\xff\xda") :]


# --- JPEG ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("endian", [">", "<"], ids=["big-endian-exif", "little-endian-exif"])
def test_jpeg_gps_removed_orientation_and_picture_kept(endian: str) -> None:
    im = picture()
    data = encode(im, "JPEG", quality=90, exif=exif_with_gps(endian), xmp=XMP)
    assert MARKER in data

    photo = check_photo(data, filename="IMG_0001.jpg")

    assert photo.content_type == "image/jpeg"
    assert photo.extension == "jpg"
    assert (photo.width, photo.height) == (96, 64)
    assert photo.sha256 == hashlib.sha256(photo.content).hexdigest()
    assert photo.location_stripped
    assert photo.removed == ("exif_gps", "xmp")
    exif = assert_no_gps(photo)
    assert exif[ExifTags.Base.Orientation] == 6
    assert exif[ExifTags.Base.Make] == "TestMake"
    assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == "2026:03:02 10:00:00"
    assert "xmp" not in reopen(photo).info
    assert b"ns.adobe.com/xap" not in photo.content
    # Lossless: the EXIF segment keeps its length and the compressed picture is untouched.
    assert len(jpeg_segment(photo.content, 0xE1)) == len(jpeg_segment(data, 0xE1))
    assert scan_data(photo.content) == scan_data(data)
    assert reopen(photo).tobytes() == Image.open(io.BytesIO(data)).tobytes()


def test_jpeg_without_location_is_stored_unchanged() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 3
    data = encode(picture(), "JPEG", exif=exif)
    photo = check_photo(data, filename="plain.jpg")
    assert photo.content == data
    assert not photo.location_stripped
    assert photo.removed == ()


def test_strip_location_false_keeps_the_bytes_exactly() -> None:
    data = encode(picture(), "JPEG", exif=exif_with_gps(), xmp=XMP) + b"trailing bytes"
    photo = check_photo(data, filename="keep.jpg", strip_location=False)
    assert photo.content == data
    assert photo.sha256 == hashlib.sha256(data).hexdigest()
    assert not photo.location_stripped


def test_jpeg_trailer_after_end_of_image_is_dropped() -> None:
    data = encode(picture(), "JPEG")
    motion_photo = b"\x00\x00\x00\x18ftypmp42" + b"\xa9xyz+31.2270+121.4760/" * 4
    photo = check_photo(data + motion_photo, filename="motion.jpg")
    assert photo.content == data
    assert photo.removed == ("trailer",)


def test_mpo_keeps_the_first_picture_only() -> None:
    data = encode(
        picture(seed=1), "MPO", save_all=True, append_images=[picture(seed=2)], exif=exif_with_gps()
    )
    assert data.count(MARKER) == 2  # both pictures carry the location
    photo = check_photo(data, filename="portrait.jpg")
    assert photo.content_type == "image/jpeg"
    assert set(photo.removed) == {"exif_gps", "mpf", "trailer"}
    assert_no_gps(photo)
    again = reopen(photo)
    assert again.format == "JPEG"
    assert again.tobytes() == Image.open(io.BytesIO(data)).tobytes()


LATITUDE = struct.pack("<6I", 31, 1, 13, 1, 374321, 10000)


def tiff_with_gps(*, linked: bool = True) -> bytes:
    """Little-endian EXIF by hand: IFD0 (Make, Orientation, GPSInfo), the GPS IFD, then IFD1.

    With ``linked=False`` the GPSInfo entry is ResolutionUnit instead, leaving the GPS IFD
    orphaned, as editors that "remove location" by unlinking it do.
    """
    make = b"Make\x00\x00"
    ifd0_at, make_at = 8, 8 + 2 + 3 * 12 + 4
    gps_at = make_at + len(make)
    lat_at = gps_at + 2 + 3 * 12 + 4
    marker_at = lat_at + len(LATITUDE)
    ifd1_at = marker_at + len(MARKER)
    tiff = b"II*\x00" + struct.pack("<I", ifd0_at)
    tiff += struct.pack("<H", 3)
    tiff += struct.pack("<HHII", 0x010F, 2, 5, make_at)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0)
    if linked:
        tiff += struct.pack("<HHII", GPS, 4, 1, gps_at)
    else:
        tiff += struct.pack("<HHIHH", 0x0128, 3, 1, 2, 0)
    tiff += struct.pack("<I", ifd1_at) + make
    tiff += struct.pack("<H", 3)
    tiff += struct.pack("<HHI2sxx", 1, 2, 2, b"N")
    tiff += struct.pack("<HHII", 2, 5, 3, lat_at)
    tiff += struct.pack("<HHII", 27, 7, len(MARKER), marker_at)
    tiff += struct.pack("<I", 0) + LATITUDE + MARKER
    tiff += struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0103, 3, 1, 6, 0) + struct.pack("<I", 0)
    assert len(tiff) == ifd1_at + 2 + 12 + 4
    return tiff


def test_ifd1_thumbnail_directory_survives_the_edit() -> None:
    tiff = tiff_with_gps()
    data = encode(picture(), "JPEG", exif=b"Exif\x00\x00" + tiff)
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(GPS)[ExifTags.GPS.GPSLatitudeRef] == "N"

    photo = check_photo(data, filename="thumb.jpg")

    assert photo.removed == ("exif_gps",)
    exif = assert_no_gps(photo)
    assert exif[ExifTags.Base.Orientation] == 6
    assert exif[ExifTags.Base.Make] == "Make"
    assert exif.get_ifd(ExifTags.IFD.IFD1) == {0x0103: 6}
    assert LATITUDE not in photo.content
    assert len(jpeg_segment(photo.content, 0xE1)) == len(tiff) + 6


def test_orphaned_gps_directory_is_zeroed() -> None:
    data = encode(picture(), "JPEG", exif=b"Exif\x00\x00" + tiff_with_gps(linked=False))
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(GPS) == {}  # invisible to readers …
    assert MARKER in data  # … but still in the file

    photo = check_photo(data, filename="unlinked.jpg")

    assert photo.removed == ("exif_unreferenced",)
    assert MARKER not in photo.content
    assert LATITUDE not in photo.content
    exif = reopen(photo).getexif()
    assert exif[ExifTags.Base.Orientation] == 6
    assert exif.get_ifd(ExifTags.IFD.IFD1) == {0x0103: 6}
    assert scan_data(photo.content) == scan_data(data)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_unreadable_exif_is_replaced_not_kept() -> None:
    data = encode(picture(), "JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xf0" + MARKER)
    photo = check_photo(data, filename="odd.jpg")
    assert "exif" in photo.removed
    assert MARKER not in photo.content
    assert scan_data(photo.content) == scan_data(data)


def test_truncated_jpeg_is_corrupt() -> None:
    data = encode(picture(320, 240), "JPEG", quality=95)
    with pytest.raises(PhotoRejected) as info:
        check_photo(data[: len(data) * 2 // 3], filename="cut.jpg")
    assert info.value.reason == "corrupt"
    assert "cut.jpg" in str(info.value)
    assert info.value.filename == "cut.jpg"


# --- PNG and WebP -------------------------------------------------------------------------------


def test_png_gps_removed_and_xmp_text_dropped() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    info.add_text("Comment", "kept")
    data = encode(picture(), "PNG", exif=exif_with_gps(), pnginfo=info)

    photo = check_photo(data, filename="screen.png")

    assert photo.content_type == "image/png"
    assert photo.extension == "png"
    assert set(photo.removed) == {"exif_gps", "xmp"}
    exif = assert_no_gps(photo)
    assert exif[ExifTags.Base.Orientation] == 6
    again = reopen(photo)
    assert again.info.get("Comment") == "kept"
    assert "XML:com.adobe.xmp" not in again.info
    assert again.tobytes() == picture().tobytes()
    # The edited chunk has a correct CRC: the stripped file passes the same checks.
    assert check_photo(photo.content, filename="again.png").content == photo.content


def test_webp_gps_removed_xmp_dropped_and_flags_fixed() -> None:
    data = encode(picture(), "WEBP", lossless=True, exif=exif_with_gps(), xmp=XMP)
    assert data[20] & 0x04  # VP8X says there is XMP

    photo = check_photo(data, filename="pic.webp")

    assert photo.content_type == "image/webp"
    assert photo.extension == "webp"
    assert set(photo.removed) == {"exif_gps", "xmp"}
    exif = assert_no_gps(photo)
    assert exif[ExifTags.Base.Orientation] == 6
    assert b"XMP " not in photo.content
    assert not photo.content[20] & 0x04
    assert struct.unpack_from("<I", photo.content, 4)[0] == len(photo.content) - 8
    assert reopen(photo).tobytes() == picture().tobytes()
    assert check_photo(photo.content, filename="again.webp").content == photo.content


def test_png_named_jpg_is_stored_as_png() -> None:
    data = encode(picture(), "PNG")
    photo = check_photo(data, filename="photo.jpg")
    assert photo.content_type == "image/png"
    assert photo.extension == "png"
    assert photo.content == data


def test_corrupt_png_is_refused() -> None:
    data = bytearray(encode(picture(), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 40] ^= 0xFF
    with pytest.raises(PhotoRejected) as info:
        check_photo(bytes(data), filename="bad.png")
    assert info.value.reason == "corrupt"


def test_animated_png_is_refused() -> None:
    data = encode(picture(seed=1), "PNG", save_all=True, append_images=[picture(seed=2)])
    with pytest.raises(PhotoRejected, match="animated") as info:
        check_photo(data, filename="anim.png")
    assert info.value.reason == "unsupported_type"


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"this is not a picture\n", "not a JPEG, PNG or WebP", id="text"),
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"GIF89a" + bytes(64), "not a JPEG, PNG or WebP", id="gif"),
        pytest.param(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIC", id="heic"),
        pytest.param(b"\xff\xd8\xff\xe0 not really a jpeg", "damaged", id="jpeg-magic-only"),
    ],
)
def test_content_not_a_supported_image_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(PhotoRejected, match=message) as info:
        check_photo(data, filename="photo.jpg")
    assert info.value.reason in {"unsupported_type", "corrupt"}
    assert "photo.jpg" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_text_named_jpg_is_unsupported_type() -> None:
    with pytest.raises(PhotoRejected) as info:
        check_photo(b"hello", filename="photo.jpg")
    assert info.value.reason == "unsupported_type"


def test_too_large_is_refused_before_anything_else() -> None:
    data = encode(picture(), "PNG")
    assert check_photo(data, max_bytes=len(data)).content == data
    with pytest.raises(PhotoRejected, match=r"big\.png") as info:
        check_photo(data, filename="big.png", max_bytes=len(data) - 1)
    assert info.value.reason == "too_large"
    with pytest.raises(PhotoRejected) as info:
        check_photo(b"x" * 11 * 1024 * 1024, filename="huge.jpg")
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    ("width", "height"),
    [
        pytest.param(8_000, 8_000, id="over-our-limit"),
        pytest.param(100_000, 100_000, id="over-pillow-bomb-limit"),
    ],
)
def test_pixel_bomb_header_is_refused(width: int, height: int) -> None:
    with pytest.raises(PhotoRejected) as info:
        check_photo(png_header_only(width, height), filename="bomb.png")
    assert info.value.reason == "too_many_pixels"
    assert "bomb.png" in str(info.value)


def test_pixel_limit_is_a_parameter() -> None:
    data = encode(picture(96, 64), "JPEG")
    assert check_photo(data, max_pixels=96 * 64).width == 96
    with pytest.raises(PhotoRejected) as info:
        check_photo(data, max_pixels=96 * 64 - 1)
    assert info.value.reason == "too_many_pixels"


# --- several photos -----------------------------------------------------------------------------


def test_check_photos_limits_the_count() -> None:
    data = encode(picture(16, 16), "JPEG")
    files = [(f"p{i}.jpg", data) for i in range(10)]
    assert len(check_photos(files[:9])) == 9
    with pytest.raises(PhotoRejected, match="10 photos") as info:
        check_photos(files)
    assert info.value.reason == "too_many"
    assert len(check_photos(files[:2], max_count=2)) == 2


def test_check_photos_names_the_bad_file() -> None:
    good = encode(picture(16, 16), "JPEG", exif=exif_with_gps())
    photos = check_photos([("a.jpg", good)])
    assert photos[0].location_stripped
    with pytest.raises(PhotoRejected, match=r"notes\.jpg") as info:
        check_photos([("a.jpg", good), ("notes.jpg", b"meeting notes")])
    assert info.value.reason == "unsupported_type"
    assert check_photos([("a.jpg", good)], strip_location=False)[0].content == good


# --- robustness ---------------------------------------------------------------------------------

SEEDS = [
    encode(picture(), "JPEG", exif=exif_with_gps(), xmp=XMP),
    encode(picture(), "PNG", exif=exif_with_gps()),
    encode(picture(), "WEBP", exif=exif_with_gps("<"), xmp=XMP),
]


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=300, deadline=None)
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(
        st.tuples(st.integers(0, 600), st.integers(0, 255), st.booleans()), min_size=1, max_size=4
    ),
)
def test_damaged_input_is_refused_or_accepted_never_crashes(
    seed: bytes, edits: list[tuple[int, int, bool]]
) -> None:
    data = bytearray(seed)
    for position, value, delete in edits:
        position %= len(data)
        if delete:
            del data[position : position + 1 + value % 16]
        else:
            data[position] = value
    try:
        photo = check_photo(bytes(data), filename="fuzz")
    except PhotoRejected as exc:
        assert exc.reason in {"unsupported_type", "corrupt", "too_many_pixels"}
    else:
        assert photo.sha256 == hashlib.sha256(photo.content).hexdigest()
        assert GPS not in Image.open(io.BytesIO(photo.content)).getexif()
