"""The command line in a fresh interpreter, as a user runs it, with packages hidden (as a
light install lacks them) and every socket call watched: a Python audit hook records
each connect, send and name lookup (numeric addresses and Unix sockets aside), and, where
``strace`` is installed, the system calls of the process and its threads are traced too,
which also sees what native libraries (onnxruntime, torch) do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Run with: python -c RUNNER HIDDEN_JSON COMMANDS_JSON; reports one JSON line on stderr.
RUNNER = r"""
import contextlib, io, ipaddress, json, socket, sys

hidden = tuple(json.loads(sys.argv[1]))


class Hide:
    # A package of the models extra, as the light install lacks it.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Hide())
network = []


def numeric(host):
    if host is None:
        return True
    try:
        ipaddress.ip_address(str(host).strip("[]").split("%")[0])
        return True
    except ValueError:
        return False


def watch(event, args):
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        if args[0].family != socket.AF_UNIX:
            network.append(f"{event} {args[1]!r}")
    elif event == "socket.getaddrinfo":
        if not numeric(args[0]):
            network.append(f"{event} {args[0]!r}")
    elif event in ("socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"):
        network.append(f"{event} {args!r}")


sys.addaudithook(watch)
from faceveil.cli import main

results = []
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(argv, prog_name="faceveil")
            code = 0
        except SystemExit as e:
            code = e.code or 0
    results.append({"code": code, "stderr": err.getvalue()})
loaded = sorted(m for m in ("torch", "diffusers", "huggingface_hub", "onnxruntime")
                if m in sys.modules)
print(json.dumps({"results": results, "network": network, "loaded": loaded}),
      file=sys.__stderr__)
"""

INET = re.compile(r"^\d+\s+(connect|sendto|sendmsg)\(.*sa_family=AF_INET6?\b", re.M)


def command(commands: list[list], hidden: tuple[str, ...] = (), trace: Path | None = None
            ) -> list[str]:
    """The argv that runs ``commands`` one after another in one fresh interpreter (under
    ``strace`` writing to ``trace`` where given)."""
    argv = [sys.executable, "-c", RUNNER, json.dumps(hidden),
            json.dumps([[str(a) for a in c] for c in commands])]
    if trace is not None:
        argv = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace),
                *argv]
    return argv


def environment(home: Path, **extra: str) -> dict:
    """A user's environment with its own home and caches; what faceveil sets to stay
    offline (HF_HUB_OFFLINE, ORT_DISABLE_TELEMETRY) left for it to set."""
    env = dict(os.environ, HOME=str(home), HF_HOME=str(home / "hf"),
               FACEVEIL_CACHE=str(home / "fv"),
               PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)
    for name in ("HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HUB_DISABLE_TELEMETRY",
                 "ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME"):
        env.pop(name, None)
    return env


def offline_cli(*args, home: Path, cwd: Path, timeout: float = 600
                ) -> subprocess.CompletedProcess:
    """``python -m faceveil ARGS`` in a fresh interpreter, offline, with the Hugging Face
    cache and faceveil's own under ``home``: a model in a filled hub cache, as after a
    pull."""
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE="1", FACEVEIL_CACHE=str(home),
               PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "faceveil", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def strace_works() -> bool:
    """Whether ``strace`` is installed and may trace here (containers may forbid it)."""
    if shutil.which("strace") is None:
        return False
    return subprocess.run(["strace", "-qq", "-e", "trace=none", "true"],
                          capture_output=True).returncode == 0


def run(commands: list[list], home: Path, *, hidden: tuple[str, ...] = (),
        trace: Path | None = None, cwd: Path | None = None, timeout: float = 600) -> dict:
    """Run ``commands`` in one fresh interpreter; returns each command's exit status and
    stderr (``results``), the watched network calls (``network``: the audit hook's, then
    strace's), and which of torch, diffusers, huggingface_hub and onnxruntime loaded."""
    p = subprocess.run(command(commands, hidden, trace), capture_output=True, text=True,
                       env=environment(home), cwd=cwd, timeout=timeout)
    lines = p.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("{"), p.stderr[-3000:]
    report = json.loads(lines[-1])
    report["stdout"] = p.stdout
    if trace is not None:
        report["network"] += inet_calls(trace)
    return report


def inet_calls(trace: Path) -> list[str]:
    """The connects and sends to an IPv4 or IPv6 address in an strace log."""
    return [m.group(0) for m in INET.finditer(trace.read_text())]
