#!/usr/bin/env bash
# Builds the default base root filesystem from Debian's packages, with no registry:
# a `debootstrap --variant=minbase bookworm` tree, trimmed, ready to be imported as an image.
# Usage: rootfs.sh TARGET_DIR
# The hub runs this when its base image is missing; debootstrap's default mirror is used.
set -euo pipefail
target=${1:?usage: rootfs.sh TARGET_DIR}
suite=${DOCKER_AGENT_SUITE:-bookworm}

debootstrap --variant=minbase "$suite" "$target"

# Nothing in the image needs these, and they make it larger and less reproducible.
rm -rf "$target"/var/lib/apt/lists/* "$target"/var/cache/apt/*.bin "$target"/var/cache/apt/archives/*.deb \
       "$target"/var/log/* "$target"/tmp/* "$target"/usr/share/doc/* "$target"/usr/share/man/* \
       "$target"/usr/share/info/*
# Devices are provided by the container runtime.
rm -rf "$target"/dev/*
echo "rootfs ready: $(du -sh "$target" | cut -f1)"
