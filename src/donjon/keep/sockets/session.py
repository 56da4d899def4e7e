"""One run's socket layer: open the sockets, wire A, the workload and B, report how it ended.

The executor uses it for every invocation whose fds the socket layer numbers
(:attr:`donjon.keep.plan.Invocation.fds`)::

    session = SocketSession.open(invocation, options)       # listeners bound, connects made
    instance = session.instantiate(modules, store, module)  # A, the workload, B; map filled
    session.start(timeout_s)                                # the deadline for blocked calls
    ... _start ...
    error = session.failure(program, timeout_s)             # after a trap: why it stopped
    session.close()                                         # after the Store is closed
"""

from __future__ import annotations

import time

import wasmtime

from donjon.errors import WorkloadError
from donjon.keep.config import FileKind
from donjon.keep.errors import DeadlineError
from donjon.keep.plan import Invocation
from donjon.keep.sockets.dispatch import (
    FD_FUNCTIONS,
    TABLE_MODULE,
    TABLE_NAME,
    DispatchModules,
)
from donjon.keep.sockets.errors import RunStoppedError, SocketLayerError
from donjon.keep.sockets.host import RunControl, SocketHost
from donjon.keep.sockets.network import NetworkOptions, OpenNetwork, open_network

__all__ = ["SocketSession"]

_WASI = "wasi_snapshot_preview1"
_INNER = {FileKind.STDIN: 0, FileKind.STDOUT: 1, FileKind.STDERR: 2}
_PYTHON_KINDS = frozenset({FileKind.NULL, FileKind.LISTEN, FileKind.CONNECT})


class SocketSession:
    """The sockets, callbacks and stop conditions of one run."""

    def __init__(
        self, invocation: Invocation, network: OpenNetwork, control: RunControl, host: SocketHost
    ) -> None:
        self._invocation = invocation
        self.network = network
        self._control = control
        self._host = host

    @classmethod
    def open(cls, invocation: Invocation, options: NetworkOptions) -> SocketSession:
        """Bind the listeners and make the connections ``invocation`` grants.

        Raises:
            UnsupportedConfigError, SocketSetupError, PeerVerificationError: see
                :func:`~donjon.keep.sockets.network.open_network`.
        """
        fds = invocation.fds or ()
        python_fds = [(fd, spec) for fd, spec in enumerate(fds) if spec.kind in _PYTHON_KINDS]
        control = RunControl(options.stop)
        try:
            network = open_network(python_fds, options, source=invocation.argv[0])
        except BaseException:
            control.close()
            raise
        host = SocketHost(
            network.endpoints, control, send_stall_timeout_s=options.limits.send_stall_timeout_s
        )
        return cls(invocation, network, control, host)

    def fd_values(self) -> dict[int, int]:
        """The initial fd map: guest fd → wasmtime fd + 1, or -1 for a Python-served fd."""
        values: dict[int, int] = {}
        fds = self._invocation.fds or ()
        for fd, spec in enumerate(fds):
            inner = _INNER.get(spec.kind)
            values[fd] = -1 if inner is None else inner + 1
        base = self._invocation.preopen_base
        for index in range(len(self._invocation.preopens)):
            values[base + index] = 3 + index + 1  # wasmtime numbers pre-opens from 3
        return values

    def instantiate(
        self,
        modules: DispatchModules,
        store: wasmtime.Store,
        module: wasmtime.Module,
    ) -> wasmtime.Instance:
        """Instantiate A, the workload and B in ``store`` and fill the fd map.

        Raises:
            wasmtime.Trap: the workload's start function trapped.
            wasmtime.WasmtimeError: it could not be linked or instantiated.
            WorkloadError: it exports no memory the dispatcher can use.
        """
        table = wasmtime.Table(
            store,
            wasmtime.TableType(
                wasmtime.ValType.funcref(), wasmtime.Limits(len(FD_FUNCTIONS), len(FD_FUNCTIONS))
            ),
            None,
        )
        trampoline = wasmtime.Instance(store, modules.trampoline, [table])
        forwarders = trampoline.exports(store)
        guest_linker = wasmtime.Linker(modules.engine)
        guest_linker.define_wasi()
        guest_linker.allow_shadowing = True
        for fn in FD_FUNCTIONS:
            guest_linker.define(store, _WASI, fn.name, forwarders[fn.name])
        instance = guest_linker.instantiate(store, module)
        memory = instance.exports(store).get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise WorkloadError(
                f'{self._invocation.argv[0]} exports no linear memory named "memory", which '
                "WASI needs; build it as a WASI command"
            )
        linker = wasmtime.Linker(modules.engine)
        linker.define_wasi()
        linker.define(store, "env", "memory", memory)
        linker.define(store, TABLE_MODULE, TABLE_NAME, table)
        self._host.define(linker, store)
        try:
            dispatcher = linker.instantiate(store, modules.dispatcher)
        except wasmtime.WasmtimeError as e:
            raise WorkloadError(
                f"{self._invocation.argv[0]} has a shared or 64-bit linear memory, which the "
                f"socket layer does not support ({e})"
            ) from e
        self._host.attach(store, dispatcher, memory, self.fd_values())
        return instance

    def start(self, timeout_s: float | None) -> None:
        """The workload starts now: blocked socket calls end at ``timeout_s`` from now."""
        if timeout_s is not None:
            self._control.deadline = time.monotonic() + timeout_s

    def failure(self, program: str, timeout_s: float | None) -> WorkloadError | None:
        """Why a trap happened, if the socket layer caused it (else ``None``)."""
        if self._host.error is not None:
            error = SocketLayerError(
                f"internal error in the socket layer while running {program}: {self._host.error!r}"
            )
            error.__cause__ = self._host.error
            return error
        if self._control.reason == "deadline" and timeout_s is not None:
            return DeadlineError(
                f"deadline of {timeout_s} s reached: {program} was stopped during a socket call",
                timeout_s=timeout_s,
            )
        if self._control.reason == "stopped":
            return RunStoppedError(f"{program} was stopped by its caller")
        return None

    def close(self) -> None:
        """Close every socket and stop the acceptors (after the Store is closed)."""
        self._host.close()
        self.network.close()
        self._control.close()
