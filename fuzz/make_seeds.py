#!/usr/bin/env python3
"""Writes the committed seed inputs of the fuzz targets into fuzz/seeds/: `python3 fuzz/make_seeds.py`.

The agent message seeds are protobuf encoded by hand (field numbers from proto/proto/docker_agent/v1),
so regenerating them needs nothing but Python. Their task and agent ids are the ones the
agent_messages target sets up (a1, t1..t5, x1 of the other agent).
"""

import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def num(field, value):
    return varint(field << 3) + varint(value) if value else b""


def blob(field, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(field << 3 | 2) + varint(len(data)) + data


def double(field, value):
    return varint(field << 3 | 1) + struct.pack("<d", value)


# AgentMessage: hello 1, heartbeat 2, output 3, started 4, result 5, setup 6.
def hello(instance="i1", tasks=(), setup=b"", agent="a1", version=1):
    system = blob(1, "box") + blob(2, "Debian") + blob(3, "6.1") + blob(4, "x86_64")
    body = blob(1, agent) + num(2, version) + blob(5, instance) + blob(6, "0.1.0") + blob(7, system)
    body += b"".join(blob(4, t) for t in tasks)
    if setup:
        body += blob(8, setup)
    return blob(1, body)


def report(task, running, stdout_end=0, result=b""):
    return blob(1, task) + num(2, running) + num(3, stdout_end) + (blob(5, result) if result else b"")


def heartbeat():
    health = double(1, 12.5) + num(3, 1 << 20) + num(4, 1 << 30) + double(7, 0.5) + num(13, 1)
    return blob(2, blob(1, health) + blob(2, "t3"))


def output(task, stream, offset, data):
    return blob(3, blob(1, task) + num(2, stream) + num(3, offset) + blob(4, data))


def started(task, at=2_000):
    return blob(4, blob(1, task) + num(2, 42) + num(3, at))


def result_body(task, code=0, stdout_len=0):
    # exit_code is in a oneof, so 0 is written too.
    return blob(1, task) + varint(2 << 3) + varint(code) + num(5, 15) + num(8, stdout_len) + num(10, 3_000)


def result(task, code=0, stdout_len=0):
    return blob(5, result_body(task, code, stdout_len))


def setup_status(state, step=1, total=2):
    return blob(6, setup_body(state, step, total))


def setup_body(state, step=1, total=2):
    return num(1, state) + num(2, step) + num(3, total) + blob(4, "apt-get install -y git") + blob(5, "git")


def frames(*messages):
    return b"".join(struct.pack("<H", len(m)) + m for m in messages)


AGENT_MESSAGES = {
    "reconnect": frames(
        hello(tasks=[report("t2", 1), report("t3", 1, 6), report("t9", 1)]),
        heartbeat(),
        started("t2"),
        output("t2", 1, 0, b"one\n"),
        output("t3", 1, 3, b"lo\nworld\n"),
        output("t3", 2, 0, b"warning\n"),
        result("t3", 0, 12),
    ),
    "restart": frames(hello(instance="i2", setup=setup_body(1)), setup_status(2, 2, 2), heartbeat()),
    "finished_while_away": frames(
        hello(tasks=[report("t3", 0, 6, result_body("t3", 1, 6)), report("t4", 0, 6)]),
        result("t3", 1, 6),
        result("t4"),
    ),
    "setup_failed": frames(hello(setup=setup_body(3)), setup_status(3, 1, 2)),
    "other_agents_task": frames(
        hello(tasks=[report("x1", 1)]),
        started("x1"),
        output("x1", 1, 0, b"not yours"),
        result("x1", 0, 9),
    ),
    "mid_session": frames(
        heartbeat(),
        output("t1", 1, 0, b"a"),
        output("t1", 1, 5, b"gap"),
        started("t5"),
        result("t5", 143),
        hello(),
    ),
    "wrong_protocol": frames(hello(version=99), heartbeat()),
}

TASK_JSON = {
    "shell": {"type": "exec", "command": "pwd"},
    "argv": {
        "type": "exec",
        "command": ["ls", "-la"],
        "cwd": "/tmp",
        "env": {"A": "1"},
        "timeout_secs": 1.5,
    },
    "args": {"type": "exec", "command": "echo", "args": ["a b"], "kill_grace_secs": 2},
    "script": {"type": "script", "script": "echo 1\necho 2", "interpreter": "/bin/bash"},
    "script_default": {"type": "script", "script": "set -e\ntrue", "timeout_secs": 60},
}

JSON_PROFILE = {
    "name": "builder-json",
    "description": "A JSON profile in the seed system's shape",
    "packages": ["git", "build-essential"],
    "environment": {"LANG": "C.UTF-8", "JOBS": 4},
    "resources": {"cpus": "2", "memory": "4g", "pids": 2048},
    "files": [{"path": "/home/agent/.gitconfig", "content": "[user]\n\tname = a\n", "mode": "0600"}],
    "setup_tasks": [
        {"type": "exec", "command": "npm install -g pnpm", "description": "Tools", "timeout": "5m"}
    ],
    "mounts": [{"type": "volume", "source": "cache", "target": "/cache", "read_only": False}],
    "network": "backend",
}


def write(target, name, data):
    path = SEEDS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def main():
    for name, data in AGENT_MESSAGES.items():
        write("agent_messages", name, data)
    for name, task in TASK_JSON.items():
        write("task_json", f"{name}.json", json.dumps(task))
    # The profile target's first byte picks the format: even TOML, odd JSON.
    for toml in sorted((ROOT / "profiles").glob("*.toml")):
        write("profile", toml.name, "0" + toml.read_text())
    write("profile", "builder.json", "1" + json.dumps(JSON_PROFILE, indent=2))
    write(
        "profile",
        "read_only.toml",
        '0name = "ro"\nread_only_root = true\n[[files]]\npath = "/workspace/.env"\ncontent = "A=1"\n'
        '[[mounts]]\nsource = "/srv/data"\ntarget = "/data"\nread_only = true\n',
    )


if __name__ == "__main__":
    main()
