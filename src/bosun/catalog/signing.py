"""Signed provenance: every image Bosun builds carries DSSE-signed in-toto statements.

Two statements per image, each naming the image id as its subject: SLSA provenance (builder,
entry digest, package and version, base image id) and the CycloneDX SBOM. They are signed with
the organisation's Ed25519 key, whose private half lives in the encrypted secret store. Before
a container starts, the envelope must verify against a trusted public key and name exactly the
image about to run; anything else fails closed with the reason and the fix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, Key, SSlibKey

import bosun
from bosun.catalog.models import Entry
from bosun.files import write_atomic
from bosun.secrets.store import SecretError, SecretStore

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PROVENANCE = "https://slsa.dev/provenance/v1"
SBOM = "https://cyclonedx.org/bom"
BUILD_TYPE = "https://github.com/bosun-dev/bosun/build/v1"
KEY_SECRET = "bosun-signing-key"


class TrustError(RuntimeError):
    """An image cannot be trusted; the message says why and what to do."""


class UnsignedError(TrustError):
    """The image carries no attestation at all (as opposed to a bad or foreign one)."""


class Keys:
    """The signing key (private half in the secret store) and the trusted public keys."""

    def __init__(self, root: Path) -> None:
        self.secrets = SecretStore(root)
        self.trusted_dir = root / "keys" / "trusted"

    def signer(self) -> CryptoSigner | None:
        try:
            pem = self.secrets.get(KEY_SECRET)
        except SecretError:
            return None
        private = load_pem_private_key(pem.encode(), password=None)
        return CryptoSigner(private)

    def generate(self) -> SSlibKey:
        """A new signing key; its public half is trusted from now on (older keys stay trusted)."""
        signer = CryptoSigner.generate_ed25519()
        self.secrets.set(KEY_SECRET, signer.private_bytes.decode())
        self.trust(signer.public_key)
        return signer.public_key

    def trust(self, key: Key) -> None:
        write_atomic(self.trusted_dir / f"{key.keyid}.json", json.dumps(key.to_dict(), indent=2))

    def trusted(self) -> list[Key]:
        if not self.trusted_dir.is_dir():
            return []
        return [SSlibKey.from_dict(p.stem, json.loads(p.read_text())) for p in sorted(self.trusted_dir.glob("*.json"))]


def _statement(image_id: str, tag: str, predicate_type: str, predicate: dict[str, Any]) -> bytes:
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": tag, "digest": {"sha256": image_id.removeprefix("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    return json.dumps(statement, sort_keys=True).encode()


def provenance(entry: Entry, base_image_id: str) -> dict[str, Any]:
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "entry": entry.name,
                "entryDigest": entry.digest(),
                "source": entry.source.shaping(),
            },
            "resolvedDependencies": [
                {"uri": entry.base_image, "digest": {"sha256": base_image_id.removeprefix("sha256:")}}
            ],
        },
        "runDetails": {"builder": {"id": f"bosun/{bosun.__version__}"}},
    }


def attestation_path(root: Path, image_id: str) -> Path:
    return root / "attestations" / f"{image_id.removeprefix('sha256:')}.dsse.json"


def sign_image(root: Path, entry: Entry, image_id: str, base_image_id: str, sbom: str) -> Path:
    """Sign provenance and SBOM for ``image_id``; creates the signing key on first use."""
    keys = Keys(root)
    signer = keys.signer()
    if signer is None:
        keys.generate()
        signer = keys.signer()
        assert signer is not None
    envelopes = []
    for kind, predicate in ((PROVENANCE, provenance(entry, base_image_id)), (SBOM, json.loads(sbom))):
        envelope = Envelope(_statement(image_id, entry.image_tag, kind, predicate), PAYLOAD_TYPE, {})
        envelope.sign(signer)
        envelopes.append(envelope.to_dict())
    path = attestation_path(root, image_id)
    write_atomic(path, json.dumps(envelopes, indent=2))
    return path


def verify_image(root: Path, name: str, image_id: str) -> dict[str, Any]:
    """The verified provenance predicate of ``image_id``, or ``TrustError`` saying why not."""
    path = attestation_path(root, image_id)
    if not path.exists():
        raise UnsignedError(
            f"{name}: image {image_id[7:19]} is not signed; rebuild it with `bosun catalog build {name} --force`"
        )
    keys = Keys(root).trusted()
    if not keys:
        raise TrustError("no trusted signing keys: run `bosun key generate`, then rebuild")
    try:
        raw = json.loads(path.read_text())
        envelopes = [Envelope.from_dict(e) for e in raw]
    except (ValueError, KeyError, TypeError) as e:
        raise TrustError(f"{name}: the signature file {path} is damaged ({e})") from None
    predicates: dict[str, Any] = {}
    for envelope in envelopes:
        try:
            envelope.verify(keys, 1)
        except VerificationError:
            raise TrustError(
                f"{name}: image {image_id[7:19]} is signed, but not by a trusted key (or the attestation was "
                "altered); rebuild it here, or trust the signer's public key"
            ) from None
        statement = json.loads(envelope.payload)
        digests = [s.get("digest", {}).get("sha256") for s in statement.get("subject", [])]
        if digests != [image_id.removeprefix("sha256:")]:
            raise TrustError(f"{name}: the attestation names another image than {image_id[7:19]}; it does not apply")
        predicates[statement.get("predicateType", "")] = statement.get("predicate")
    if PROVENANCE not in predicates or SBOM not in predicates:
        raise TrustError(f"{name}: the attestation lacks provenance or SBOM; rebuild with `bosun catalog build {name}`")
    return dict(predicates[PROVENANCE])
