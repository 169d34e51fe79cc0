"""Hardening audit of a built image: what it runs as and what it carries that it should not.

The filesystem checks run inside a throwaway container of the image (no network, no
capabilities); the configuration checks read the image's metadata and build history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import docker

Severity = Literal["high", "medium", "low"]
PENALTY: dict[Severity, int] = {"high": 30, "medium": 15, "low": 5}
DEFAULT_MIN_SCORE = 80

_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.IGNORECASE)
_SECRET_VALUE = re.compile(
    r"(-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}"
    r"|sk-[A-Za-z0-9_-]{20,}|xox[baprs]-[A-Za-z0-9-]{10,})"
)

# Section markers keep the one container run's output unambiguous.
_SCRIPT = r"""
echo '== setuid'; find / -xdev -type f -perm /6000 2>/dev/null
echo '== writable'; find / -xdev -perm -0002 ! -type l ! -path '/tmp' ! -path '/tmp/*' \
  ! -path '/proc/*' ! -path '/sys/*' ! -path '/dev/*' 2>/dev/null
echo '== caches'
for p in /var/cache/apt/archives/*.deb /var/lib/apt/lists/*_Packages* \
         /root/.npm /root/.cache/pip /tmp/.npm /tmp/.cache; do
  [ -e "$p" ] && echo "$p"
done
echo '== secrets'
grep -rIlE -- '-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}' \
  /root /home /etc /app /opt /srv /tmp 2>/dev/null | grep -v -e '/node_modules/' -e '/site-packages/' | head -50
echo '== end'
"""


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    detail: str


@dataclass
class AuditReport:
    image: str
    size_mb: float
    findings: list[Finding] = field(default_factory=list)

    @property
    def score(self) -> int:
        # One penalty per check, however many files it found: ten setuid binaries are one problem.
        worst: dict[str, Severity] = {}
        for f in self.findings:
            if f.check not in worst or PENALTY[f.severity] > PENALTY[worst[f.check]]:
                worst[f.check] = f.severity
        return max(0, 100 - sum(PENALTY[s] for s in worst.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "score": self.score,
            "size_mb": round(self.size_mb, 1),
            "findings": [f.__dict__ for f in self.findings],
        }


def _sections(output: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("== "):
            current = line[3:].strip()
            out[current] = []
        elif current and line.strip():
            out[current].append(line.strip())
    return out


def _config_findings(attrs: dict[str, Any], history: list[dict[str, Any]]) -> list[Finding]:
    findings = []
    user = (attrs.get("Config") or {}).get("User") or ""
    if user.split(":")[0] in ("", "0", "root"):
        findings.append(Finding("non-root user", "high", f"the image runs as {user or 'root (no USER)'}"))
    for env in (attrs.get("Config") or {}).get("Env") or []:
        name, _, value = env.partition("=")
        if value and (_SECRET_NAME.search(name) or _SECRET_VALUE.search(value)):
            findings.append(Finding("secrets in layers", "high", f"environment variable {name} carries a value"))
    for layer in history:
        created_by = layer.get("CreatedBy") or ""
        if _SECRET_VALUE.search(created_by):
            findings.append(Finding("secrets in layers", "high", f"a build step embeds a secret: {created_by[:80]}"))
    return findings


def audit(client: docker.DockerClient, image: str) -> AuditReport:
    img = client.images.get(image)
    report = AuditReport(image=image, size_mb=float(img.attrs.get("Size", 0)) / 2**20)
    report.findings += _config_findings(img.attrs, img.history())
    out = client.containers.run(
        image, entrypoint=["sh", "-c", _SCRIPT], command=[], user="0", network_mode="none",
        cap_drop=["ALL"], cap_add=["DAC_READ_SEARCH"], remove=True, stdout=True, stderr=False,
    )  # fmt: skip
    found = _sections(out.decode(errors="replace"))
    if "end" not in found:
        raise RuntimeError(f"the audit script did not finish inside {image}")
    for path in found.get("setuid", []):
        report.findings.append(Finding("setuid/setgid files", "high", path))
    for path in found.get("writable", []):
        report.findings.append(Finding("world-writable paths", "medium", path))
    for path in found.get("caches", []):
        report.findings.append(Finding("package manager caches", "low", path))
    for path in found.get("secrets", []):
        report.findings.append(Finding("secrets in layers", "high", f"a file looks like it holds a secret: {path}"))
    if report.size_mb > 1024:
        report.findings.append(Finding("size", "medium", f"{report.size_mb:.0f} MB"))
    elif report.size_mb > 512:
        report.findings.append(Finding("size", "low", f"{report.size_mb:.0f} MB"))
    return report
