"""``faceveil serve``: the local web page on the command line.

Registered lazily by :mod:`faceveil.cli` (like ``eval``); this module imports only
click and the standard library at module level, so ``faceveil --help`` stays fast and
works without the ``web`` extra. Starlette, uvicorn and the model are imported when
the command runs.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

import click

from ..cli.common import build_options, detection_options, handle_errors
from ..errors import InputError
from ..options import DEFAULTS

DEFAULT_PORT = 8765
EXTRA_HINT = "pip install 'faceveil[web]'"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The host names the server answers to (beside the address a request came in on,
    which the Guard always accepts): its loopback names, the name it was bound to, the
    ``--allow-host`` names, and, bound to every interface (0.0.0.0, ::), this machine's
    own names."""
    from .protocol import LOOPBACK_HOSTS

    names = [*LOOPBACK_HOSTS, *(h.lower() for h in extra)]
    bare = host.strip("[]")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return (*names, host.lower())
    if address.is_unspecified:
        return (*names, *{socket.gethostname().lower(), socket.getfqdn().lower()})
    return (*names, f"[{bare}]" if address.version == 6 else bare)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port`` (0: a free port), or a clear error."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise InputError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e}): choose another "
                         "--port (0 picks a free one)") from None
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if is_loopback(host) and host.lower() != "localhost" else host
    try:
        if ipaddress.ip_address(shown.strip("[]")).version == 6:
            shown = f"[{shown.strip('[]')}]"
    except ValueError:
        pass
    return f"http://{shown}:{port}/"


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Keep the default (this machine only): any other "
                   "address lets other machines reach the page, over plain HTTP.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Also answer to this host name (repeatable): a name other machines use "
                   "to reach this one. Requests naming any other host are refused (DNS "
                   "rebinding), whatever --host is.")
@click.option("--port", default=DEFAULT_PORT, show_default=True,
              type=click.IntRange(0, 65535), help="Port; 0 picks a free one (printed).")
@click.option("--model", "-m", default=None, metavar="ID_OR_DIR",
              help="Model to anonymize with: preset, local diffusers folder or Hugging Face "
                   "id (default: the default model, see `faceveil models`). Recovery uses "
                   "the model each file names.")
@click.option("--steps", default=None, type=click.IntRange(1, 1000),
              help="DDIM steps for anonymization [default: as anonymize: 25 with "
                   "sealed originals].")
@detection_options
@click.option("--device", default=DEFAULTS.runtime.device, show_default=True,
              help="cpu, cuda, or auto.")
@click.option("--batch-size", default=DEFAULTS.runtime.batch_size, show_default=True,
              type=click.IntRange(1),
              help="Faces per model batch.")
@click.option("--max-upload-mb", default=25.0, show_default=True,
              type=click.FloatRange(0.01, 4096),
              help="Largest upload (one photo, anonymized file or request), in MB.")
@click.option("--max-memory-mb", default=1024.0, show_default=True,
              type=click.FloatRange(1, 1 << 20),
              help="Memory the server may hold for photos and results, in MB; past it the "
                   "least recently used are forgotten, then new uploads are refused.")
@click.option("--keep-minutes", default=30.0, show_default=True,
              type=click.FloatRange(0.1, 24 * 60),
              help="Photos and results unused for this long are forgotten.")
@click.option("--open", "open_browser", is_flag=True,
              help="Open the page in this machine's web browser.")
@click.option("--access-log", is_flag=True,
              help="Log one line per request (method, path, status). Keys and passphrases "
                   "travel in request bodies, which are never logged.")
@handle_errors
def serve_command(host, allow_hosts, port, model, steps, detector, threshold, min_face,
                  occluders, device, batch_size, max_upload_mb, max_memory_mb, keep_minutes,
                  open_browser, access_log) -> None:
    """Start the local web page: anonymize photos (review the detected faces first) and
    recover them, in a browser on this machine.

    Photos and keys stay in this process's memory and are never written to disk; what
    you download is all that leaves it. Stop it with Ctrl-C.
    """
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise InputError(f"faceveil serve needs the web extra ({e.name} is missing): "
                         f"{EXTRA_HINT}") from None
    import logging

    from . import server
    from .app import Settings, create_app
    from .protocol import MB, RedactIds

    if not is_loopback(host):
        click.secho(
            f"WARNING: --host {host} makes this page reachable from other machines. Anyone "
            "who can reach it can upload photos and use this machine's CPU, and photos and "
            "keys travel over plain, unencrypted HTTP. Use it only on a network you trust, "
            "or keep the default 127.0.0.1.", err=True, fg="red", bold=True)
    options = build_options({"steps": steps, "detector": detector, "threshold": threshold,
                             "min_face": min_face, "occluders": occluders,
                             "device": device,
                             "batch_size": batch_size})
    settings = Settings(model=model, options=options,
                        max_upload=int(max_upload_mb * MB), max_memory=int(max_memory_mb * MB),
                        keep_seconds=keep_minutes * 60,
                        allowed_hosts=allowed_hosts(host, allow_hosts))
    sock = bind(host, port)
    app = None
    try:
        from ..diffusion.hub import default_model

        click.echo(f"loading the model {model or default_model().name}...", err=True)
        app = create_app(settings)
        url = url_of(sock, host)
        logging.basicConfig(format="faceveil: %(message)s", level=logging.INFO, stream=sys.stderr)
        config = server.config(app, access_log)  # sets uvicorn's loggers: before ours
        if access_log:  # uvicorn's access logger is quiet below info
            access = logging.getLogger("uvicorn.access")
            access.setLevel(logging.INFO)
            access.addFilter(RedactIds())
        click.echo(f"faceveil web page: {url}  (Ctrl-C stops it)")
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        server.run(config, sock)
    finally:
        if app is not None:
            app.state.web.shutdown()
        sock.close()
