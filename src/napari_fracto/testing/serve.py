"""Start `transformers serve` for a local model directory on 127.0.0.1 and wait until it answers.

Without torchvision, `transformers serve` cannot build Qwen3-VL's processor (a model directory without
`processor_class` makes it fall back to text-only, silently dropping every image; a Hub-style one makes
it fail to start). Running it through this module makes the server's own process load processors the
way napari-fracto does (image-only when torchvision is missing), so images reach the model:

    python -m napari_fracto.testing.serve MODEL_DIR --port 8000      # any `transformers serve` options

From Python (tests, benchmarks, demos) use `TransformersServer(model_dir)` as a context manager; requests
must name `server.model` exactly (the server is pinned to that string).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from napari_fracto.errors import UserError


class ServeError(UserError, RuntimeError):
    """The server did not start; the message holds the end of its log."""


def _last_error(log: str) -> str:
    """The last `SomeError: message` line of a log, so the cause leads the message."""
    errors = re.findall(r"^[A-Za-z_][\w.]*(?:Error|Exception)\b.*$", log, flags=re.MULTILINE)
    return errors[-1] if errors else "see its log below"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve_command(
    model: str, *, host: str = "127.0.0.1", port: int = 8000, extra_args: Sequence[str] = ()
) -> list[str]:
    """The command line that serves `model` with the image-only processor registered."""
    return [
        sys.executable,
        "-m",
        "napari_fracto.testing.serve",
        model,
        "--host",
        host,
        "--port",
        str(port),
        *extra_args,
    ]


class TransformersServer:
    """`transformers serve` pinned to one model directory, in a subprocess, as a context manager."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 180.0,
        extra_args: Sequence[str] = ("--device", "cpu"),
        env: dict[str, str] | None = None,
    ) -> None:
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise ServeError(f"{path} is not a model directory (no config.json): build or download one first")
        self.model = str(path.resolve())
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.extra_args = tuple(extra_args)
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> TransformersServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> TransformersServer:
        """Launch the server and block until `/health` answers 200 (ServeError with its log if not)."""
        if self.process is not None:
            return self
        # A file, not a pipe (a full pipe would stall the server); closed in stop().
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(self.env or {})}
        command = serve_command(self.model, host=self.host, port=self.port, extra_args=self.extra_args)
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://{self.host}:{self.port}/health"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = self.log_tail()
                raise ServeError(
                    f"transformers serve exited with code {self.process.returncode} before answering: "
                    f"{_last_error(tail)}\n--- end of its log ---\n{tail}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise ServeError(
            f"transformers serve did not answer {url} within {self.startup_timeout:g} s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's combined stdout/stderr."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-chars:]

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the server to shut down (SIGTERM), kill it if it does not within `timeout`."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(5)
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None


def use_image_only_processor_in_server() -> None:
    """Make `transformers serve`, in this process, load processors the way napari-fracto does.

    Registering the image-only class with `AutoProcessor` is not enough for Hub-style model directories:
    their preprocessor_config.json names "Qwen3VLProcessor", which `AutoProcessor` resolves before any
    registration and which fails without torchvision. So the server's processor loader is routed through
    `qwen_processor.load_processor` (standard processor when it works, image-only otherwise).
    """
    from napari_fracto.backends.qwen_processor import load_processor, register_image_only_processor

    register_image_only_processor()
    from transformers.cli.serving.model_manager import ModelManager

    original = getattr(ModelManager, "_load_processor", None)
    if original is None:  # a transformers release that reorganised serving: keep its own loading
        return

    def _load_processor(self: Any, model_id_and_revision: str, gguf_file: str | None = None) -> Any:
        if gguf_file is not None:
            return original(self, model_id_and_revision, gguf_file=gguf_file)
        model_id, _, revision = model_id_and_revision.partition("@")
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if not Path(model_id).is_dir() and revision:
            kwargs["revision"] = revision
        return load_processor(model_id, **kwargs)

    ModelManager._load_processor = _load_processor


def main(argv: Sequence[str] | None = None) -> None:
    """`transformers serve` with the image-only Qwen3-VL processor available (same arguments)."""
    use_image_only_processor_in_server()
    from transformers.cli.transformers import app

    args = list(sys.argv[1:] if argv is None else argv)
    # `transformers.cli.transformers.main` would first check PyPI for a newer version; call the app.
    app(args=["serve", *args], prog_name="transformers")


if __name__ == "__main__":
    main()
