"""petkit serve and petkit gallery init|info|compact: the lost-pet finder service and its gallery folder."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from petkit.cli.common import console, err_console, print_fields, progress_bar, written
from petkit.errors import PetkitError

gallery_app = typer.Typer(help="Create and inspect the gallery folder that 'petkit serve' serves.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("serve", help=(
        "Serve a gallery over HTTP: identify an animal from photos (match, or 'not registered' below the threshold), "
        "enrol and delete pets, a web page at / and the API reference at /docs.\n\n"
        "Example: petkit serve --model runs/dogs/model.onnx --gallery registry/ --api-key-file key.txt"))(serve_command)
    app.add_typer(gallery_app, name="gallery")


def serve_command(
    gallery: Path = typer.Option(..., "--gallery", help="Gallery folder from 'petkit gallery init'."),
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint or model.onnx (default: the model the gallery was made with)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="calibration.json (default: the gallery's, else the one beside the model)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Accept a match at this cosine similarity or above."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default; put a TLS proxy in front for a network)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: any free one, printed)."),
    api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="A file holding the key that enrol and delete requests must send."),
    max_batch: int = typer.Option(32, "--max-batch", help="Photos of concurrent requests embedded in one forward pass, at most."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="How long the first request of a batch waits for others."),
    max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", min=0.001, max=4096, help="Largest request body."),
    max_pixels: float = typer.Option(50e6, "--max-pixels", min=1, max=89_478_485, help="Largest photo, in pixels (decompression-bomb guard)."),
    index_kind: str = typer.Option("auto", "--index-kind", help="auto (exact up to 200k photos, then IVF), flat or ivf."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    import uvicorn

    from petkit.serve.app import create_app
    from petkit.serve.gallery import Gallery
    from petkit.serve.service import Service, Settings

    key = _read_key(api_key_file) if api_key_file else None
    if model is None:
        model = Path(Gallery.describe(gallery)["model"])
    settings = Settings(max_batch=max_batch, max_wait_ms=max_wait_ms, max_pixels=int(max_pixels), max_upload_bytes=int(max_upload_mb * 1024 * 1024))
    service = Service.open(model, gallery, calibration, threshold, device, index_kind, settings)
    try:
        if key is None and not _loopback(host):
            err_console.print(f"[yellow]warning:[/] listening on {escape(host)} without --api-key-file: anyone who reaches it can enrol and delete pets")
        console.print(f"serving {service.gallery.n_identities} identities ({len(service.gallery)} photos, {service.gallery.kind} index) "
                      f"with {escape(str(model))} on {escape(service.embedder.describe())}; threshold {service.threshold:.4f} "
                      f"from {escape(service.threshold_source)}; writes {'need the API key' if key else 'are open'}")
        sock = _bind(host, port)
        address = sock.getsockname()
        config = uvicorn.Config(create_app(service, key), log_level="warning", access_log=False, limit_concurrency=1024, timeout_graceful_shutdown=10)
        shown = f"[{address[0]}]" if ":" in address[0] else address[0]
        console.print(f"listening on http://{shown}:{address[1]}/  (API reference: /docs; Ctrl-C stops)")
        _server_class(uvicorn)(config).run(sockets=[sock])
        if service.gallery.journal_records:
            service.gallery.compact()  # a clean stop starts the next time from one snapshot
    finally:
        service.close()
    console.print(f"stopped; the gallery {escape(str(gallery))} holds {len(service.gallery)} photos of {service.gallery.n_identities} identities")


def _server_class(uvicorn):
    """uvicorn's Server, stopping gracefully on SIGINT/SIGTERM without re-raising the signal afterwards
    (which would end the process before the gallery is compacted and the summary printed)."""
    import contextlib
    import signal
    import threading

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server


def _bind(host: str, port: int):
    """The listening socket, bound here so a port in use is one clear line (uvicorn would exit with its own log)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PetkitError(f"cannot listen on {host!r}: {exc.strerror}", "pass an IP address or a resolvable host name to --host") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise PetkitError(f"cannot listen on {host}:{port}: {exc.strerror}", "is another server on that port? choose another with --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_key(path: Path) -> str:
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PetkitError(f"cannot read the API key file {path}: {exc}", "write the key as one line of text") from exc
    if len(key) < 16 or any(c.isspace() for c in key):
        raise PetkitError(f"the API key in {path} is shorter than 16 characters or holds spaces",
                          "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))' > key.txt")
    return key


@gallery_app.command("init", help=(
    "Create a gallery folder from a saved index ('petkit index build') or labelled embeddings ('petkit embed'), "
    "or an empty one for a model; the photos' files become its thumbnails.\n\n"
    "Example: petkit gallery init registry/ --from runs/dogs/gallery.index"))
def init_command(
    folder: Path = typer.Argument(..., help="New gallery folder."),
    source: Optional[Path] = typer.Option(None, "--from", help="gallery.index or embeddings.npz of labelled photos."),
    model: Optional[Path] = typer.Option(None, "--model", help="The model to serve (checked against the embeddings; alone: an empty gallery)."),
    split: Optional[str] = typer.Option(None, "--split", help="Only this split of an embeddings file."),
) -> None:
    from petkit.serve.gallery import init_gallery

    with progress_bar("thumbnails") as tracker:
        summary = init_gallery(folder, source, model, split, progress=tracker, on_total=tracker.set_total)
    console.print(f"{summary['photos']} photos of {summary['identities']} identities, model {summary['fingerprint']}"
                  + (f", threshold {summary['threshold']:.4f} (from the index)" if summary["threshold"] is not None else ""))
    if summary["duplicates"]:
        console.print(f"{summary['duplicates']} photos listed twice under one identity were enrolled once")
    for path, first, second in summary["conflicts"][:5]:
        err_console.print(f"[yellow]skipped:[/] {escape(path)} is the same photo as one of {escape(first)}, but labelled {escape(second)}")
    if summary["conflicts"]:
        err_console.print(f"[yellow]{len(summary['conflicts'])} photos skipped as copies under another identity ('petkit audit' lists them)[/]")
    if summary["without_thumbnail"]:
        err_console.print(f"[yellow]note:[/] {summary['without_thumbnail']} photos have no thumbnail (their files could not be read)")
    written(("gallery", folder))


@gallery_app.command("info", help="What a gallery folder holds.\n\nExample: petkit gallery info registry/")
def info_command(folder: Path = typer.Argument(..., help="Gallery folder.")) -> None:
    from petkit.serve.gallery import Gallery

    print_fields(Gallery.describe(folder).items())


@gallery_app.command("compact", help=(
    "Fold the journal into a new snapshot (the service does this itself every 10,000 changes and on a clean stop). "
    "Needs the gallery not to be served.\n\nExample: petkit gallery compact registry/"))
def compact_command(folder: Path = typer.Argument(..., help="Gallery folder.")) -> None:
    from petkit.serve.gallery import Gallery

    with Gallery.open(folder) as gallery:
        records = gallery.journal_records
        gallery.compact()
    console.print(f"folded {records} journal records into the snapshot: {len(gallery)} photos of {gallery.n_identities} identities")
    written(("gallery", folder))
