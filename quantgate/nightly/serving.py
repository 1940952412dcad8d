"""Serve mode: each checkpoint of a plan with `serve:` (the baseline included) is measured through an
inference engine the nightly starts for it, one server after another.

For a checkpoint: its folder `state/servers/<checkpoint>/` gets the server's log (`server.log`, started
afresh), its PID (`server.pid`, while it runs) and what it was (`server.json`: engine, command, startup
time). The server gets the flags `quantgate serve` derives (harness.serve), is waited for on its health
path, serves every suite of the checkpoint through the `openai` backend, and is stopped by PID (its
process group) whatever happens. A copy of the log goes into each result folder measured with it.

A server that fails to start, or dies while its suites run, is a ServerFailure for that checkpoint,
with the last lines of its log; the nightly goes on with the next checkpoint, keeps every finished pair,
and ends with MeasurementIncomplete listing the failures (a rerun measures only what is missing).

Served checkpoints are identified by what they serve (the checkpoint's identity, the engine and its
numerical settings), not by URL or port, so that the baseline's cached measurements are found again
by the variants (the baseline's server is down by then) and by a rerun.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.backends.openai import Endpoint
from harness.serve import ServeConfig, VllmServer, log_tail, server_command
from quantgate.plan_runtime import PlanServe

SERVER_LOG, SERVER_PID, SERVER_INFO = "server.log", "server.pid", "server.json"


class ServerFailure(Exception):
    """A checkpoint's server failed to start or died while its suites ran; the message ends with its log's tail."""


class MeasurementIncomplete(Exception):
    """Some checkpoints could not be measured (their servers failed); finished pairs are kept."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__(f"{len(failures)} checkpoint(s) not measured; a rerun measures only what is missing")
        self.failures = failures


def serve_config(serve: PlanServe, model: Path, name: str, log: Path | None = None) -> ServeConfig:
    return ServeConfig(
        model=model,
        python=serve.python,
        device=serve.device,
        dtype=serve.dtype,
        max_model_len=serve.max_model_len,
        max_logprobs=serve.max_logprobs,
        tensor_parallel_size=serve.tensor_parallel_size,
        data_parallel_size=serve.data_parallel_size,
        expert_parallel=serve.expert_parallel,
        gpu_memory_utilization=serve.gpu_memory_utilization,
        gpus=tuple(serve.gpus) if serve.gpus is not None else None,
        kv_cache_gib=serve.kv_cache_gib,
        served_model_name=name,
        extra_args=tuple(serve.extra_args),
        log=log,
        startup_timeout=serve.startup_timeout_s,
        env=dict(serve.env),
    )


def served_identity(serve: PlanServe, checkpoint_identity: str) -> str:
    return f"served:{serve.engine}:{serve.digest()}:{checkpoint_identity}"


def dry_run_line(serve: PlanServe, model: Path, name: str) -> str:
    return f"server {name}: {server_command(serve_config(serve, model, name), serve.engine, port=8000)}"


class ServedCheckpoint:
    """`with ServedCheckpoint(serve, path, name, folder, identity) as endpoint:` the checkpoint served
    until the block ends; a failure to start, or an error while the server is dead, is a ServerFailure."""

    def __init__(self, serve: PlanServe, model: Path, name: str, folder: Path, identity: str) -> None:
        self.serve, self.model, self.name, self.folder, self.identity = serve, model, name, folder, identity
        self.log = folder / SERVER_LOG
        self.server = VllmServer(serve_config(serve, model, name, self.log), serve.engine)

    def __enter__(self) -> Endpoint:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log.unlink(missing_ok=True)
        try:
            self.server.start()
        except RuntimeError as error:
            raise ServerFailure(f"{self.name}: server failed to start: {error}\n{log_tail(self.log)}") from None
        finally:
            if self.server.process is not None:
                (self.folder / SERVER_PID).write_text(f"{self.server.process.pid}\n")
        info = {
            "engine": self.serve.engine,
            "pid": self.server.process.pid,
            "url": self.server.url,
            "startup_s": self.server.startup_s,
            "command": server_command(self.server.config, self.serve.engine, self.server.port),
            "logprobs": f"top-{self.serve.max_logprobs} log-probabilities per token from {self.serve.engine} "
            "(KL against the baseline is over the served distributions)",
        }
        (self.folder / SERVER_INFO).write_text(json.dumps(info, indent=2) + "\n")
        return Endpoint(self.server.url, self.name, self.model, served_identity=self.identity)

    def keep_log(self, result_folder: Path) -> None:
        """A copy of the server's log (and what it was) with a result measured through it."""
        for name in (SERVER_LOG, SERVER_INFO):
            if (self.folder / name).is_file():
                shutil.copyfile(self.folder / name, result_folder / name)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        died = self.server.process is not None and self.server.process.poll() is not None
        status = self.server.process.returncode if died else None
        self.server.stop()
        (self.folder / SERVER_PID).unlink(missing_ok=True)
        if error is not None and died and isinstance(error, Exception):
            raise ServerFailure(
                f"{self.name}: server died while its suites ran (exit status {status}): "
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}\n{log_tail(self.log)}"
            ) from None
