"""The whole training iteration replayed from a CUDA graph (`perf.cuda_graph`).

At batch 100 the reference iteration (one D and two G updates, each forward, backward and Adam)
launches hundreds of small kernels, and the GPU finishes each sooner than the host can launch
the next. A CUDA graph records the iteration once and replays all of it with one launch.

A replay repeats exactly the recorded kernels on the recorded memory, so everything that
changes between iterations lives in device memory that stays in place: each step's batch and
noise are copied into static buffers, learning rates and the EMA weight are device tensors
filled before the replay, and the loss sums and the step count are updated in place. What the
host decides (which phases run) picks the graph: one is captured per distinct phase pattern,
for instance with and without a lazy regularizer update.

Each pattern first runs `warmup` times as ordinary eager iterations (on the side stream that
then captures), so optimizer state, library handles and workspaces exist before capture.
Capture records without running, so the captured iteration is replayed at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from gankit.components.schedules import Phase
from gankit.core.errors import GankitError, warn

if TYPE_CHECKING:
    from gankit.training.iteration import Inputs

Iteration = Callable[["Inputs", Sequence[Phase]], Any]


class IterationGraphs:
    """Runs `iteration(inputs, phases)` from one captured CUDA graph per phase pattern.

    `capture=False` runs the same staging and warm-up logic with every iteration eager, which is
    how the static-buffer plumbing is checked on a CPU. At most `max_graphs` patterns are
    captured; further ones run eagerly (with a warning).
    """

    def __init__(
        self,
        iteration: Iteration,
        *,
        warmup: int = 2,
        capture: bool = True,
        max_graphs: int = 8,
    ) -> None:
        self.iteration = iteration
        self.warmup, self.capture, self.max_graphs = warmup, capture, max_graphs
        self.static: Inputs | None = None
        self.stream: torch.cuda.Stream | None = None  # warm-up and capture (CUDA only)
        self.graphs: dict[tuple[Phase, ...], torch.cuda.CUDAGraph] = {}
        self.eager_runs: Counter[tuple[Phase, ...]] = Counter()
        self.replays = 0

    def run(self, inputs: Inputs, phases: Sequence[Phase]) -> None:
        """One iteration on `inputs`: replayed if its pattern is captured, else eager (and
        captured once warmed up)."""
        pattern = tuple(phases)
        static = self._stage(inputs)
        graph = self.graphs.get(pattern)
        if graph is None and self._ready(pattern):
            graph = self._capture(static, pattern)
        if graph is None:
            self.eager_runs[pattern] += 1
            self._eager(static, pattern)
            return
        graph.replay()
        self.replays += 1

    def _ready(self, pattern: tuple[Phase, ...]) -> bool:
        if not self.capture or self.eager_runs[pattern] < self.warmup:
            return False
        if len(self.graphs) < self.max_graphs:
            return True
        if self.eager_runs[pattern] == self.warmup:  # say it once per pattern
            warn(
                f"perf.cuda_graph: the schedule ran more than {self.max_graphs} different phase "
                "patterns; the new ones run without a graph"
            )
        return False

    def _stage(self, inputs: Inputs) -> Inputs:
        """Copy `inputs` into the static buffers (made from the first inputs)."""
        if self.static is None:
            self.static = type(inputs)(*(None if t is None else t.clone() for t in inputs))
            return self.static
        for name, buffer, tensor in zip(inputs._fields, self.static, inputs, strict=True):
            if _kind(buffer) != _kind(tensor):
                raise GankitError(
                    f"perf.cuda_graph: the iteration's {name} changed from "
                    f"{_kind(buffer)} to {_kind(tensor)}; a graph replays fixed shapes and "
                    "types (keep the batch size fixed, or turn perf.cuda_graph off)"
                )
            if buffer is not None:
                buffer.copy_(tensor)
        return self.static

    def _eager(self, static: Inputs, pattern: tuple[Phase, ...]) -> None:
        if static.real.device.type != "cuda":
            self.iteration(static, pattern)
            return
        # warm up on the stream that captures: cuBLAS and cuDNN set up per stream, lazily
        side = self._stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.iteration(static, pattern)
        torch.cuda.current_stream().wait_stream(side)

    def _stream(self) -> torch.cuda.Stream:
        if self.stream is None:
            self.stream = torch.cuda.Stream()
        return self.stream

    def _capture(self, static: Inputs, pattern: tuple[Phase, ...]) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self._stream(), capture_error_mode="thread_local"):
                self.iteration(static, pattern)
        except RuntimeError as error:
            # a failure inside the capture surfaces as the capture's end failing: name both
            cause = f"{error.__context__}; then: " if error.__context__ else ""
            raise GankitError(
                f"perf.cuda_graph: capturing the iteration failed ({cause}{error}); a component "
                "probably synchronises with the host or allocates differently per step. "
                "Train without the graph (perf.cuda_graph=false)"
            ) from error
        self.graphs[pattern] = graph
        return graph


def _kind(tensor: torch.Tensor | None) -> str:
    if tensor is None:
        return "none"
    return f"{tuple(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"
