# The agent image of one profile: a base with a shell, the profile's Debian packages, the task user, and
# the static agent. The hub builds it with these build arguments:
#   BASE       the docker-agent base built from Debian's packages by images/rootfs.sh, the profile's
#              `base`, or on a machine that can pull, a public Debian image such as debian:bookworm-slim
#   TASK_USER  the user tasks run as (created with uid 1000 unless the base has it, or `root`)
#   PACKAGES   the profile's Debian packages, space-separated (empty: none)
#   PROFILE    the profile's name, as a label
# Layers go from the least to the most often changed, so a new agent binary reuses the package layer.
ARG BASE
FROM ${BASE}
# Each argument is declared right before the step that uses it: a declared argument is part of every
# later step's cache key, and the user layer should not differ per package list.
ARG TASK_USER=agent

# The hub gives the task user's files uid 1000 and a home of /home/USER: a base that disagrees is
# refused here, with a `docker-agent:` line the hub reports, rather than getting files it cannot use.
RUN set -eu; \
    if [ "$TASK_USER" != root ]; then \
      entry="$(grep "^$TASK_USER:" /etc/passwd || true)"; \
      if [ -n "$entry" ]; then \
        uid="$(echo "$entry" | cut -d: -f3)"; home="$(echo "$entry" | cut -d: -f6)"; \
        if [ "$uid" != 1000 ] || [ "$home" != "/home/$TASK_USER" ]; then \
          echo "docker-agent: user $TASK_USER exists in the base with uid $uid and home $home; it needs uid 1000 and /home/$TASK_USER" >&2; exit 100; \
        fi; \
      else \
        taken="$(grep '^[^:]*:[^:]*:1000:' /etc/passwd | cut -d: -f1 || true)"; \
        if [ -n "$taken" ]; then \
          echo "docker-agent: uid 1000 belongs to user $taken in the base; set user = \"$taken\" in the profile" >&2; exit 100; \
        fi; \
        if command -v useradd >/dev/null 2>&1; then \
          useradd --create-home --uid 1000 --user-group --shell /bin/bash "$TASK_USER"; \
        else \
          echo "$TASK_USER:x:1000:1000:docker-agent tasks:/home/$TASK_USER:/bin/sh" >> /etc/passwd; \
          echo "$TASK_USER:x:1000:" >> /etc/group; \
          mkdir -p "/home/$TASK_USER" && chown 1000:1000 "/home/$TASK_USER"; \
        fi; \
      fi; \
    fi; \
    mkdir -p /workspace /etc/docker-agent /var/lib/docker-agent; \
    chown "$TASK_USER:" /workspace; \
    chmod 0700 /etc/docker-agent /var/lib/docker-agent

ARG PACKAGES=
# Every package is looked up first, so a misspelt one fails the build naming it (the hub reports the
# `docker-agent: no such package` line) instead of in the middle of apt's output.
RUN set -eu; \
    if [ -n "$PACKAGES" ]; then \
      if ! command -v apt-get >/dev/null 2>&1; then \
        echo "docker-agent: the base has no apt-get, so it cannot install packages" >&2; exit 100; \
      fi; \
      export DEBIAN_FRONTEND=noninteractive; \
      apt-get update -q; \
      missing=""; \
      for p in $PACKAGES; do \
        name="${p%%=*}"; \
        apt-cache show "$name" >/dev/null 2>&1 || missing="$missing $name"; \
      done; \
      if [ -n "$missing" ]; then \
        echo "docker-agent: no such package in the base's Debian archive:$missing" >&2; exit 100; \
      fi; \
      apt-get install -y -q --no-install-recommends $PACKAGES; \
      apt-get clean; \
      rm -rf /var/lib/apt/lists/*; \
    fi

# The build context gives the binary mode 0755; COPY keeps it (no --chmod: the legacy builder lacks it).
COPY docker-agent-agent /usr/local/bin/docker-agent-agent

WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/docker-agent-agent"]

# Declared last so it is in no earlier step's cache key: the hub finds a profile's older images by it.
ARG PROFILE
LABEL dev.docker-agent.image-of=${PROFILE}
