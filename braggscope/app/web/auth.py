"""Who may see and do what on the page: the queue's HTTP server says what a key may do.

The page keeps no keys of its own. A key presented to it is sent to the queue's HTTP server
(``GET /api/auth/scopes``), which answers with the key's scopes or refuses it; the answer is
remembered ``ttl_s`` seconds. A key allowed to pause and edit the queue is an **operator**'s,
one that may only read the status and the queue an **observer**'s; any other key is refused,
and so is every request that carries none.
"""

from __future__ import annotations

import hashlib
import time

import httpx

__all__ = ["KeyChecker", "OPERATOR", "OBSERVER", "role_of", "key_from_header"]

OPERATOR, OBSERVER = "operator", "observer"
#: the scopes each role needs (bluesky-httpserver's names)
NEEDS = {OPERATOR: {"write:queue:edit", "write:queue:control", "write:plan:control", "read:status"},
         OBSERVER: {"read:status", "read:queue", "read:history"}}


def role_of(scopes) -> str | None:
    """``"operator"``, ``"observer"`` or None for a key's scopes."""
    scopes = set(scopes or ())
    for role in (OPERATOR, OBSERVER):
        if NEEDS[role] <= scopes:
            return role
    return None


def key_from_header(value: str | None) -> str | None:
    """The key of an ``Authorization: ApiKey <key>`` header (None without one)."""
    scheme, _, key = (value or "").partition(" ")
    return key.strip() or None if scheme.lower() == "apikey" else None


class KeyChecker:
    """The role of a key, asked of the queue's HTTP server and remembered.

    Parameters
    ----------
    url : str
        The queue's HTTP server.
    ttl_s : float
        Seconds an answer is remembered (a refusal: a tenth of it).
    """

    def __init__(self, url: str, *, ttl_s: float = 10.0, timeout: float = 5.0):
        self.url, self.ttl_s = url.rstrip("/"), float(ttl_s)
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout)
        self._known: dict[str, tuple[str | None, float]] = {}

    async def role(self, key: str | None) -> str | None:
        """The key's role, or None (no key, or one the HTTP server refuses).

        Raises
        ------
        httpx.HTTPError
            The HTTP server does not answer: the key cannot be checked.
        """
        if not key:
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()  # not the key itself, in memory for long
        known = self._known.get(digest)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        response = await self._client.get("/api/auth/scopes", headers={"Authorization": f"ApiKey {key}"})
        if response.status_code in (401, 403):
            role = None
        else:
            response.raise_for_status()
            role = role_of(response.json().get("scopes"))
        self._known[digest] = (role, time.monotonic() + (self.ttl_s if role else self.ttl_s / 10))
        return role

    async def close(self) -> None:
        await self._client.aclose()
