"""The catalog entry: everything Bosun needs to build, run and govern one MCP server."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator, model_validator

# Server names become the prefix of every tool name clients see (`<server>__<tool>`), so they
# must stay inside MCP's tool-name alphabet and can never contain the separator themselves.
SERVER_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$"
ServerName = Annotated[str, StringConstraints(pattern=SERVER_NAME_PATTERN)]

# Exact versions only: a range would let the same entry build different code on different days.
_EXACT_VERSION = re.compile(r"^[0-9]+(\.[0-9A-Za-z]+)*([-+.][0-9A-Za-z.]+)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
# A host, or every subdomain of one (``*.example.com``, never the apex), with an optional port.
HOST_PATTERN = r"^(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where the server's code comes from: one registry package at one exact version."""

    type: Literal["pypi", "npm"]
    package: Annotated[str, StringConstraints(min_length=1, max_length=214, pattern=r"^[@A-Za-z0-9._/-]+$")]
    version: str

    @field_validator("version")
    @classmethod
    def _exact(cls, v: str) -> str:
        if not _EXACT_VERSION.match(v):
            raise ValueError(f"must be an exact version such as 1.2.3, not {v!r}")
        return v

    @property
    def runtime(self) -> Literal["python", "node"]:
        return "python" if self.type == "pypi" else "node"

    def describe(self) -> str:
        return f"{self.type}:{self.package}{'==' if self.type == 'pypi' else '@'}{self.version}"

    def shaping(self) -> dict[str, Any]:
        return self.model_dump()


# Never part of a project's image: version control, caches, local environments and installed dependencies
# (reinstalled from the registries at build time).
PATH_IGNORED = frozenset({".git", ".hg", "__pycache__", ".venv", "venv", "node_modules", ".mypy_cache",
                          ".pytest_cache", ".ruff_cache", ".tox", ".DS_Store"})  # fmt: skip
MAX_PATH_FILES = 5000


class _Folder(_Strict):
    """A folder of the user's own whose files make the image; its version is a hash of them."""

    path: Path

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        if not v.is_absolute():
            raise ValueError(f"must be an absolute path, not {str(v)!r}")
        return v

    def files(self) -> list[tuple[str, Path]]:
        """The folder's files as (path inside the folder, file), sorted; ignored folders left out."""
        if not self.path.is_dir():
            raise ValueError(f"the folder {self.path} does not exist")
        out: list[tuple[str, Path]] = []
        for found in sorted(self.path.rglob("*")):
            relative = found.relative_to(self.path)
            if any(part in PATH_IGNORED for part in relative.parts) or found.suffix == ".pyc":
                continue
            if found.is_symlink() or not found.is_file():
                continue  # a link could pull in anything on this machine; folders come with their files
            out.append((relative.as_posix(), found))
            if len(out) > MAX_PATH_FILES:
                raise ValueError(f"{self.path} has more than {MAX_PATH_FILES} files; is it the right folder?")
        return out

    def tree_digest(self) -> str:
        digest = hashlib.sha256()
        for relative, found in self.files():
            digest.update(relative.encode() + b"\0" + hashlib.sha256(found.read_bytes()).digest())
        return digest.hexdigest()

    @property
    def version(self) -> str:
        return "local-" + self.tree_digest()[:12]

    def shaping(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json"), "tree": self.tree_digest()}


class PathSource(_Folder):
    """A Python or Node project folder of your own, packaged the way a PyPI or npm package is: the
    folder is installed with pip (its ``pyproject.toml``) or npm (its ``package.json``) at build time."""

    type: Literal["path"]
    runtime: Literal["python", "node"]

    def describe(self) -> str:
        return f"path:{self.path} ({self.runtime})"


class DockerfileSource(_Folder):
    """A build context folder and its Dockerfile, built as written (on Bosun's base images or any base
    the engine already has), then finished by Bosun: setuid bits dropped, the server's uid, its command."""

    type: Literal["dockerfile"]
    dockerfile: Annotated[str, StringConstraints(pattern=r"^[^/][^:]*$")] = "Dockerfile"

    def describe(self) -> str:
        return f"dockerfile:{self.path / self.dockerfile}"

    def files(self) -> list[tuple[str, Path]]:
        files = super().files()
        if self.dockerfile not in {relative for relative, _ in files}:
            raise ValueError(f"{self.path} has no {self.dockerfile}")
        return files


class ImageSource(_Strict):
    """An image already in the engine, named by digest only: never built by Bosun, so it runs only once
    it carries a trusted signature (``bosun image verify``) or the user signs it (``bosun image sign``)."""

    type: Literal["image"]
    image: Annotated[str, StringConstraints(pattern=r"^(sha256:[0-9a-f]{64}|[^@\s]+@sha256:[0-9a-f]{64})$")]

    @property
    def version(self) -> str:
        return "image-" + self.image.rpartition("sha256:")[2][:12]

    def describe(self) -> str:
        return f"image:{self.image}"

    def shaping(self) -> dict[str, Any]:
        return self.model_dump()


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_SECRET_REF = re.compile(r"\$\{secret:([a-z0-9][a-z0-9._-]*)\}")


class RemoteSource(_Strict):
    """An MCP server someone else runs, reached over streamable HTTP (or the older SSE transport): nothing
    is built or run here, but
    every call goes through the gateway's policy, pins, screening and audit like any other.

    Header values may name secrets as ``${secret:NAME}``; they are filled in when connecting, and only
    this server's connection carries them."""

    type: Literal["remote"]
    url: Annotated[str, StringConstraints(max_length=2000)]
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    # PEM certificates of CAs to trust for this server besides the system's: an in-house server's private CA
    ca_file: Path | None = None
    headers: dict[str, str] = {}
    auth: Literal["none", "oauth"] = "none"  # oauth: authorized once with `bosun server auth NAME`
    scopes: list[str] = []  # asked for when authorizing (default: whatever the server grants)
    allow_http: bool = False  # plain http, to a loopback address only (a server on this machine)

    @model_validator(mode="after")
    def _https_only(self) -> RemoteSource:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"url must be an https:// URL, not {self.url!r}")
        if parts.scheme == "http" and not (self.allow_http and parts.hostname in _LOOPBACK_HOSTS):
            raise ValueError(
                "url must be https; plain http is allowed only to a loopback address, with allow_http: true"
            )
        if self.ca_file is not None and not self.ca_file.is_absolute():
            raise ValueError(f"ca_file must be an absolute path, not {str(self.ca_file)!r}")
        bad = [k for k in self.headers if not re.fullmatch(r"[A-Za-z0-9-]{1,100}", k)]
        if bad:
            raise ValueError(f"invalid header name(s): {', '.join(bad)}")
        return self

    def secrets(self) -> list[str]:
        """The secrets the headers name."""
        return sorted({m.group(1) for v in self.headers.values() for m in _SECRET_REF.finditer(v)})

    def resolved_headers(self, secret: Callable[[str], str]) -> dict[str, str]:
        return {k: _SECRET_REF.sub(lambda m: secret(m.group(1)), v) for k, v in self.headers.items()}

    @property
    def version(self) -> str:
        return "remote"

    def describe(self) -> str:
        return f"remote:{self.url}"

    def shaping(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


SOURCE_TYPES = ("pypi", "npm", "path", "dockerfile", "image", "remote")


class SecretRef(_Strict):
    """A secret the server needs; only this server ever receives it."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    env: str
    required: bool = True

    @field_validator("env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not _ENV_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid environment variable name")
        return v


class Network(_Strict):
    """Egress the server may use. Empty means no network at all."""

    allow_hosts: list[Annotated[str, StringConstraints(pattern=HOST_PATTERN)]] = []


class MountRequest(_Strict):
    """A host folder the server asks for; the user grants it with a host path at enable time."""

    target: Annotated[str, StringConstraints(pattern=r"^/[^:]*$")]
    description: str = ""
    required: bool = False
    writable: bool = False


class Resources(_Strict):
    memory_mb: int = Field(default=512, ge=32, le=65536)
    cpus: float = Field(default=1.0, gt=0, le=64)
    pids: int = Field(default=128, ge=16, le=32768)


class Entry(_Strict):
    name: ServerName
    title: str
    description: str
    source: Annotated[Source | PathSource | DockerfileSource | ImageSource | RemoteSource, Field(discriminator="type")]
    command: list[str] = []
    args: list[str] = []
    env: dict[str, str] = {}
    secrets: list[SecretRef] = []
    network: Network = Network()
    mounts: list[MountRequest] = []
    scope: Literal["shared", "session"] = "shared"
    resources: Resources = Resources()
    system_packages: list[str] = []
    labels: list[str] = []

    @field_validator("command")
    @classmethod
    def _command_to_run(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if not v and not isinstance(info.data.get("source"), RemoteSource):
            raise ValueError("List should have at least 1 item: what starts the server in its container")
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not _ENV_NAME.match(k)]
        if bad:
            raise ValueError(f"invalid environment variable name(s): {', '.join(bad)}")
        return v

    @field_validator("system_packages")
    @classmethod
    def _debian_names(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not _DEBIAN_PACKAGE.match(p)]
        if bad:
            raise ValueError(f"invalid Debian package name(s): {', '.join(bad)}")
        return v

    @property
    def base_image(self) -> str:
        """What the image is made on: a Bosun base image, the user's own Dockerfile build (which Bosun
        finishes), or for an image entry the image itself."""
        if isinstance(self.source, ImageSource):
            return self.source.image
        if isinstance(self.source, RemoteSource):
            raise ValueError(f"{self.name} is a remote server; nothing is built for it")
        if isinstance(self.source, DockerfileSource):
            return f"bosun/build-{self.name}"
        return "bosun/base-python:latest" if self.source.runtime == "python" else "bosun/base-node:latest"

    @property
    def image_tag(self) -> str:
        return f"bosun/mcp-{self.name}:{self.source.version}"

    def digest(self) -> str:
        """A stable hash of everything that shapes the image; the lock uses it to skip rebuilds."""
        shaping = {"source": self.source.shaping(), "system_packages": sorted(self.system_packages)}
        return "sha256:" + hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()
