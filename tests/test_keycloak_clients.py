"""Reading Keycloak's token-endpoint refusals: which ones are the site's own misconfiguration.

The answers against a real Keycloak are in tests/test_keycloak.py; here, any body at all is read
without an exception, and only a refusal of the client itself (not a missing service account, not a
user's expired code) counts as the site being misconfigured.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from domain.access.keycloak_clients import CLIENT_REFUSED, NO_SERVICE_ACCOUNT, oauth_error, refused_client

KEYCLOAK_DESCRIPTIONS = [
    "Invalid client or Invalid client credentials",  # a wrong secret or an unknown client (Keycloak 26)
    "Client not enabled to retrieve service account",  # right secret, no service account
    "Code not valid",
    "",
]
errors = st.sampled_from([*CLIENT_REFUSED, "invalid_grant", "invalid_request", "access_denied", ""]) | st.text(
    max_size=20
)
descriptions = st.sampled_from(KEYCLOAK_DESCRIPTIONS) | st.text(max_size=60)


@given(error=errors, description=descriptions, as_bytes=st.booleans())
def test_only_a_refusal_of_the_client_itself_is_a_misconfiguration(
    error: str, description: str, as_bytes: bool
) -> None:
    text = json.dumps({"error": error, "error_description": description})
    body = text.encode() if as_bytes else text
    assert oauth_error(body) == (error, description)
    assert refused_client(body) == (error in CLIENT_REFUSED and NO_SERVICE_ACCOUNT not in description)


@given(body=st.binary(max_size=200) | st.text(max_size=200) | st.none() | st.lists(st.integers(), max_size=3))
def test_any_answer_is_read_without_an_exception(body: object) -> None:
    error, description = oauth_error(body)
    assert isinstance(error, str) and isinstance(description, str)
    assert refused_client(body) in (True, False)
