"""The agent image: Bosun's Node base plus the usual developer tools, built locally like server images.

One image per agent kit. This slice has the ``shell`` kit only (git, Python, Node, a shell); the kits
for Claude Code and Codex add their npm package once egress and credential isolation are in place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import docker
from docker.errors import ImageNotFound

from bosun.home import Home
from bosun.images.base import BASE_NODE, DROP_PRIVILEGED_FILES, SERVER_UID, ensure_base_images
from bosun.images.dockerbuild import build

AGENT_HOME = "/home/agent"
TOOLS = ("git", "python3", "python3-venv", "bash", "less", "procps", "ca-certificates")

_DOCKERFILE = f"""FROM {BASE_NODE}
USER root
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
    {" ".join(TOOLS)} && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb && {DROP_PRIVILEGED_FILES}
# The home is a volume per workspace, filled by Docker from here on first use. The session runs as the
# workspace's owner, whose uid the image cannot know: the home is writable by any uid (sticky), and only
# that one session's container ever mounts it.
RUN install -d -m 1777 {AGENT_HOME}
ENV HOME={AGENT_HOME} PATH=/usr/local/bin:/usr/bin:/bin
USER {SERVER_UID}:{SERVER_UID}
CMD ["bash"]
"""


def image_tag(kit: str) -> str:
    recipe = hashlib.sha256(_DOCKERFILE.encode()).hexdigest()[:12]
    return f"bosun/sandbox-{kit}:{recipe}"


def ensure_image(client: docker.DockerClient, home: Home, kit: str, progress: Callable[[str], None]) -> str:
    """The kit's image id, built first if this recipe was never built here."""
    tag = image_tag(kit)
    try:
        return str(client.images.get(tag).id)
    except ImageNotFound:
        pass
    ensure_base_images(client, home.cache_dir, progress)
    progress(f"building {tag} (once)")
    return build(client, _DOCKERFILE, tag, progress, labels={"io.bosun.sandbox-kit": kit})
