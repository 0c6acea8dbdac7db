"""Bearer-token authentication for phones and integrations."""

from rest_framework.authentication import TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """Accept `Authorization: Bearer <token>` (DRF's default keyword is "Token")."""

    keyword = "Bearer"
