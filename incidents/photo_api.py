"""Photos over REST: reading uploads through the intake checks, and serving stored photos to those allowed.

Stored photos are never served from MEDIA_URL: a report's photo may show a face, a car plate or a
home, so it goes only to callers who may see its incident (and an order's photo only to those who may
see the order, command/api.py). Both are answered by `photo_file_response`, which streams the file
from Django's storage with the content type decided at intake, `Cache-Control: private` and
`nosniff`, and a sandboxing Content-Security-Policy for a photo opened on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, HttpResponseBase
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from config.api import error_response
from incidents.photos import CheckedPhoto, PhotoRejected, check_photos
from incidents.selectors import photos_visible_to

_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}

# What a photo route answers, for the OpenAPI schema.
PHOTO_RESPONSES: dict[Any, Any] = {
    (200, "image/jpeg"): OpenApiResponse(OpenApiTypes.BINARY, description="the photo"),
    (200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="the photo"),
    (200, "image/webp"): OpenApiResponse(OpenApiTypes.BINARY, description="the photo"),
    404: OpenApiResponse(OpenApiTypes.OBJECT, description="no such photo, or not the caller's to see"),
}


def check_uploaded_photos(files: Sequence[UploadedFile]) -> list[CheckedPhoto]:
    """Check uploaded files as photos (content, size, count, location stripped) or raise PhotoRejected."""
    if len(files) > settings.PHOTO_MAX_COUNT:
        # Refused before reading a byte of them.
        raise PhotoRejected(
            "too_many", f"{len(files)} photos is more than the limit of {settings.PHOTO_MAX_COUNT}"
        )
    # One byte over the limit is enough for check_photo to say "too large".
    uploads = [(f.name or "", f.read(settings.PHOTO_MAX_BYTES + 1)) for f in files]
    return check_photos(
        uploads,
        max_count=settings.PHOTO_MAX_COUNT,
        max_bytes=settings.PHOTO_MAX_BYTES,
        strip_location=settings.PHOTO_STRIP_LOCATION,
    )


def photo_file_response(file: FieldFile, *, content_type: str, stem: str) -> HttpResponseBase:
    """Stream a stored photo to a caller already allowed to see it (404 when its file is gone)."""
    try:
        if not file.name:
            raise FileNotFoundError("a photo row without a file")
        handle = file.storage.open(file.name, "rb")
    except OSError:
        return error_response(404, "the photo's file is missing from storage")
    name = f"{stem}.{_EXTENSIONS.get(content_type, 'bin')}"
    response = FileResponse(handle, content_type=content_type, filename=name)
    # Private: a shared cache must not keep it; an hour spares re-downloads as the consoles redraw.
    response["Cache-Control"] = "private, max-age=3600"
    response["X-Content-Type-Options"] = "nosniff"
    # Opened on its own, the photo is a document of our origin: let it run nothing.
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    return response


class PhotoView(APIView):
    """Base of the photo routes: the file is the answer whatever the Accept header says."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # An <img> asks for image/*; errors are still JSON.
        return super().perform_content_negotiation(request, force=True)


class ReportPhotoView(PhotoView):
    """A report's photo, for those who may see its incident."""

    @extend_schema(responses=PHOTO_RESPONSES, summary="Download a report's photo")
    def get(self, request: Request, pk: int) -> HttpResponseBase:
        photo = get_object_or_404(photos_visible_to(request.user), pk=pk)
        return photo_file_response(
            photo.file, content_type=photo.content_type, stem=f"report-photo-{photo.pk}"
        )
