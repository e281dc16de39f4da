# The agent image: any base with a shell, plus the static agent and an unprivileged task user.
# BASE is the docker-agent base built from Debian's packages by images/rootfs.sh, or, on a
# machine that can pull, a public Debian image such as debian:bookworm-slim.
ARG BASE
FROM ${BASE}

RUN set -eu; \
    if ! grep -q '^agent:' /etc/passwd; then \
      if command -v useradd >/dev/null 2>&1; then \
        useradd --create-home --uid 1000 --user-group --shell /bin/bash agent; \
      else \
        echo 'agent:x:1000:1000:docker-agent tasks:/home/agent:/bin/sh' >> /etc/passwd; \
        echo 'agent:x:1000:' >> /etc/group; \
        mkdir -p /home/agent && chown 1000:1000 /home/agent; \
      fi; \
    fi; \
    mkdir -p /workspace /etc/docker-agent; \
    chown agent:agent /workspace; \
    chmod 0700 /etc/docker-agent

# The build context gives the binary mode 0755; COPY keeps it (no --chmod: the legacy builder lacks it).
COPY docker-agent-agent /usr/local/bin/docker-agent-agent

WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/docker-agent-agent"]
