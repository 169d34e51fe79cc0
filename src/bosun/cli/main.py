"""bosun: run MCP servers in hardened containers behind one governed gateway, as easily as docker run."""

from __future__ import annotations

import contextlib
import gc
import getpass
import json
import os
import shutil
import sys
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, cast

import anyio
import typer
import yaml
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from rich.markup import escape

from bosun import logs
from bosun.audit.journal import settle
from bosun.audit.log import Anchor, AuditLog, Record
from bosun.catalog import sources
from bosun.catalog.formats.common import ImportResult
from bosun.catalog.formats.read import read_path
from bosun.catalog.loader import Catalog, CatalogError
from bosun.catalog.models import DockerfileSource, Entry, PathSource, RemoteSource
from bosun.catalog.pins import PinStore
from bosun.catalog.project import Kind, entry_from_dir
from bosun.catalog.sbom import rows as sbom_rows
from bosun.catalog.sbom import sbom_path
from bosun.catalog.signing import Keys, TrustError, verify_image
from bosun.catalog.sources import Source, Sources, Trust, read_source
from bosun.catalog.vulns.db import VulnDB
from bosun.catalog.vulns.scan import check_image
from bosun.catalog.vulns.waivers import Waiver, Waivers
from bosun.cli.clients import client_app
from bosun.cli.output import JsonOpt, console, err_console, fail, progress_printer, table
from bosun.cli.sandbox import sandbox_app
from bosun.config import ConfigError, MountGrant, Settings, VulnSettings
from bosun.files import write_atomic
from bosun.gateway.agents import OPERATOR, Agents, Directory
from bosun.home import Home
from bosun.images.audit import DEFAULT_MIN_SCORE, audit
from bosun.images.base import BASE_DEBIAN, BASE_NODE, BASE_PYTHON, SERVER_UID, ensure_base_images, image_exists
from bosun.images.build import build_entry, render_dockerfile, sign_adopted
from bosun.images.dockerbuild import ImageBuildError
from bosun.images.lock import Lock
from bosun.runtime import engine
from bosun.secrets.store import SecretError, SecretStore

app = typer.Typer(
    help=__doc__,
    no_args_is_help=True,
    rich_markup_mode="rich",
    epilog="Start here: [bold]bosun doctor[/], then [bold]bosun demo[/]. State lives in BOSUN_HOME (~/.bosun).",
)
engine_app = typer.Typer(help="Find, install and start the Docker Engine.", no_args_is_help=True)
image_app = typer.Typer(
    help="Images: Debian bases built with no registry, SBOMs, hardening audits, signature checks.",
    no_args_is_help=True,
)
catalog_app = typer.Typer(help="Catalog entries: what servers exist and how they are built.", no_args_is_help=True)
server_app = typer.Typer(help="Which servers the gateway serves, and what they are granted.", no_args_is_help=True)
gateway_app = typer.Typer(help="Run the MCP gateway that agents connect to.", no_args_is_help=True)
tools_app = typer.Typer(help="List and call tools through the gateway.", no_args_is_help=True)
key_app = typer.Typer(help="The signing key that vouches for every image Bosun builds.", no_args_is_help=True)
secret_app = typer.Typer(
    help="Secrets, encrypted at rest; each reaches only the servers that declare it.", no_args_is_help=True
)
app.add_typer(engine_app, name="engine")
app.add_typer(image_app, name="image")
app.add_typer(catalog_app, name="catalog")
app.add_typer(server_app, name="server")
app.add_typer(gateway_app, name="gateway")
app.add_typer(tools_app, name="tools")
app.add_typer(secret_app, name="secret")
app.add_typer(key_app, name="key")
vuln_app = typer.Typer(
    help="Known vulnerabilities: an offline OSV database, the start-time bar, and waivers.", no_args_is_help=True
)
vuln_db_app = typer.Typer(help="The offline OSV advisory database.", no_args_is_help=True)
vuln_app.add_typer(vuln_db_app, name="db")
app.add_typer(vuln_app, name="vuln")
audit_app = typer.Typer(
    help="The tamper-evident record of every request and decision the gateway handled.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")
agent_app = typer.Typer(help="Agents: who may call the gateway, each with its own token.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(client_app, name="client")
app.add_typer(sandbox_app, name="sandbox")
policy_app = typer.Typer(
    help="Central policy: who may call which tool with which arguments (BOSUN_HOME/policy.yaml).",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")


def _home() -> Home:
    return Home.default().ensure()


def _catalog(home: Home) -> Catalog:
    try:
        return sources.load(home.root)
    except CatalogError as e:
        fail("the catalog has invalid entries:\n" + str(e))


def _engine(home: Home) -> Any:
    try:
        engine.ensure_engine(home.log_dir, progress_printer())
        return engine.client()
    except engine.EngineError as e:
        fail(str(e))


def _settings(home: Home) -> Settings:
    try:
        return Settings.load(home.config_file)
    except ConfigError as e:
        fail(str(e))


# -- engine & doctor ---------------------------------------------------------------------------


@engine_app.command("ensure")
def engine_ensure() -> None:
    """Use the running engine, or install Debian's docker.io and start dockerd, then wait for it."""
    home = _home()
    try:
        info = engine.ensure_engine(home.log_dir, progress_printer())
    except engine.EngineError as e:
        fail(str(e))
    console.print(
        f"engine {info.version} (API {info.api_version}, {info.storage_driver}, cgroup v{info.cgroup_version})"
    )


@app.command()
def doctor(as_json: bool = JsonOpt) -> None:
    """Check the engine, base images, built servers and state directory; print the fix for each gap."""
    home = Home.default()
    checks: list[dict[str, str]] = []

    def check(name: str, ok: bool, detail: str, fix: str = "", required: bool = True) -> None:
        status = "ok" if ok else "missing" if required else "advised"
        checks.append({"check": name, "status": status, "detail": detail, "fix": "" if ok else fix})

    info = engine.probe()
    check("engine", info is not None, f"Docker {info.version}" if info else "no engine answers", "bosun engine ensure")
    check("state directory", home.root.exists(), str(home.root), f"mkdir -p {home.root}")
    if info:
        client = engine.client()
        for ref in (BASE_DEBIAN, BASE_PYTHON, BASE_NODE):
            check(f"image {ref}", image_exists(client, ref), ref, "bosun image base")
        lock = Lock.load(home.lock_file)
        entries = _catalog(home).entries
        for name in Settings.load(home.config_file).enabled():
            if name in entries and isinstance(entries[name].source, RemoteSource):
                continue  # nothing to build; reached when used
            locked = lock.images.get(name)
            present = locked is not None and image_exists(client, locked.image_id)
            check(f"server {name}", present, locked.tag if locked else "not built", f"bosun catalog build {name}")
        if image_exists(client, BASE_DEBIAN):
            check("server stdio", *_stdio_check(home))
    check(
        "debootstrap",
        shutil.which("debootstrap") is not None,
        "needed only to build base images",
        "apt-get install -y debootstrap (bosun image base does this itself as root)",
    )
    known = sum(VulnDB(home.vuln_db).stats().values())
    check(
        "vulnerability database",
        known > 0,
        f"{known} advisories" if known else "none: images start without a vulnerability check",
        "bosun vuln db import DIR|ZIP (OSV records)",
        required=False,
    )
    table(checks, ["check", "status", "detail", "fix"], as_json)
    if any(c["status"] == "missing" for c in checks):
        raise typer.Exit(1)


def _stdio_check(home: Home) -> tuple[bool, str, str]:
    """How the gateway will reach servers' stdio, proven with a probe container when that is FIFOs."""
    from bosun.runtime.docker import DockerBackend

    if Settings.load(home.config_file).stdio == "attach":
        return True, "the engine's attach stream (stdio: attach)", ""
    backend = DockerBackend()
    if not backend.local:
        return True, "the engine's attach stream (the engine is not on this host)", ""
    why = anyio.run(backend.probe_fifos, BASE_DEBIAN, home.stdio_dir, f"{SERVER_UID}:{SERVER_UID}")
    if why is None:
        return True, "FIFOs (a probe container echoed through them)", ""
    return False, f"FIFOs fail: {why}", "set `stdio: attach` in config.yaml"


# -- images ------------------------------------------------------------------------------------


@image_app.command("base")
def image_base(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the images exist.")] = False,
) -> None:
    """Build bosun/base-debian (debootstrap + import), bosun/base-python and bosun/base-node (Node 22)."""
    home = _home()
    client = _engine(home)
    try:
        ids = ensure_base_images(client, home.cache_dir, progress_printer(), force=force)
    except (RuntimeError, ImageBuildError) as e:
        fail(str(e))
    for ref, image_id in ids.items():
        console.print(f"{ref}  {image_id[:19]}")


@image_app.command("sbom")
def image_sbom(
    name: Annotated[str, typer.Argument(help="Catalog entry whose built image to describe.")],
    fmt: Annotated[str, typer.Option("--format", help="cyclonedx (JSON document) or table.")] = "table",
) -> None:
    """The image's SBOM: Debian packages, Python distributions and npm packages, with purls."""
    if fmt not in ("cyclonedx", "table"):
        fail(f"--format must be cyclonedx or table, not {fmt!r}")
    home = _home()
    locked = Lock.load(home.lock_file).images.get(name)
    if locked is None:
        fail(f"{name} is not built: run `bosun catalog build {name}`")
    path = sbom_path(home.root, locked.image_id)
    if not path.exists():
        fail(f"no SBOM for {locked.tag} ({locked.image_id[7:19]}): run `bosun catalog build {name}` to make one")
    document = path.read_text()
    if fmt == "cyclonedx":
        print(document)
        return
    table(sbom_rows(document), ["ecosystem", "name", "version", "purl"], False, title=f"{locked.tag}")


@image_app.command("audit")
def image_audit(
    name: Annotated[str, typer.Argument(help="Catalog entry whose built image to audit.")],
    as_json: bool = JsonOpt,
) -> None:
    """Hardening audit: non-root user, setuid/setgid files, world-writable paths, secrets in layers,
    package manager caches, size. Prints a score out of 100 and every finding; exits 1 below 80."""
    home = _home()
    locked = Lock.load(home.lock_file).images.get(name)
    if locked is None:
        fail(f"{name} is not built: run `bosun catalog build {name}`")
    report = audit(_engine(home), locked.image_id)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        console.print(f"{locked.tag}: [bold]{report.score}/100[/], {report.size_mb:.0f} MB")
        table([f.__dict__ for f in report.findings], ["severity", "check", "detail"], False)
    if report.score < DEFAULT_MIN_SCORE:
        raise typer.Exit(1)


@image_app.command("verify")
def image_verify(name: Annotated[str, typer.Argument(help="Catalog entry whose built image to verify.")]) -> None:
    """The check run before every start: signed by a trusted key, untampered, naming exactly this image.
    Exits non-zero when it fails."""
    home = _home()
    locked = Lock.load(home.lock_file).images.get(name)
    if locked is None:
        fail(f"{name} is not built: run `bosun catalog build {name}`")
    try:
        predicate = verify_image(home.root, name, locked.image_id)
    except TrustError as e:
        fail(str(e))
    source = predicate["buildDefinition"]["externalParameters"]["source"]
    builder = predicate["runDetails"]["builder"]["id"]
    if source.get("type") in ("path", "dockerfile"):
        built_from = f"{source['type']} {source.get('path')} (files {str(source.get('tree', ''))[:12]})"
    elif source.get("type") == "image":
        built_from = f"image {source.get('image')}, vouched for"
    else:
        built_from = f"{source.get('type')} {source.get('package')}=={source.get('version')}"
    console.print(f"verified {locked.tag} ({locked.image_id[7:19]}): {built_from}, built by {builder}")


@image_app.command("sign")
def image_sign(name: Annotated[str, typer.Argument(help="An image entry (source: image) to vouch for.")]) -> None:
    """Vouch for an image Bosun did not build: sign its provenance (the image, by digest) and its SBOM with
    your key, so the gateway starts it. Review it first (`bosun image sbom NAME`, `bosun image audit NAME`,
    `bosun vuln check NAME`): a signature says you trust what is inside."""
    home = _home()
    entry = _catalog(home).entries.get(name)
    if entry is None:
        fail(f"no catalog entry named {name!r}; see `bosun catalog ls`")
    try:
        path = sign_adopted(_engine(home), entry, home)
    except ValueError as e:
        fail(str(e))
    locked = Lock.load(home.lock_file).images[name]
    console.print(f"signed {locked.tag} ({locked.image_id[7:19]}) -> {path}")
    _capture(home, [name])


@image_app.command("scan")
def image_scan(
    name: Annotated[str, typer.Argument(help="Catalog entry whose built image to scan.")],
    as_json: bool = JsonOpt,
) -> None:
    """Match the image's SBOM against the vulnerability database (ecosystem-aware version ranges for
    PyPI, npm and Debian). Exits 1 when a finding would stop the server from starting."""
    home = _home()
    locked = Lock.load(home.lock_file).images.get(name)
    if locked is None:
        fail(f"{name} is not built: run `bosun catalog build {name}`")
    if not VulnDB(home.vuln_db).exists():
        fail("no vulnerability database: import OSV advisories with `bosun vuln db import DIR|ZIP`")
    block_at = _settings(home).vulnerabilities.block_at
    verdict = check_image(home, name, locked.image_id, block_at, date.today())
    if verdict is None:
        fail(f"no SBOM for {locked.tag}: run `bosun catalog build {name} --force`")
    state = {id(f): "BLOCKS" for f in verdict.blocking} | {id(f): "waived" for f in verdict.waived}
    rows = [
        f.as_dict() | {"status": state.get(id(f), "below bar"), "fixed": ", ".join(f.fixed)}
        for f in verdict.blocking + verdict.waived + verdict.below
    ]
    if as_json:
        print(json.dumps({"image": locked.tag, "block_at": block_at, "findings": rows}, indent=2, default=str))
    else:
        table(rows, ["id", "severity", "ecosystem", "package", "version", "fixed", "status"], False, title=locked.tag)
        console.print(
            f"{len(rows)} finding(s): {len(verdict.blocking)} blocking at {block_at} or above, "
            f"{len(verdict.waived)} waived"
        )
    if verdict.blocking:
        raise typer.Exit(1)


# -- catalog -----------------------------------------------------------------------------------


@catalog_app.command("ls")
def catalog_ls(as_json: bool = JsonOpt) -> None:
    """List catalog entries, whether each is built and enabled."""
    home = _home()
    lock = Lock.load(home.lock_file)
    enabled = set(_settings(home).enabled())
    catalog = _catalog(home)
    rows = [
        {
            "name": e.name,
            "title": e.title,
            "package": e.source.describe(),
            "from": catalog.origin(e.name).source,
            "scope": e.scope,
            "built": "yes" if e.name in lock.images else "no",
            "enabled": "yes" if e.name in enabled else "no",
            "labels": ",".join(e.labels),
        }
        for e in catalog
    ]
    table(rows, ["name", "title", "package", "from", "scope", "built", "enabled", "labels"], as_json)


@catalog_app.command("show")
def catalog_show(
    name: str,
    dockerfile: Annotated[bool, typer.Option("--dockerfile", help="Also print the Dockerfile Bosun builds.")] = False,
) -> None:
    """Show one entry in full (YAML-equivalent JSON)."""
    entry = _catalog(_home()).entries.get(name)
    if entry is None:
        fail(f"no catalog entry named {name!r}; see `bosun catalog ls`")
    console.print_json(entry.model_dump_json())
    if dockerfile:
        console.print(render_dockerfile(entry), markup=False, highlight=False)


@catalog_app.command("build")
def catalog_build(
    names: Annotated[list[str] | None, typer.Argument(help="Entries to build.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Build every catalog entry.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the lock says it is current.")] = False,
    min_audit_score: Annotated[
        int, typer.Option(help="Refuse an image whose hardening audit scores lower (see `bosun image audit`).")
    ] = DEFAULT_MIN_SCORE,
    skip_capture: Annotated[
        bool, typer.Option("--no-capture", help="Do not start new images to pin their tools (they pin at first use).")
    ] = False,
) -> None:
    """Build bosun/mcp-NAME:VERSION images from the entries' pinned packages; unchanged ones are skipped.

    Each new image is audited (refused below --min-audit-score), gets a signed SBOM and provenance,
    and is started once to capture its tools, prompts and resources: a server seen for the first time
    has its tools pinned (any that look poisoned are held back), and tools that differ from earlier
    pins are reported and withheld until `bosun catalog approve`."""
    home = _home()
    catalog = _catalog(home)
    targets = [e.name for e in catalog] if all_ else list(names or [])
    if not targets:
        fail("name at least one entry, or pass --all")
    unknown = [n for n in targets if n not in catalog.entries]
    if unknown:
        fail(f"not in the catalog: {', '.join(unknown)}; see `bosun catalog ls`")
    _build(home, [catalog.entries[n] for n in targets], force, min_audit_score, capture=not skip_capture)


def _build(home: Home, entries: list[Entry], force: bool, min_audit_score: int, capture: bool = True) -> None:
    """Build each entry (unchanged ones are skipped), then start each new image once to pin its surface."""
    client = _engine(home)
    to_capture = []
    for entry in entries:
        if isinstance(entry.source, RemoteSource):
            console.print(f"remote  {entry.name}  {entry.source.url}: nothing to build; its tools pin at first use")
            continue
        try:
            r = build_entry(client, entry, home, progress_printer("  "), force, min_audit_score)
        except (ImageBuildError, RuntimeError, ValueError) as e:
            fail(str(e))
        console.print(f"{'built' if r.rebuilt else 'up to date'}  {r.tag}  {r.image_id[7:19]}")
        if r.rebuilt or not Lock.load(home.lock_file).images[entry.name].surface:
            to_capture.append(entry.name)
    if to_capture and capture:
        _capture(home, to_capture)


def _capture(home: Home, servers: list[str]) -> None:
    """Start each new image once: pin its tools if it has none yet, else report drift from the pins."""
    from bosun.gateway.core import Gateway
    from bosun.gateway.upstream import UpstreamError
    from bosun.runtime.docker import DockerBackend

    async def run() -> None:
        async with Gateway(home, DockerBackend()) as gw:
            for name in servers:
                try:
                    surface = await gw.capture(name)
                except (UpstreamError, MCPError) as e:
                    err_console.print(f"  {name}: could not read its tools ({e}); they are pinned at first use")
                    continue
                lock = Lock.load(home.lock_file)
                lock.images[name] = lock.images[name].model_copy(update={"surface": surface.digests()})
                lock.save(home.lock_file)
                console.print(
                    f"  {name}: {len(surface.tools)} tools, {len(surface.prompts)} prompts, "
                    f"{len(surface.resources)} resources captured"
                )
                for tool, why in sorted(surface.withheld.items()):
                    console.print(f"  [yellow]withheld[/] {name}__{tool}: {escape(why)}", highlight=False)
                if surface.withheld:
                    console.print(f"  review with `bosun catalog approve {name}`")

    anyio.run(run)


PackageOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--package",
        help="NAME=pypi:PKG==VERSION or NAME=npm:PKG@VERSION: the real package of a server that a Docker "
        "catalog names only by image. Repeat for several.",
    ),
]


def _packages(specs: list[str] | None) -> dict[str, str]:
    out = {}
    for spec in specs or []:
        name, sep, package = spec.partition("=")
        if not sep or not name:
            fail(f"--package {spec!r}: write NAME=pypi:PKG==VERSION or NAME=npm:PKG@VERSION")
        out[name] = package
    return out


def _print_report(result: ImportResult) -> None:
    name = result.entry.name if result.entry else "-"
    console.print(f"[bold]{result.origin}[/] -> {name}", highlight=False)
    for note in result.notes:
        console.print(f"  mapped       {note}", highlight=False, markup=False)
    for gap in result.unsupported:
        console.print(f"  [yellow]not carried[/] {escape(gap)}", highlight=False)


@catalog_app.command("import")
def catalog_import(
    path: Annotated[
        Path,
        typer.Argument(
            help="A file or a folder tree of: official registry server.json, Docker server.yaml, "
            "a Docker catalog (version 2, registry: map), or Bosun entries."
        ),
    ],
    package: PackageOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; write nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace entries imported or written before.")] = False,
) -> None:
    """Copy servers from other catalogs into BOSUN_HOME/catalog as your own entries, with a report
    per server of what was mapped and what was not carried over (nothing is dropped silently).
    Your own entries override every other source. To keep following a catalog instead, see
    `bosun catalog add`."""
    home = _home()
    if not path.exists():
        fail(f"{path} does not exist")
    results = read_path(path, _packages(package))
    if not results:
        fail(f"no catalog files under {path}")
    others = _catalog(home)
    written = 0
    for result in results:
        _print_report(result)
        if result.entry is None:
            continue
        target = home.root / "catalog" / f"{result.entry.name}.yaml"
        if target.exists() and not force:
            err_console.print(f"  {target} exists: not replaced (use --force)")
            continue
        if result.entry.name in others.entries and not target.exists():
            console.print(f"  note: overrides {result.entry.name!r} from {others.origin(result.entry.name).source}")
        if not dry_run:
            write_atomic(target, yaml.safe_dump(result.entry.model_dump(mode="json"), sort_keys=False))
            written += 1
    console.print(f"{written} entr{'y' if written == 1 else 'ies'} written to {home.root / 'catalog'}")


@catalog_app.command("add")
def catalog_add(
    name: Annotated[str, typer.Argument(help="A short name for the source, e.g. team or community.")],
    path: Annotated[Path, typer.Argument(help="A catalog file or folder, in any format `catalog import` reads.")],
    trust: Annotated[
        Trust, typer.Option(help="How far you trust it; decides who wins a name clash (high > medium > low).")
    ] = Trust.low,
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned",
            help="Let this source's servers start from images with no signature at all (low trust only). "
            "A bad or foreign signature is still refused.",
        ),
    ] = False,
    package: PackageOpt = None,
) -> None:
    """Follow another catalog: its servers join the catalog, read afresh each time, at the given trust.

    Precedence on a name clash: your own entries (BOSUN_HOME/catalog), then by trust (high > medium >
    low, built-in first among high), then the source added earlier. A lower-trust source can never
    replace a server you already have."""
    home = _home()
    file = home.sources_file
    try:
        source = Source(
            name=name,
            path=path.resolve(),
            trust=trust,
            allow_unsigned=allow_unsigned,
            packages=_packages(package),
        )
        all_sources = Sources.load(file)
        all_sources.add(source)
    except (ValueError, CatalogError) as e:
        if isinstance(e, ValidationError):
            fail("; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors()))
        fail(str(e))
    if not path.exists():
        fail(f"{path} does not exist")
    results = read_source(source)
    usable = [r for r in results if r.entry]
    for r in results:
        if r.entry is None:
            console.print(f"  [yellow]skipped[/] {r.origin}: {escape('; '.join(r.unsupported))}", highlight=False)
    all_sources.save(file)
    console.print(f"added source {name} ({trust.value} trust): {len(usable)} usable of {len(results)} servers")
    for clash_name, winner, loser in _catalog(home).shadowed:
        if name in (winner, loser):
            console.print(f"  {clash_name}: {winner} wins over {loser}")


@catalog_app.command("rm")
def catalog_rm(name: Annotated[str, typer.Argument(help="A source added with `bosun catalog add`.")]) -> None:
    """Stop following a catalog source. Entries you imported with `catalog import` stay."""
    home = _home()
    file = home.sources_file
    try:
        all_sources = Sources.load(file)
        all_sources.remove(name)
    except (ValueError, CatalogError) as e:
        fail(str(e))
    all_sources.save(file)
    console.print(f"removed source {name}")


@catalog_app.command("ls-sources")
def catalog_ls_sources(as_json: bool = JsonOpt) -> None:
    """Every catalog source in precedence order, what it contributes, and what it loses to others."""
    home = _home()
    catalog = _catalog(home)
    used: dict[str, int] = {}
    for origin in catalog.origins.values():
        used[origin.source] = used.get(origin.source, 0) + 1
    rows: list[dict[str, Any]] = [
        {"name": "local", "trust": "high", "path": str(home.root / "catalog"), "unsigned": "no"},
        {"name": "builtin", "trust": "high", "path": "(shipped with bosun)", "unsigned": "no"},
    ]
    skipped: dict[str, list[ImportResult]] = {}
    for src in Sources.load(home.sources_file).sources:
        skipped[src.name] = [r for r in read_source(src) if r.entry is None]
        rows.append(
            {
                "name": src.name,
                "trust": src.trust.value,
                "path": str(src.path),
                "unsigned": "allowed" if src.allow_unsigned else "no",
            }
        )
    for row in rows:
        row["entries"] = used.get(row["name"], 0)
        row["skipped"] = len(skipped.get(row["name"], []))
        row["shadowed"] = ",".join(n for n, _, loser in catalog.shadowed if loser == row["name"])
    if as_json:
        for row in rows:
            row["skipped_reasons"] = {r.origin: r.unsupported for r in skipped.get(row["name"], [])}
    table(rows, ["name", "trust", "entries", "skipped", "shadowed", "unsigned", "path"], as_json)
    if not as_json:
        for src_name, results in skipped.items():
            for r in results:
                console.print(f"{src_name}: skipped {r.origin}: {escape('; '.join(r.unsupported))}", highlight=False)


@catalog_app.command("approve")
def catalog_approve(
    name: Annotated[str, typer.Argument(help="An enabled server whose current tools to review.")],
    yes: Annotated[bool, typer.Option("--yes", help="Approve without asking (after printing the review).")] = False,
) -> None:
    """Review a server's tools against what was approved before (a diff, plus any poisoning found)
    and, once you accept, pin them: only pinned tools reach agents."""
    from bosun.catalog.pins import Pins, diff
    from bosun.catalog.poisoning import scan
    from bosun.gateway.core import Gateway
    from bosun.runtime.docker import DockerBackend

    home = _home()
    _engine(home)
    if not _settings(home).is_enabled(name):
        fail(f"{name} is not enabled: run `bosun server enable {name}` first")

    async def current() -> tuple[list[Any], set[str]]:
        async with Gateway(home, DockerBackend()) as gw:
            tools = await gw.upstream(name, "approve").list_tools()
            return tools, {e.name for e in gw.enabled_entries()} - {name}

    tools, others = anyio.run(current)
    store = PinStore(home.root)
    old = store.load(name)
    changes = diff(old, tools)
    findings = [f for t in tools for f in scan(t, others)]
    if not changes and not findings:
        console.print(f"{name}: {len(tools)} tools, identical to what was approved")
        return
    console.print(changes or f"{name}: no change since the last approval", markup=False, highlight=False)
    for f in findings:
        err_console.print(f"[yellow]warning[/]: {f.tool} {f.where}: {f.rule}: {f.span!r}", highlight=False)
    if not changes:
        return
    if not yes and not typer.confirm(f"Approve these {len(tools)} tools of {name}?"):
        fail("not approved; the changed and new tools stay withheld")
    store.save(Pins.of(name, tools))
    console.print(f"approved {len(tools)} tools of {name}")


# -- servers -----------------------------------------------------------------------------------


MountOpt = Annotated[
    list[str] | None,
    typer.Option("--mount", help="Grant a folder: HOST_PATH:/container/path[:rw] (read-only unless :rw). Repeatable."),
]
SensitiveOpt = Annotated[
    bool,
    typer.Option(
        "--allow-sensitive",
        help="Allow mounting credentials, the Docker socket, / or /etc (the server can then read them).",
    ),
]


def _grant(name: str, mounts: list[str], allow_sensitive: bool, enable: bool) -> None:
    home = _home()
    entry = _catalog(home).entries.get(name)
    if entry is None:
        fail(f"no catalog entry named {name!r}; see `bosun catalog ls`")
    settings = _settings(home)
    try:
        grants = [MountGrant.parse(m, allow_sensitive, home.root) for m in mounts]
        was_enabled = settings.is_enabled(name)
        settings.enable(entry, grants)
        settings.servers[name].enabled = enable or was_enabled
    except ConfigError as e:
        fail(str(e))
    settings.save(home.config_file)
    console.print(f"{'enabled' if settings.servers[name].enabled else 'configured'} {name}")
    granted = {g.target for g in settings.servers[name].mounts}
    for m in entry.mounts:
        if m.required and m.target not in granted:
            err_console.print(f"note: {name} needs a folder at {m.target}: add `--mount HOST_PATH:{m.target}`")


@server_app.command("add")
def server_add(
    name: Annotated[str, typer.Argument(help="The server's name: tools appear as NAME__TOOL.")],
    from_dir: Annotated[
        Path,
        typer.Option(
            "--from-dir", help="A Python (pyproject.toml) or Node (package.json) project, or a Dockerfile's context."
        ),
    ],
    command: Annotated[
        str | None,
        typer.Option(
            help="What starts the server inside the image, when the folder does not make it obvious: a console "
            "script for Python; e.g. 'node /app/server.js' for Node (installed in /app); always for a Dockerfile."
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="python, node or dockerfile, when the folder holds more than one of them.")
    ] = None,
    title: Annotated[str | None, typer.Option(help="A human title (default: the name).")] = None,
    enable: Annotated[bool, typer.Option(help="Serve it through the gateway once built.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Replace an entry of yours with this name.")] = False,
) -> None:
    """Add a server you wrote: an entry for the folder in your own catalog (BOSUN_HOME/catalog), built into a
    hardened, signed image with an SBOM like any catalog server, its tools pinned, and enabled.

    A project is installed with pip or npm at build time (its dependencies from the registries); a
    Dockerfile is built as written (FROM a Bosun base image or any image your engine has), then finished
    by Bosun (setuid bits dropped, uid 10001, your command). The files' hash is the image's version, so
    `bosun catalog build NAME` after a change builds it anew.
    It gets no network, secrets or folders until its entry (BOSUN_HOME/catalog/NAME.yaml) asks for them.

    Example:  bosun server add notes --from-dir ./notes-server"""
    home = _home()
    if kind not in (None, "python", "node", "dockerfile"):
        fail(f"--kind must be python, node or dockerfile, not {kind!r}")
    try:
        entry = entry_from_dir(name, from_dir, kind=cast(Kind | None, kind), command=command, title=title)
        files = len(entry.source.files()) if isinstance(entry.source, PathSource | DockerfileSource) else 0
    except ValueError as e:
        fail(str(e))
    target = home.root / "catalog" / f"{name}.yaml"
    if target.exists() and not force:
        fail(f"{target} exists; pass --force to replace it")
    catalog = _catalog(home)
    if name in catalog.entries and catalog.origin(name).source != "local":
        err_console.print(f"note: your entry {name} takes the place of {catalog.origin(name).source}'s")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, yaml.safe_dump(entry.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
    console.print(f"wrote {target} ({entry.source.describe()}, {files} files, command: {' '.join(entry.command)})")
    _build(home, [entry], force=False, min_audit_score=DEFAULT_MIN_SCORE)
    if enable:
        _grant(name, [], False, enable=True)


@server_app.command("auth")
def server_auth(
    name: Annotated[str, typer.Argument(help="A remote server whose entry says auth: oauth.")],
    client_id: Annotated[str | None, typer.Option(
        "--client-id", help="A client registered with the authorization server ahead of time (when it has no "
        "dynamic registration): its id.")] = None,
    client_secret: Annotated[str | None, typer.Option(
        "--client-secret", help="With --client-id: the secret store's entry holding that client's secret "
        "(`bosun secret set NAME` first). Leave it out for a public client.")] = None,
    client_key: Annotated[str | None, typer.Option(
        "--client-key", help="With --client-id and --client-credentials: the secret store's entry holding that "
        "client's private key (PEM; EC, RSA or Ed25519), which signs its token requests (private_key_jwt) instead "
        "of a secret.")] = None,
    client_credentials: Annotated[bool, typer.Option(
        "--client-credentials", help="With --client-id and --client-secret or --client-key: the client is "
        "registered for the client-credentials grant, so the gateway gets its tokens itself and no person signs "
        "in.")] = False,
    id_token: Annotated[str | None, typer.Option(
        "--id-token", help="Enterprise-managed authorization (SEP-990): the secret store's entry holding an ID "
        "token from your company's identity provider. The gateway trades it there for an identity assertion "
        "grant (ID-JAG), which the remote's authorization server takes instead of a person's consent. Needs "
        "--idp-token-url, --idp-client-id, --client-id and --client-secret.")] = None,
    idp_token_url: Annotated[str | None, typer.Option(
        "--idp-token-url", help="With --id-token: the identity provider's token endpoint (https).")] = None,
    idp_client_id: Annotated[str | None, typer.Option(
        "--idp-client-id", help="With --id-token: the gateway's client id at the identity provider.")] = None,
    idp_client_secret: Annotated[str | None, typer.Option(
        "--idp-client-secret", help="With --id-token: the secret store's entry holding that client's secret, "
        "when it has one.")] = None,
) -> None:  # fmt: skip
    """Authorize the gateway to call a remote server with OAuth: discovery, registration, PKCE, then the
    authorization page in your browser (or open the printed URL yourself); the answer comes back to this
    machine on loopback. Tokens are kept in the secret store, refreshed by the gateway, and never shown to
    agents. Run it again to re-authorize (it replaces what was kept).

    Where the authorization server has no dynamic registration, register a
    client there (redirect URI http://127.0.0.1/callback, any port), keep its
    secret, and pass both:

      bosun secret set acme-client-secret

      bosun server auth acme --client-id ID --client-secret acme-client-secret

    Add --client-credentials for a client registered for machine-to-machine
    access (with --client-secret, or --client-key for a private key): its first
    token is fetched now, the authorization server that gave it is pinned, and
    from then on the gateway asks that server for tokens.

    Where your company's identity provider vouches for the gateway
    (enterprise-managed authorization), keep an ID token from it in the secret
    store and pass the identity provider too; no person signs in at the remote:

      bosun secret set acme-id-token

      bosun server auth acme --id-token acme-id-token --idp-token-url
      https://idp.example.com/oauth2/token --idp-client-id bosun --client-id ID
      --client-secret acme-client-secret

    The remote's authorization server is pinned, and the ID token is read at
    each exchange: replace it when your identity provider issues a new one."""
    import webbrowser

    from bosun.gateway.oauth import IdentityProvider, NeedsAuthorization, Registered, authorize

    home = _home()
    entry = _catalog(home).entries.get(name)
    if entry is None:
        fail(f"no catalog entry named {name!r}; see `bosun catalog ls`")
    if not isinstance(entry.source, RemoteSource) or entry.source.auth != "oauth":
        fail(f"{name} is not a remote server with auth: oauth; nothing to authorize")
    registered: Registered | None = None
    if (client_secret or client_key) and client_id is None:
        fail("--client-secret and --client-key belong to the client given by --client-id; give it too")
    if client_secret and client_key:
        fail("a client authenticates with a secret or with a private key, not both")
    if client_key and not client_credentials:
        fail("--client-key signs client-credentials token requests; add --client-credentials")
    if client_credentials and not (client_secret or client_key):
        fail("--client-credentials needs the client: --client-id ID and --client-secret or --client-key SECRET-NAME")
    identity: IdentityProvider | None = None
    if id_token is None and (idp_token_url or idp_client_id or idp_client_secret):
        fail("--idp-token-url, --idp-client-id and --idp-client-secret go with --id-token; give it too")
    if id_token is not None:
        if not (idp_token_url and idp_client_id and client_id and client_secret):
            fail("--id-token needs --idp-token-url, --idp-client-id, --client-id and --client-secret")
        if client_credentials or client_key:
            fail("--id-token is a grant of its own: leave out --client-credentials and --client-key")
    if client_id is not None:
        store = SecretStore(home.root)

        def stored(option: str, entry: str | None) -> str | None:
            try:
                return store.get(entry) if entry else None
            except SecretError as e:
                fail(f"{option}: {e}")

        secret, key = stored("--client-secret", client_secret), stored("--client-key", client_key)
        if id_token is not None:
            stored("--id-token", id_token)  # there now; read again at each exchange, so a newer one applies
            try:
                identity = IdentityProvider(idp_token_url or "", idp_client_id or "", id_token,
                                            stored("--idp-client-secret", idp_client_secret))  # fmt: skip
            except ValueError as e:
                fail(f"--idp-token-url: {e}")
        registered = Registered(client_id, secret, key, machine=client_credentials, identity=identity)

    async def open_url(url: str) -> None:
        console.print(f"Authorize {name} at:\n  {url}\n(waiting for the answer on loopback ...)", soft_wrap=True)
        with contextlib.suppress(Exception):
            # In a thread: a browser command may wait for its page, whose answer this loop must serve.
            await anyio.to_thread.run_sync(webbrowser.open, url)

    try:
        anyio.run(authorize, SecretStore(home.root), name, entry.source, open_url, registered)
    except (NeedsAuthorization, TimeoutError, OSError) as e:
        fail(f"authorizing {name} failed: {e}")
    except Exception as e:  # the SDK's OAuth errors, and a server that refuses: say which
        fail(f"authorizing {name} failed: {type(e).__name__}: {e}")
    if client_credentials:
        console.print(
            f"authorized {name} as client {client_id}; the gateway gets its tokens with the client's "
            f"{'key' if client_key else 'secret'}"
        )
    elif identity is not None:
        console.print(
            f"authorized {name} as client {client_id}; the gateway gets its tokens by trading the ID token in "
            f"secret {id_token} at {identity.token_endpoint}"
        )
    else:
        console.print(f"authorized {name}; the gateway uses and refreshes its tokens")


@server_app.command("enable")
def server_enable(name: str, mount: MountOpt = None, allow_sensitive: SensitiveOpt = False) -> None:
    """Serve NAME through the gateway (a running gateway picks the change up within a second)."""
    _grant(name, mount or [], allow_sensitive, enable=True)


@server_app.command("config")
def server_config(name: str, mount: MountOpt = None, allow_sensitive: SensitiveOpt = False) -> None:
    """Change what NAME is granted, without enabling or disabling it."""
    _grant(name, mount or [], allow_sensitive, enable=False)


@server_app.command("disable")
def server_disable(name: str) -> None:
    """Stop serving NAME (its grants are kept for the next enable)."""
    home = _home()
    settings = _settings(home)
    if name not in settings.servers:
        fail(f"{name} is not enabled")
    settings.servers[name].enabled = False
    settings.save(home.config_file)
    console.print(f"disabled {name}")


@server_app.command("ls")
def server_ls(as_json: bool = JsonOpt) -> None:
    """List configured servers and their grants."""
    settings = _settings(_home())
    rows = [
        {
            "name": n,
            "enabled": "yes" if s.enabled else "no",
            "mounts": ", ".join(f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in s.mounts),
        }
        for n, s in sorted(settings.servers.items())
    ]
    table(rows, ["name", "enabled", "mounts"], as_json)


# -- ps ----------------------------------------------------------------------------------------


@app.command()
def ps(as_json: bool = JsonOpt) -> None:
    """List the server containers Bosun is running (label io.bosun.managed=true)."""
    from bosun.runtime.docker import DockerBackend

    _engine(_home())

    async def go() -> list[dict[str, str]]:
        return [
            {
                "container": c.id[:12],
                "name": c.name,
                "server": c.server,
                "status": c.status,
                "session": c.labels.get("io.bosun.session", ""),
                "gateway": c.labels.get("io.bosun.gateway", ""),
            }
            for c in await DockerBackend().list()
        ]

    table(anyio.run(go), ["container", "name", "server", "status", "session", "gateway"], as_json)


# -- gateway -----------------------------------------------------------------------------------


def _freeze_startup_objects() -> None:
    """Take what start-up built (the SDK's and pydantic's schemas, the catalog, ~130k objects) out of the
    collector's full passes: they live as long as the process, and each full pass walked them all, about
    70 ms with every call in flight waiting (measured under load). No collection first: it would add
    54 ms to every start to free a few dozen objects (44 after the imports, measured)."""
    gc.freeze()


@gateway_app.command("run")
def gateway_run(
    transport: Annotated[str, typer.Option(help="stdio (for one local client) or http (streamable HTTP).")] = "stdio",
    host: Annotated[str, typer.Option(help="HTTP: address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP: port.")] = 8811,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="HTTP: no bearer token (loopback testing only).")] = False,
    allow_origin: Annotated[
        list[str] | None, typer.Option("--allow-origin", help="HTTP: extra Origin allowed (browser clients).")
    ] = None,
    idle_timeout: Annotated[float, typer.Option(help="Stop a server container unused this many seconds.")] = 300,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    agent: Annotated[
        str | None, typer.Option(help="stdio: the agent the one client speaks for (see `bosun agent add`).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="stdio: serve /metrics on 127.0.0.1:PORT (operator token).")
    ] = None,
    server_name: Annotated[
        str | None,
        typer.Option("--server", help="Serve only this enabled server, under its own tool and prompt names."),
    ] = None,
    with_console: Annotated[
        bool,
        typer.Option(
            "--console", help="HTTP: serve the governance console at /console (sign in with the gateway token)."
        ),
    ] = False,
) -> None:
    """Serve every enabled server's tools, resources and prompts as <server>__<name> on one endpoint.

    Over HTTP each request names its agent by its bearer token (an agent's, or the operator's
    gateway token); over stdio the client is --agent, or the operator.

    With --server NAME the gateway is one server's endpoint: only that server, named as the server
    names its tools and prompts, with the same policy, screening, audit and container behind it.

    Telemetry: Prometheus metrics at /metrics (operator token; over stdio with --metrics-port).
    Traces go over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set: a
    span per client request with the agent, server, tool and decision, a child per upstream request."""
    from bosun.gateway.core import Gateway
    from bosun.gateway.lane import StdioLane
    from bosun.gateway.server import build_server
    from bosun.gateway.transports import serve_http, serve_metrics, serve_stdio
    from bosun.runtime.docker import DockerBackend
    from bosun.telemetry import traces

    if transport not in ("stdio", "http"):
        fail(f"--transport must be stdio or http, not {transport!r}")
    if with_console and transport != "http":
        fail("--console needs --transport http: the console is a web page on the gateway's port")
    if no_auth and host not in ("127.0.0.1", "localhost", "::1"):
        fail("--no-auth is only allowed when binding to loopback")
    logs.setup(log_level)
    home = _home()
    local_agent = OPERATOR
    if agent is not None:
        if transport != "stdio":
            fail("--agent is for stdio; HTTP clients are known by their tokens")
        known = Agents.load(home.agents_file).get(agent)
        if known is None or known.revoked is not None:
            fail(f"no active agent named {agent!r}; see `bosun agent ls`")
        local_agent = agent
    if server_name is not None and not _settings(home).is_enabled(server_name):
        fail(f"--server {server_name}: no such enabled server (see `bosun catalog ls`, `bosun server enable`)")
    if metrics_port is not None and transport != "stdio":
        fail("--metrics-port is for stdio; an HTTP gateway serves /metrics itself")
    _engine(home)
    token: str | None = None
    admin_token: str | None = None
    if (transport == "http" and not no_auth) or metrics_port is not None or with_console:
        admin_token, created = home.gateway_token()
        if created:
            err_console.print(f"gateway token (shown once; kept in {home.token_file}): [bold]{admin_token}[/]")
        token = None if no_auth else admin_token

    async def main() -> None:
        async with Gateway(home, DockerBackend(), idle_timeout_s=idle_timeout, only=server_name) as gw:
            server = build_server(gw, local_agent)
            _freeze_startup_objects()
            if transport == "stdio":
                async with anyio.create_task_group() as tg:
                    if metrics_port is not None and token is not None:
                        tg.start_soon(serve_metrics, gw, metrics_port, token)
                    await serve_stdio(server, StdioLane(gw, local_agent))
                    tg.cancel_scope.cancel()
            else:
                err_console.print(f"gateway listening on http://{host}:{port}/mcp (also /healthz and /metrics)")
                if with_console:
                    err_console.print(f"console at http://{host}:{port}/console/ (sign in with the gateway token)")
                await serve_http(gw, server, host, port, token, allow_origin, admin_token if with_console else None)

    tracing = traces.configure()
    try:
        anyio.run(main, backend_options={"use_uvloop": True})
    finally:
        if tracing is not None:
            tracing.shutdown()  # the last spans are exported, not lost with the process


# -- tools -------------------------------------------------------------------------------------


@tools_app.command("ls")
def tools_ls(as_json: bool = JsonOpt) -> None:
    """List tools through the running gateway, or an in-process one started for this command."""
    from bosun.client import connect

    home = _home()
    _engine(home)

    async def go() -> list[dict[str, Any]]:
        async with connect(home) as (client, where):
            err_console.print(f"via {where}", style="dim")
            result = await client.list_tools()
            return [{"name": t.name, "description": (t.description or "").split("\n")[0][:100]} for t in result.tools]

    table(anyio.run(go), ["name", "description"], as_json)


@tools_app.command("call")
def tools_call(
    name: Annotated[str, typer.Argument(help="Namespaced tool name, e.g. time__get_current_time.")],
    args_json: Annotated[str, typer.Option("--json", help="Arguments as a JSON object.")] = "{}",
) -> None:
    """Call one tool and print its result as JSON; exits 2 when the tool reports an error."""
    from bosun.client import connect

    try:
        arguments = json.loads(args_json)
    except json.JSONDecodeError as e:
        fail(f"--json is not valid JSON: {e}")
    if not isinstance(arguments, dict):
        fail('--json must be a JSON object, e.g. \'{"timezone": "UTC"}\'')
    home = _home()
    _engine(home)

    async def go() -> Any:
        async with connect(home) as (client, where):
            err_console.print(f"via {where}", style="dim")
            return await client.call_tool(name, arguments)

    try:
        result = anyio.run(go)
    except Exception as e:
        fail(f"{name}: {e}")
    print(result.model_dump_json(indent=2, exclude_none=True, by_alias=True))
    if result.is_error:
        raise typer.Exit(2)


@app.command()
def demo() -> None:
    """Build and enable time, memory and filesystem, start a gateway, and call each through MCP."""
    from bosun.cli.demo import run_demo

    run_demo(_home())


# -- secrets -----------------------------------------------------------------------------------


@secret_app.command("set")
def secret_set(
    name: str,
    from_env: Annotated[str | None, typer.Option("--from-env", help="Read the value from this variable.")] = None,
    from_file: Annotated[Path | None, typer.Option("--from-file", help="Read the value from this file.")] = None,
) -> None:
    """Store a secret. The value comes from stdin (hidden prompt on a terminal), never from an argument,
    so it never lands in shell history or the process list."""
    if from_env and from_file:
        fail("use either --from-env or --from-file, not both")
    if from_env:
        value = os.environ.get(from_env)
        if value is None:
            fail(f"environment variable {from_env} is not set")
    elif from_file:
        if not from_file.is_file():
            fail(f"{from_file} is not a readable file")
        value = from_file.read_text()
    elif sys.stdin.isatty():
        value = getpass.getpass(f"value for {name}: ")
    else:
        value = sys.stdin.read()
    value = value.removesuffix("\n")
    try:
        SecretStore(_home().root).set(name, value)
    except SecretError as e:
        fail(str(e))
    console.print(f"stored {name}")


@secret_app.command("ls")
def secret_ls(as_json: bool = JsonOpt) -> None:
    """Secret names, which servers declare them and when each was last set (never the values)."""
    home = _home()
    users: dict[str, list[str]] = {}
    for entry in _catalog(home):
        for ref in entry.secrets:
            users.setdefault(ref.name, []).append(entry.name)
    rows = [
        {
            "name": i.name,
            "servers": ", ".join(users.get(i.name, [])),
            "updated": i.updated_at.isoformat(timespec="seconds"),
        }
        for i in SecretStore(home.root).infos()
    ]
    table(rows, ["name", "servers", "updated"], as_json)


@secret_app.command("rm")
def secret_rm(name: str) -> None:
    """Delete a secret."""
    if not SecretStore(_home().root).remove(name):
        fail(f"no secret named {name!r}")
    console.print(f"removed {name}")


# -- keys --------------------------------------------------------------------------------------


def _show_key(key: Any) -> None:
    console.print(f"key id   {key.keyid}\nscheme   {key.scheme}\npublic   {key.keyval['public']}")


@key_app.command("generate")
def key_generate(
    force: Annotated[bool, typer.Option("--force", help="Replace an existing signing key.")] = False,
) -> None:
    """Create the signing key (the private half is kept encrypted in the secret store)."""
    keys = Keys(_home().root)
    if keys.signer() is not None and not force:
        fail("a signing key exists already: `bosun key show`, or `bosun key rotate` to replace it")
    _show_key(keys.generate())


@key_app.command("show")
def key_show() -> None:
    """The current signing key's public half, and every public key trusted for verification."""
    keys = Keys(_home().root)
    signer = keys.signer()
    if signer is None:
        fail("no signing key yet: `bosun key generate` (the first `bosun catalog build` makes one too)")
    _show_key(signer.public_key)
    console.print(f"trusted  {', '.join(k.keyid[:16] for k in keys.trusted())}")


@key_app.command("rotate")
def key_rotate() -> None:
    """Replace the signing key. Images signed by the old key keep verifying (its public half stays
    trusted) until you remove it from BOSUN_HOME/keys/trusted; rebuild with --force to re-sign."""
    _show_key(Keys(_home().root).generate())


# -- vulnerabilities ---------------------------------------------------------------------------


@vuln_db_app.command("import")
def vuln_db_import(
    path: Annotated[Path, typer.Argument(help="OSV records: a folder of JSON/YAML files, a file, or an osv.dev zip.")],
) -> None:
    """Load OSV advisories offline (PyPI, npm and Debian ones are kept). Newer records replace older."""
    home = _home()
    if not path.exists():
        fail(f"{path} does not exist")
    report = VulnDB(home.vuln_db).import_path(path)
    for problem in report.invalid[:20]:
        err_console.print(f"  skipped {problem}", highlight=False, markup=False)
    console.print(
        f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.other_ecosystems} for other ecosystems, {len(report.invalid)} invalid"
    )


@vuln_db_app.command("info")
def vuln_db_info(as_json: bool = JsonOpt) -> None:
    """How many advisories the database holds per ecosystem."""
    stats = VulnDB(_home().vuln_db).stats()
    table([{"ecosystem": k, "advisories": v} for k, v in sorted(stats.items())], ["ecosystem", "advisories"], as_json)


@vuln_app.command("block-at")
def vuln_block_at(
    level: Annotated[str, typer.Argument(help="low, medium, high, critical, or never.")],
) -> None:
    """Set the severity at which a finding stops a server from starting (default: high)."""
    home = _home()
    settings = _settings(home)
    try:
        settings.vulnerabilities = VulnSettings(block_at=level)  # type: ignore[arg-type]
    except ValidationError:
        fail(f"{level!r} is not one of low, medium, high, critical, never")
    settings.save(home.config_file)
    console.print(f"servers with unwaived findings at {level} or above will not start")


@vuln_app.command("waive")
def vuln_waive(
    advisory: Annotated[str, typer.Argument(help="Advisory id or alias, e.g. GHSA-... or CVE-...")],
    server: Annotated[str, typer.Option("--server", help="The one server this waiver is for.")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is acceptable; kept with the waiver.")],
    until: Annotated[str, typer.Option("--until", help="Last day it holds (YYYY-MM-DD); at most a year ahead.")],
) -> None:
    """Let one server start despite one advisory, until a date. Recorded with who and why."""
    home = _home()
    try:
        last_day = date.fromisoformat(until)
    except ValueError:
        fail(f"--until {until!r}: write a date as YYYY-MM-DD")
    today = date.today()
    if last_day < today or (last_day - today).days > 366:
        fail("--until must be between today and a year from now")
    waivers = Waivers.load(home.waivers_file)
    try:
        waiver = Waiver(
            id=advisory, server=server, reason=reason, until=last_day, by=getpass.getuser(), created=datetime.now(UTC)
        )
    except ValidationError as e:
        fail("; ".join(str(err["msg"]) for err in e.errors()))
    waivers.add(waiver)
    waivers.save(home.waivers_file)
    console.print(f"waived {advisory} for {server} until {last_day.isoformat()}")


@vuln_app.command("unwaive")
def vuln_unwaive(
    advisory: str, server: Annotated[str, typer.Option("--server", help="The server the waiver is for.")]
) -> None:
    """Withdraw a waiver; the server is judged again at its next start."""
    home = _home()
    waivers = Waivers.load(home.waivers_file)
    if not waivers.remove(advisory, server):
        fail(f"no waiver of {advisory} for {server}; see `bosun vuln waivers`")
    waivers.save(home.waivers_file)
    console.print(f"withdrew the waiver of {advisory} for {server}")


@vuln_app.command("waivers")
def vuln_waivers(as_json: bool = JsonOpt) -> None:
    """Every waiver, and whether it still holds."""
    today = date.today()
    rows = [
        w.model_dump(mode="json") | {"state": "active" if w.until >= today else "expired"}
        for w in Waivers.load(_home().waivers_file).waivers
    ]
    table(rows, ["id", "server", "until", "state", "by", "reason"], as_json)


# -- audit -------------------------------------------------------------------------------------


def _audit_row(r: Record) -> dict[str, Any]:
    return {
        "seq": r.seq, "time": r.ts[11:23], "kind": r.kind, "session": r.session[:22], "server": r.server,
        "tool": r.tool, "decision": r.decision, "outcome": r.outcome, "ms": f"{r.duration_ms:.1f}",
        "reason": r.reason[:60],
    }  # fmt: skip


def _audit() -> AuditLog:
    """The audit with every call answered so far in it: what gateways that stopped left in their journals
    is chained now, and what running ones hold is waited for (briefly)."""
    log = AuditLog(_home().audit_db)
    if not settle(log):
        err_console.print("a running gateway has not chained its latest records yet; they may be missing here")
    return log


_AUDIT_COLUMNS = ["seq", "time", "kind", "session", "server", "tool", "decision", "outcome", "ms", "reason"]


@audit_app.command("tail")
def audit_tail(
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many of the latest records.")] = 20,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new records as they come.")] = False,
    as_json: bool = JsonOpt,
) -> None:
    """The latest records; with -f, then every new one (Ctrl-C stops)."""
    log = _audit()
    latest = log.last(lines)
    if as_json:
        for r in latest:
            print(json.dumps(asdict(r)), flush=True)
    else:
        table([_audit_row(r) for r in latest], _AUDIT_COLUMNS, False)
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            for r in log.follow(latest[-1].seq if latest else 0):
                if as_json:
                    print(json.dumps(asdict(r)), flush=True)
                else:
                    row = _audit_row(r)
                    console.print("  ".join(str(row[c]) for c in _AUDIT_COLUMNS), highlight=False, markup=False)


@audit_app.command("verify")
def audit_verify(
    anchor: Annotated[
        list[str] | None, typer.Option("--anchor", help="SEQ:HASH from an earlier `bosun audit anchor`; repeat.")
    ] = None,
) -> None:
    """Recompute the whole hash chain; name every record that was edited, deleted or moved. Exits 1 if any.

    Removing the newest records leaves a chain that still verifies; an anchor published earlier
    (`bosun audit anchor`, or the `audit head` lines a gateway logs every minute) shows it."""
    home = _home()
    try:
        anchors = [Anchor.parse(a) for a in anchor or []]
    except ValueError as e:
        fail(str(e))
    count, problems = _audit().verify(anchors)
    for p in problems:
        err_console.print(str(p), highlight=False, markup=False)
    if problems:
        fail(f"the audit at {home.audit_db} was altered: {len(problems)} problem(s) in {count} records")
    console.print(f"{count} records, chain intact")


@audit_app.command("anchor")
def audit_anchor() -> None:
    """Print the newest record as SEQ:HASH. Keep it somewhere this machine cannot rewrite (a ticket, a
    SIEM, another host); `bosun audit verify --anchor SEQ:HASH` then catches truncation."""
    head = _audit().head()
    if head is None:
        fail("the audit is empty: nothing to anchor yet")
    print(head)


@audit_app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl: one JSON record per line.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Every record with its chain hashes, for a SIEM or an archive; verifiable outside Bosun."""
    if fmt != "jsonl":
        fail(f"--format must be jsonl, not {fmt!r}")
    log = _audit()
    out = output.open("w") if output else sys.stdout
    try:
        after = 0
        while batch := log.records(after, 1000):
            for r in batch:
                out.write(json.dumps(asdict(r)) + "\n")
            after = batch[-1].seq
    finally:
        if output:
            out.close()


# -- agents ------------------------------------------------------------------------------------


@agent_app.command("add")
def agent_add(
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits, '.', '_' or '-'.")],
    group: Annotated[list[str] | None, typer.Option("--group", help="A group policy can name; repeat.")] = None,
) -> None:
    """Create an agent and print its token once (only a hash is kept). Give the token to the agent's
    client as `Authorization: Bearer <token>`."""
    home = _home()
    agents = Agents.load(home.agents_file)
    try:
        token = agents.add(name, list(group or []))
    except (ValueError, ValidationError) as e:
        fail(str(e).splitlines()[0] if not isinstance(e, ValidationError) else f"{name!r}: not a valid agent name")
    agents.save(home.agents_file)
    err_console.print(f"agent {name} added; its token (shown once, not stored):")
    print(token)


@agent_app.command("ls")
def agent_ls(as_json: bool = JsonOpt) -> None:
    """Every agent, its groups, and whether it was revoked."""
    rows = [
        {"name": a.name, "groups": ",".join(a.groups), "created": a.created.isoformat(timespec="seconds"),
         "state": f"revoked {a.revoked.isoformat(timespec='seconds')}" if a.revoked else "active"}
        for a in Agents.load(_home().agents_file).agents
    ]  # fmt: skip
    table(rows, ["name", "groups", "created", "state"], as_json)


@agent_app.command("revoke")
def agent_revoke(name: str) -> None:
    """Revoke an agent's token; a running gateway refuses it from its next request on."""
    home = _home()
    agents = Agents.load(home.agents_file)
    try:
        agents.revoke(name)
    except ValueError as e:
        fail(str(e))
    agents.save(home.agents_file)
    console.print(f"revoked {name}")


@agent_app.command("oidc")
def agent_oidc(
    issuer: Annotated[str | None, typer.Option(help="The identity provider's issuer (the iss claim).")] = None,
    audience: Annotated[str | None, typer.Option(help="This gateway's audience; tokens for others fail.")] = None,
    jwks: Annotated[Path | None, typer.Option(help="JWKS file with the provider's public keys.")] = None,
    agent_claim: Annotated[str, typer.Option(help="The claim that names the agent.")] = "sub",
    groups_claim: Annotated[str, typer.Option(help="The claim listing its groups ('' for none).")] = "groups",
    off: Annotated[bool, typer.Option("--off", help="Stop accepting JWTs.")] = False,
) -> None:
    """Accept JWTs your identity provider signs as agent tokens, next to `bosun agent add` tokens.

    A JWT must verify against a key in the JWKS file (re-read when it changes), name this issuer
    and audience, and not be expired; its agent_claim names the agent, which policy matches like any
    other, with groups from groups_claim. Without options, shows the current setting. A running
    gateway takes the change at its next start."""
    from bosun.config import OidcSettings
    from bosun.gateway.oidc import OidcError, OidcVerifier

    home = _home()
    settings = _settings(home)
    if off:
        settings.oidc = None
    elif issuer is None and audience is None and jwks is None:
        console.print(settings.oidc.model_dump_json(indent=2) if settings.oidc else "OIDC tokens are not accepted")
        return
    else:
        if not (issuer and audience and jwks):
            fail("give --issuer, --audience and --jwks together")
        oidc = OidcSettings(issuer=issuer, audience=audience, jwks_file=jwks.resolve(), agent_claim=agent_claim,
                            groups_claim=groups_claim or None)  # fmt: skip
        try:
            OidcVerifier(oidc).keys()
        except OidcError as e:
            fail(str(e))
        settings.oidc = oidc
    settings.save(home.config_file)
    console.print("OIDC tokens are not accepted" if off else f"accepting JWTs from {issuer} for audience {audience}")


# -- policy and approvals ----------------------------------------------------------------------


def _engine_for(home: Home, file: Path | None) -> Any:
    from bosun.policy.engine import Engine
    from bosun.policy.rules import PolicyError, load

    path = file or home.policy_file
    try:
        return Engine(load(path))
    except PolicyError as e:
        fail(str(e))


def _split_tool(public: str) -> tuple[str, str]:
    server, sep, tool = public.partition("__")
    if not sep or not tool:
        fail(f"--tool {public!r}: give the gateway's name for it, <server>__<tool>")
    return server, tool


@policy_app.command("check")
def policy_check(
    agent: Annotated[str, typer.Option("--agent", help="The calling agent.")],
    tool: Annotated[str, typer.Option("--tool", help="The tool as agents see it: <server>__<tool>.")],
    args: Annotated[str, typer.Option("--json", help="The call's arguments as a JSON object.")] = "{}",
    group: Annotated[
        list[str] | None, typer.Option("--group", help="Groups to assume (default: the agent's own).")
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", help="A policy file other than the active one.")] = None,
    as_json: Annotated[
        bool, typer.Option("--format-json", help="Print the decision as JSON (--json is the call's arguments).")
    ] = False,
) -> None:
    """Explain the decision for one call: the effect, the rules that made it, and what every rule did."""
    home = _home()
    engine = _engine_for(home, file)
    server, name = _split_tool(tool)
    try:
        arguments = json.loads(args)
    except ValueError as e:
        fail(f"--json: not JSON: {e}")
    groups = group if group is not None else Directory(home.agents_file).groups(agent)
    decision = engine.decide(agent, groups, server, name, arguments, explain=True, record=False)
    if as_json:
        print(json.dumps(decision.as_dict(), indent=2))
        return
    console.print(f"[bold]{decision.effect}[/] by {', '.join(decision.rules) or 'the default'}"
                  + (f": {decision.reason}" if decision.reason else ""))  # fmt: skip
    for line in decision.trace:
        console.print(f"  {line}", highlight=False, markup=False)


@policy_app.command("test")
def policy_test(
    cases: Annotated[Path, typer.Argument(help="YAML: cases: [{agent, groups?, tool, args?, expect}], policy?: FILE")],
) -> None:
    """Run a table of cases against the policy; exits 1 when any decision differs from its expectation."""
    home = _home()
    try:
        doc = yaml.safe_load(cases.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        fail(f"{cases}: {e}")
    policy_file = doc.get("policy")
    engine = _engine_for(home, (cases.parent / policy_file) if policy_file else None)
    rows, failed = [], 0
    for i, case in enumerate(doc.get("cases") or []):
        server, name = _split_tool(str(case.get("tool", "")))
        groups = case.get("groups", Directory(home.agents_file).groups(str(case.get("agent", ""))))
        d = engine.decide(str(case.get("agent", "")), groups, server, name, case.get("args") or {}, record=False)
        ok = d.effect == case.get("expect")
        failed += not ok
        rows.append({"#": i, "agent": case.get("agent"), "tool": case.get("tool"), "expect": case.get("expect"),
                     "got": d.effect, "rules": ",".join(d.rules), "ok": "ok" if ok else "FAIL"})  # fmt: skip
    table(rows, ["#", "agent", "tool", "expect", "got", "rules", "ok"], False)
    console.print(f"{len(rows) - failed} of {len(rows)} cases as expected")
    if failed:
        raise typer.Exit(1)


@app.command("approve")
def approve(
    ask_id: Annotated[str | None, typer.Argument(help="The id a waiting call was given.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the calls waiting for a person.")] = False,
    as_json: bool = JsonOpt,
) -> None:
    """Let a call that policy said to ask about go ahead (or, with --list, see what waits)."""
    _answer(ask_id, True, list_, as_json)


@app.command("deny")
def deny(ask_id: Annotated[str, typer.Argument(help="The id a waiting call was given.")]) -> None:
    """Refuse a call that policy said to ask about."""
    _answer(ask_id, False, False, False)


def _answer(ask_id: str | None, approve: bool, list_: bool, as_json: bool) -> None:
    from bosun.policy.asks import AskError, Asks

    asks = Asks(_home().asks_dir)
    if list_ or ask_id is None:
        rows = [a | {"arguments": json.dumps(a["arguments"])[:80], "rules": ",".join(a["rules"])}
                for a in asks.pending()]  # fmt: skip
        table(rows, ["id", "agent", "server", "tool", "arguments", "rules", "asked_at"], as_json)
        return
    try:
        item = asks.answer(ask_id, approve, getpass.getuser())
    except AskError as e:
        fail(str(e))
    console.print(f"{'approved' if approve else 'denied'} {item['server']}__{item['tool']} for {item['agent']}")
