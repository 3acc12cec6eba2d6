"""The HTTP server's keys and roles: an operator key and a read-only observer key.

bluesky-httpserver knows one key per server in its single-user mode. Two roles need its
multi-user mode: users, their roles, and API keys kept (hashed) in a database. ``braggscope
serve`` writes both before it starts the server (:func:`write_http_auth`):

- the configuration file (``QSERVER_HTTP_SERVER_CONFIG``): two users, ``operator`` with the
  ``user`` role (queue, plans, pause/resume/stop/abort, function execution) and ``observer``
  with the ``observer`` role (read only), neither allowed to make new keys; the provider has no
  passwords, so nobody logs in, and a request is authenticated by its key alone;
- the database: one API key per user, the key given in the configuration (``[queue] api_key``,
  ``[queue] observer_key``) or generated. The server compares the SHA-256 of the key presented
  with the one stored, the same way it stores the keys it makes itself.

The web page (:mod:`braggscope.app.web`) asks this server what a key may do
(``GET /api/auth/scopes``), so the page and the queue share keys and roles.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import string
from pathlib import Path

from braggscope.app.serve.processes import write_private
from braggscope.core.errors import ConfigError

__all__ = ["ROLES", "write_http_auth", "check_key"]

#: user -> (bluesky-httpserver role, key name in keys.json / configuration key)
ROLES = {"operator": ("user", "queue"), "observer": ("observer", "observer")}
#: Identity provider of the keys (no password login: the provider knows no user).
PROVIDER = "braggscope"


def check_key(name: str, key: str) -> str:
    """``key``, refused in one line unless it is hexadecimal (the server decodes keys as hex)."""
    if not key or len(key) < 16 or len(key) % 2 or any(c not in string.hexdigits for c in key):
        raise ConfigError(f"the {name} must be an even number (at least 16) of hexadecimal digits, "
                          f"e.g. from `openssl rand -hex 24`; got a key of {len(key or '')} characters that is not")
    return key


def write_http_auth(root: Path, keys: dict) -> Path:
    """Write the HTTP server's configuration and key database under ``root``; returns the configuration file.

    Parameters
    ----------
    root : pathlib.Path
        Directory (``<state_dir>``): ``http_auth.yml`` and ``http_auth.sqlite`` (both mode 600,
        the database made anew each time, so a changed key replaces the old one).
    keys : dict
        ``{"queue": operator key, "observer": observer key}`` (hexadecimal).
    """
    for user, (_, key_name) in ROLES.items():
        check_key(f"[queue] {'api_key' if key_name == 'queue' else key_name} ({user})", keys[key_name])
    database = root / "http_auth.sqlite"
    database.unlink(missing_ok=True)
    _store_keys(f"sqlite:///{database}", {user: keys[key_name] for user, (_, key_name) in ROLES.items()})
    database.chmod(0o600)
    config = root / "http_auth.yml"
    write_private(config, _configuration(f"sqlite:///{database}"))
    return config


def _configuration(database_uri: str) -> str:
    """The server's configuration (YAML; JSON is YAML): keys-only users with their roles."""
    # no key minting; and the observer does not read the configuration (it holds the IPython kernel's
    # connection key, which gives the worker's whole namespace)
    removed = {"user": {"scopes_remove": ["user:apikeys"]},
               "observer": {"scopes_remove": ["user:apikeys", "read:config"]}}
    config = {
        "authentication": {
            "providers": [{"provider": PROVIDER,
                           "authenticator": "bluesky_httpserver.authenticators:DictionaryAuthenticator",
                           "args": {"users_to_passwords": {}}}],
            "secret_keys": [secrets.token_hex(32)],
        },
        "api_access": {
            "policy": "bluesky_httpserver.authorization:DictionaryAPIAccessControl",
            "args": {"users": {user: {"roles": [role]} for user, (role, _) in ROLES.items()},
                     "roles": removed},
        },
        "database": {"uri": database_uri},
    }
    return json.dumps(config, indent=1)


def _store_keys(database_uri: str, keys: dict) -> None:
    """A new key database: one user per key, each key stored as the server stores its own (SHA-256)."""
    # the server's database modules: slow to import (SQLAlchemy, alembic), only where the server starts
    from bluesky_httpserver.database import orm
    from bluesky_httpserver.database.core import create_user, initialize_database
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    engine = create_engine(database_uri)
    try:
        initialize_database(engine)
        with sessionmaker(bind=engine)() as session:
            for user, key in keys.items():
                principal = create_user(session, PROVIDER, user)
                secret = bytes.fromhex(key)
                session.add(orm.APIKey(principal_id=principal.id, expiration_time=None, scopes=["inherit"],
                                       note="braggscope serve", first_eight=secret.hex()[:8],
                                       hashed_secret=hashlib.sha256(secret).digest()))
            session.commit()
    finally:
        engine.dispose()
