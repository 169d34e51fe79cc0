"""OIDC/JWT agents: what a token must prove, and every way one is refused."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from bosun.config import OidcSettings
from bosun.gateway.agents import Agents, Directory
from bosun.gateway.oidc import OidcError, OidcVerifier

ISSUER, AUDIENCE = "https://login.acme.example/", "bosun-gateway"


@pytest.fixture
def keys() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(path: Path, *entries: tuple[Any, str]) -> Path:
    items = []
    for public, kid in entries:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public) if isinstance(public, rsa.RSAPublicKey)
                         else jwt.algorithms.OKPAlgorithm.to_jwk(public))  # fmt: skip
        items.append({**jwk, "kid": kid})
    path.write_text(json.dumps({"keys": items}))
    return path


def token(key: Any, kid: str = "k1", alg: str = "RS256", **claims: Any) -> str:
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@acme.example", "exp": int(time.time()) + 300,
            "groups": ["finance"]} | claims  # fmt: skip
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid})


def verifier(path: Path) -> OidcVerifier:
    return OidcVerifier(OidcSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path))


def test_a_valid_token_names_its_agent_and_groups(tmp_path: Path, keys: rsa.RSAPrivateKey) -> None:
    v = verifier(jwks(tmp_path / "jwks.json", (keys.public_key(), "k1")))
    identity = v.verify(token(keys))
    assert identity.agent == "alice@acme.example" and identity.groups == ("finance",)
    assert v.verify(token(keys, groups="a b")).groups == ("a", "b")  # space-separated, as some providers send


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"aud": "another-service"}, "Audience doesn't match"),
        ({"iss": "https://evil.example/"}, "Invalid issuer"),
        ({"exp": int(time.time()) - 120}, "Signature has expired"),
        ({"exp": None}, 'Token is missing the "exp" claim'),
        ({"sub": None}, 'Token is missing the "sub" claim'),
    ],
)
def test_claims_are_checked(tmp_path: Path, keys: rsa.RSAPrivateKey, claims: dict[str, Any], why: str) -> None:
    v = verifier(jwks(tmp_path / "jwks.json", (keys.public_key(), "k1")))
    with pytest.raises(OidcError, match=why):
        v.verify(token(keys, **claims))


def test_signatures_and_algorithms(tmp_path: Path, keys: rsa.RSAPrivateKey) -> None:
    path = jwks(tmp_path / "jwks.json", (keys.public_key(), "k1"))
    v = verifier(path)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(OidcError, match="Signature verification failed"):
        v.verify(token(other))
    with pytest.raises(OidcError, match="no key with kid 'k9'"):
        v.verify(token(keys, kid="k9"))
    # Algorithm confusion: a token that names HMAC must not be checked with a key the attacker can know.
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 60}
    forged = jwt.encode(
        claims, b"a shared secret the attacker chose, 32+ bytes", algorithm="HS256", headers={"kid": "k1"}
    )
    with pytest.raises(OidcError):
        v.verify(forged)
    unsigned = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "m", "exp": int(time.time()) + 60}, None,
                          algorithm="none", headers={"kid": "k1"})  # fmt: skip
    with pytest.raises(OidcError):
        v.verify(unsigned)


def test_keys_rotate_with_the_file(tmp_path: Path, keys: rsa.RSAPrivateKey) -> None:
    path = jwks(tmp_path / "jwks.json", (keys.public_key(), "k1"))
    v = verifier(path)
    assert v.verify(token(keys)).agent
    new = ed25519.Ed25519PrivateKey.generate()
    time.sleep(0.01)
    jwks(path, (new.public_key(), "k2"))
    assert v.verify(token(new, kid="k2", alg="EdDSA")).agent == "alice@acme.example"
    with pytest.raises(OidcError, match="no key with kid 'k1'"):
        v.verify(token(keys))
    path.write_text("{not json")
    time.sleep(0.01)
    path.write_text('{"keys": []}')
    with pytest.raises(OidcError, match="cannot read the JWKS file"):
        v.verify(token(new, kid="k2", alg="EdDSA"))


def test_the_directory_takes_both_kinds_and_keeps_local_names_local(tmp_path: Path, keys: rsa.RSAPrivateKey) -> None:
    agents = Agents()
    local = agents.add("bob", ["ops"])
    agents.save(tmp_path / "agents.yaml")
    directory = Directory(tmp_path / "agents.yaml", verifier(jwks(tmp_path / "jwks.json", (keys.public_key(), "k1"))))
    assert directory.authenticate(local) == "bob" and directory.groups("bob") == ["ops"]
    assert directory.authenticate(token(keys)) == "alice@acme.example"
    assert directory.groups("alice@acme.example") == ["finance"]
    assert directory.authenticate(token(keys, sub="bob")) is None  # the provider cannot speak for a local agent
    assert directory.authenticate(token(keys, sub="operator")) is None
    assert directory.authenticate(token(keys, aud="another-service")) is None
    assert Directory(tmp_path / "agents.yaml").authenticate(token(keys)) is None  # no OIDC configured
