"""jwt_claims.unverified_claims: a JWT's claims read without verification, as PyJWT reads them."""
from __future__ import annotations

import base64
import json

import jwt
import pytest

from chatgpt_web.jwt_claims import expiry, payload, unverified_claims
from chatgpt_web.tokens import jwt_expiry


def _part(value) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


KEY = "a signing key of at least 32 bytes, as RFC 7518 asks"
GOOD = jwt.encode({"exp": 1900000000, "https://api.openai.com/auth": {"user_id": "u"}}, KEY,
                  algorithm="HS256")
SHAPES = [
    GOOD,
    jwt.encode({"sub": "no exp"}, KEY, algorithm="HS256"),
    jwt.encode({"exp": "soon"}, KEY, algorithm="HS256"),
    f"{_part({'alg': 'none'})}.{_part({'exp': 12.5})}.",  # unsigned: an empty signature
    f"{_part({'alg': 'HS256'})}.{_part([1, 2])}.sig",  # claims that are no object
    f"{_part([1])}.{_part({'exp': 1})}.sig",  # a header that is no object
    f"{_part({'alg': 'HS256'})}.{_part(b'not json')}.sig",
    f"{_part({'alg': 'HS256'})}.{_part({'exp': 1})}.s!g",  # a signature that is no base64url
    "a.b", "a.b.c.d", "", "not-a-jwt", "ünïcode.ünïcode.ünïcode", "e30.e30.e30",
]


def _pyjwt(token: str):
    try:
        return jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return None


@pytest.mark.parametrize("token", SHAPES)
def test_the_claims_are_pyjwts(token):
    assert unverified_claims(token) == _pyjwt(token)


def test_expiry_of_a_token():
    assert jwt_expiry(GOOD) == 1900000000.0
    assert jwt_expiry(SHAPES[1]) is None and jwt_expiry(SHAPES[2]) is None
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry(f"{_part({'alg': 'none'})}.{_part({'exp': True})}.") is None  # no number


def test_a_conduit_tokens_expiry_is_read_from_its_payload_alone():
    """The conduit token (an ES256 JWT the service cannot verify) plans its reuse by its exp."""
    conduit = f"{_part({'alg': 'ES256'})}.{_part({'conduit_uuid': 'c', 'exp': 1767132803})}.sig"
    assert expiry(payload(conduit)) == 1767132803.0
    assert expiry(payload("no-token")) is None and expiry(payload("a.b")) is None


def test_the_payload_alone_is_read_whatever_the_header_and_signature():
    """payload() (naming accounts: upstream/bootstrap.account_key) reads the middle part of any
    three-part token; unverified_claims() also wants PyJWT's header and signature."""
    no_header = f"{_part(b'not json')}.{_part({'sub': 'user-1'})}.s!g"
    assert payload(no_header) == {"sub": "user-1"} and unverified_claims(no_header) is None
    assert payload(GOOD) == unverified_claims(GOOD)
    for not_three_parts in ("a.b", "a.b.c.d", "", "not-a-jwt"):
        assert payload(not_three_parts) is None
    assert payload(f"{_part({'alg': 'HS256'})}.{_part([1, 2])}.sig") is None  # no object
