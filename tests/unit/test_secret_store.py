from __future__ import annotations

import json
import os
from pathlib import Path

import mcp.types as types
import pytest

from bosun.runtime.backend import SecretFile
from bosun.secrets.redact import Redactor
from bosun.secrets.store import PASSPHRASE_ENV, SecretError, SecretStore

VALUE = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


def test_round_trip_and_encrypted_at_rest(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    store.set("api-key", VALUE)
    assert store.get("api-key") == VALUE
    assert VALUE not in store.path.read_text()
    assert oct(store.path.stat().st_mode & 0o777) == "0o600"
    assert oct(store.key_path.stat().st_mode & 0o777) == "0o600"
    assert [i.name for i in store.infos()] == ["api-key"]


def test_tampered_ciphertext_is_refused(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    store.set("a", VALUE)
    data = json.loads(store.path.read_text())
    ct = bytearray(data["secrets"]["a"]["ciphertext"], "ascii")
    ct[5] = ord("A") if ct[5] != ord("A") else ord("B")
    data["secrets"]["a"]["ciphertext"] = ct.decode()
    store.path.write_text(json.dumps(data))
    with pytest.raises(SecretError, match="does not decrypt"):
        store.get("a")


def test_a_value_moved_to_another_name_does_not_decrypt(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    store.set("a", VALUE)
    store.set("b", "other-value")
    data = json.loads(store.path.read_text())
    data["secrets"]["b"] = data["secrets"]["a"]
    store.path.write_text(json.dumps(data))
    with pytest.raises(SecretError, match="does not decrypt"):
        store.get("b")


def test_passphrase_mode_needs_the_passphrase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    store = SecretStore(tmp_path)
    store.set("a", VALUE)
    assert not store.key_path.exists()
    assert store.get("a") == VALUE
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(SecretError, match="does not decrypt"):
        store.get("a")
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(SecretError, match=PASSPHRASE_ENV):
        store.get("a")


def test_missing_secret_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="run `bosun secret set nope`"):
        SecretStore(tmp_path).get("nope")


@pytest.mark.parametrize("name", ["Upper", "../x", "a b", ""])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SecretError, match="not a valid secret name"):
        SecretStore(tmp_path).set(name, VALUE)


def test_secret_values_never_appear_in_repr() -> None:
    assert VALUE not in repr(SecretFile("api-key", "API_KEY", VALUE))


def test_redactor_replaces_values_everywhere_in_a_result() -> None:
    r = Redactor({"api-key": VALUE, "short": "abc"})
    result = types.CallToolResult(
        content=[types.TextContent(type="text", text=f"env: API_KEY={VALUE} and abc")],
        structured_content={"nested": [{"k": f"x{VALUE}y"}]},
    )
    clean, hits = r.model(result)
    assert hits == {"api-key"}
    assert clean.content[0].text == "env: API_KEY=[REDACTED:api-key] and abc"  # type: ignore[union-attr]
    assert clean.structured_content == {"nested": [{"k": "x[REDACTED:api-key]y"}]}
    assert VALUE not in clean.model_dump_json()


def test_redactor_leaves_clean_results_untouched() -> None:
    result = types.CallToolResult(content=[types.TextContent(type="text", text="nothing here")])
    assert Redactor({"a": VALUE}).model(result) == (result, set())
    assert os.environ.get(PASSPHRASE_ENV) is None


def test_a_result_is_searched_through_the_json_it_was_validated_from() -> None:
    """The gateway hands over the wire's JSON with the result: what it holds is found as in the model itself."""
    r = Redactor({"api-key": VALUE})
    raw = {"content": [{"type": "text", "text": f"key:\n{VALUE}"}], "structuredContent": {"k": "AKIAIOSFODNN7EXAMPLE"}}
    dirty = types.CallToolResult.model_validate(raw)
    cleaned, hits = r.model(dirty, raw)
    assert hits == {"api-key", "aws-access-key-id"}
    assert VALUE not in cleaned.model_dump_json() and "AKIAIOSFODNN7EXAMPLE" not in cleaned.model_dump_json()
    clean_raw = {"content": [{"type": "text", "text": "nothing here"}]}
    clean = types.CallToolResult.model_validate(clean_raw)
    assert r.model(clean, clean_raw)[0] is clean


def test_a_multi_line_stored_value_is_found_through_json_escapes() -> None:
    """A stored PEM key has newlines, which JSON escapes: the serialised search must still find it."""
    pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    r = Redactor({"signing-key": pem})
    dirty = types.CallToolResult(content=[types.TextContent(type="text", text=f"key:\n{pem}\n")])
    cleaned, hits = r.model(dirty)
    assert hits == {"signing-key"} and pem not in cleaned.model_dump_json() and "MIIEvQ" not in str(cleaned)
    assert r.value({"a": [f"x{pem}"]}) == ({"a": ["x[REDACTED:signing-key]"]}, {"signing-key"})
    clean = types.CallToolResult(content=[types.TextContent(type="text", text="nothing here")])
    assert r.model(clean)[0] is clean


def test_all_returns_every_value_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "pass")
    store = SecretStore(tmp_path)
    assert store.all() == {}
    store.set("a", VALUE)
    store.set("b", "second-value")
    assert store.all() == {"a": VALUE, "b": "second-value"}
