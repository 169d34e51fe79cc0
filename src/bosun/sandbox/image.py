"""Agent images: Bosun's Node base, the usual developer tools and the kit's agent, built locally like server images.

One image per kit. The agent comes from its real npm package at the version its kit pins, installed at
build time (the only time a registry is reached); the image is rebuilt when its recipe changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
from collections.abc import Callable

import docker
from docker.errors import APIError, ImageNotFound

from bosun.home import Home
from bosun.images.base import BASE_NODE, DROP_PRIVILEGED_FILES, SERVER_UID, ensure_base_images
from bosun.images.dockerbuild import BUILD_CA_PATH, build
from bosun.sandbox.kits import Kit

AGENT_HOME = "/home/agent"
# socat joins an agent's MCP stdio to the gateway's socket (kits.BRIDGE).
TOOLS = ("git", "python3", "python3-venv", "bash", "less", "procps", "ca-certificates", "socat")


def dockerfile(kit: Kit) -> str:
    agent = (
        f"RUN NODE_EXTRA_CA_CERTS={BUILD_CA_PATH} npm install -g --no-audit --no-fund --loglevel=error "
        f"{shlex.quote(kit.package)} && rm -rf /root/.npm /tmp/* && {DROP_PRIVILEGED_FILES}\n"
        if kit.package
        else ""
    )
    return f"""FROM {BASE_NODE}
USER root
COPY build-ca.crt {BUILD_CA_PATH}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
    {" ".join(TOOLS)} && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb && {DROP_PRIVILEGED_FILES}
{agent}# The home is a volume per workspace, filled by Docker from here on first use. The session runs as the
# workspace's owner, whose uid the image cannot know: the home is writable by any uid (sticky), and only
# that one session's container ever mounts it.
RUN install -d -m 1777 {AGENT_HOME}
ENV HOME={AGENT_HOME} PATH=/usr/local/bin:/usr/bin:/bin
USER {SERVER_UID}:{SERVER_UID}
CMD ["bash"]
"""


def image_tag(kit: Kit) -> str:
    recipe = hashlib.sha256(dockerfile(kit).encode()).hexdigest()[:12]
    return f"bosun/sandbox-{kit.name}:{recipe}"


def ensure_image(client: docker.DockerClient, home: Home, kit: Kit, progress: Callable[[str], None]) -> str:
    """The kit's image id, built first if this recipe was never built here. The base images are brought up to
    date first, the egress proxy's included: the session runs this version's proxy, never an older one."""
    ensure_base_images(client, home.cache_dir, progress)
    tag = image_tag(kit)
    try:
        return str(client.images.get(tag).id)
    except ImageNotFound:
        pass
    progress(f"building {tag} (once{', installing ' + kit.package if kit.package else ''})")
    image_id = build(client, dockerfile(kit), tag, progress, labels={"io.bosun.sandbox-kit": kit.name})
    _remove_older(client, kit, tag)
    return image_id


def _remove_older(client: docker.DockerClient, kit: Kit, current: str) -> None:
    """Earlier recipes of this kit are dead weight (an agent image is most of a gigabyte); one still used by a
    running session stays, and goes next time."""
    for image in client.images.list(filters={"label": f"io.bosun.sandbox-kit={kit.name}"}):
        if current in image.tags:
            continue
        with contextlib.suppress(APIError):
            client.images.remove(image.id)
