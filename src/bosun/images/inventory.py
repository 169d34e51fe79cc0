"""What is installed in an image: Debian packages, Python distributions and npm packages.

Read from inside the image (a throwaway container with no network) rather than guessed from the
recipe, so transitive dependencies and whatever the base brought along are all counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import docker

Ecosystem = Literal["deb", "pypi", "npm"]

# One line per package, tab-separated: ecosystem, name, version. Each part runs only where its
# package manager left something to read.
_SCRIPT = r"""
dpkg-query -W -f='deb\t${Package}\t${Version}\t${source:Package}\n'
if [ -x /opt/venv/bin/python ]; then
  /opt/venv/bin/python -c '
import importlib.metadata as m
for d in m.distributions():
    print("pypi\t%s\t%s" % (d.metadata["Name"], d.version))
'
fi
if [ -d /app/node_modules ]; then
  node -e '
const fs = require("fs"), path = require("path");
function walk(dir) {
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith(".")) continue;
    const full = path.join(dir, name);
    if (name.startsWith("@")) { walk(full); continue; }
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(full, "package.json"), "utf8"));
      if (pkg.name && pkg.version) console.log(`npm\t${pkg.name}\t${pkg.version}`);
    } catch (e) {}
    const nested = path.join(full, "node_modules");
    if (fs.existsSync(nested)) walk(nested);
  }
}
walk("/app/node_modules");
'
fi
"""


@dataclass(frozen=True, order=True)
class Package:
    ecosystem: Ecosystem
    name: str
    version: str
    upstream: str = ""  # Debian's source package (glibc for libc6); advisories are filed against it


def parse(output: str) -> list[Package]:
    found: set[Package] = set()
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) in (3, 4) and parts[0] in ("deb", "pypi", "npm") and parts[1] and parts[2]:
            upstream = parts[3] if len(parts) == 4 and parts[3] != parts[1] else ""
            found.add(Package(parts[0], parts[1], parts[2], upstream))  # type: ignore[arg-type]
    return sorted(found)


def inventory(client: docker.DockerClient, image: str) -> list[Package]:
    out = client.containers.run(
        image,
        entrypoint=["sh", "-c", _SCRIPT],
        command=[],
        network_mode="none",
        cap_drop=["ALL"],
        remove=True,
        stdout=True,
        stderr=False,
    )
    return parse(out.decode(errors="replace"))
