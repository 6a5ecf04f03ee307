"""Where a model's network runs at inference: PyTorch (the reference, and training's) or ONNX Runtime.

A model package names the parts of its network that pay to run under ONNX Runtime (``Graph``s:
the CNNs and the detector's box head, never the decoding, the RPN's proposals or NMS, which stay
in torch), exports them with ``export_graph`` and, at load time with ``runtime="onnx"``, swaps each
torch module for an ``OnnxModule``: the same call (a float tensor in, tensors out), run by an ONNX
Runtime session. A graph marked ``int8`` has its matrix products' weights quantized to 8 bits
(ONNX Runtime's dynamic quantization), where a model's own benchmark showed that its figures hold.

Graphs are cached beside the model files, as ``<models>/onnx/<name>-<part>-<hash>.onnx``, the hash
being the ``.pt`` file's: a retrained model has no graph until it is exported again, and a stale
graph is never loaded. ``fashion-search export onnx --models DIR`` writes them; loading never
exports (it would need the exporter's packages and a minute of CPU at a server's start), so a
missing graph is a ``GraphMissing`` error that names that command.

ONNX Runtime's intra-op threads follow torch's thread setting (``torch.get_num_threads()`` at each
call): a session is made per thread count met, the first at load time.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from foundation.atomic import atomic_write
from foundation.modelfiles import ModelError, file_hash

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")
GRAPHS_DIR = "onnx"  # under the models directory
OPSET = 18
FORMAT = "g1"  # in each graph's name: a change to what is exported renames (and so rebuilds) every graph
INSTALL_HINT = "pip install 'fashion-search[onnx]'"


class GraphMissing(ModelError):
    """``runtime="onnx"`` asked for, but the model's graph is not exported (or is of an older file)."""


def check_runtime(name: str, device: str = "cpu") -> str:
    """``name`` when it is a runtime (and ONNX Runtime's CPU provider can serve ``device``)."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    if name == "onnx" and device != "cpu":
        raise ValueError(f"the onnx runtime runs the models on the CPU; use --device cpu, not {device!r}")
    return name


@dataclass(frozen=True)
class Graph:
    """The part of model ``name`` (its file ``<name>.pt``) run under ONNX Runtime.

    ``outputs`` names the graph's outputs in the order the exported module returns them (at load
    time, ``()`` takes them as the graph names them: a detector's levels depend on its backbone);
    ``spatial``: the input's height and width vary too (the detector's padded photos), not only
    the batch; ``input``: the graph's input name; ``int8``: its MatMul/Gemm weights are quantized
    to int8 and their inputs quantized at run time (``onnxruntime.quantization.quantize_dynamic``),
    for fully connected layers whose float product dominates (the detector's box head on 100
    proposals, one thread: torch 11.7 ms, int8 3.9 ms, ``benchmarks/runtime_bench.py``); ``calibrated``: an int8 graph made by
    ``quantize_calibrated`` from photos the export was given, and so only when it was given some
    (the float graph serves where there is none); ``optional``: a graph made only where its models
    allow it (the crop readers' shared stages), run where it exists. Neither kind is required for
    ``--runtime onnx``.
    """

    name: str
    part: str
    outputs: tuple[str, ...]
    spatial: bool = False
    input: str = "images"
    int8: bool = False
    calibrated: bool = False
    optional: bool = False

    def path(self, models_dir: str | Path) -> Path:
        """Where the graph of ``models_dir``'s current ``<name>.pt`` is (or would be) cached."""
        model = Path(models_dir) / f"{self.name}.pt"
        if not model.is_file():
            raise ModelError(f"no {self.name} model at {model}")
        return Path(models_dir) / GRAPHS_DIR / f"{self.name}-{self.part}-{FORMAT}-{file_hash(model)}.onnx"

    def stale(self, models_dir: str | Path) -> list[Path]:
        """Cached graphs of this part made from other versions of the model file (or by another format)."""
        current = self.path(models_dir)
        mine = re.compile(rf"{re.escape(self.name)}-{re.escape(self.part)}-g\d+-[0-9a-f]+\.onnx")
        return sorted(p for p in current.parent.glob("*.onnx") if p != current and mine.fullmatch(p.name))


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError(f"the onnx runtime needs ONNX Runtime: {INSTALL_HINT}") from exc
    return onnxruntime


def export_graph(module: nn.Module, example: torch.Tensor, graph: Graph, models_dir: str | Path) -> Path:
    """Export ``module`` (eval mode; ``module(example)`` gives a tensor or a tuple of them, in
    ``graph.outputs`` order) as ``graph``'s cached file, replacing stale ones. The batch axis is
    dynamic (give an example batch of 2 or more: torch.export fixes axes of size 1). An ``int8``
    graph is quantized after export (the float graph is never cached)."""
    path = graph.path(models_dir)
    if example.ndim != 4 or min(example.shape[0], *example.shape[2:]) < 2:
        raise ValueError(f"export needs an (N >= 2, C, H, W) example, got {tuple(example.shape)}")
    try:
        import onnxscript  # noqa: F401 - torch's exporter needs it; say so before it fails deep inside
    except ImportError as exc:
        raise ModelError(f"exporting ONNX graphs needs onnx and onnxscript: {INSTALL_HINT}") from exc
    from torch.export import Dim

    axes = {0: Dim("batch", min=1, max=4096)}
    if graph.spatial:
        axes.update({2: Dim.DYNAMIC, 3: Dim.DYNAMIC})
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's warnings about its own internals
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,  # torch's supported exporter; the TorchScript one is deprecated
                input_names=[graph.input],
                output_names=list(graph.outputs),
                opset_version=OPSET,
                dynamic_shapes=(axes,),
                verbose=False,
            )
    finally:
        module.train(was_training)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one self-contained file (the weights inside, not beside it): it is written, copied and
    # replaced atomically, like the .pt it comes from
    if graph.int8:
        atomic_write(path, lambda tmp: _save_int8(program, tmp))
    else:
        atomic_write(path, lambda tmp: program.save(tmp, external_data=False))
    for old in graph.stale(models_dir):
        old.unlink(missing_ok=True)
    logger.info("exported %s's %s to %s", graph.name, graph.part, path)
    return path


def _save_int8(program, path) -> None:
    """``program`` saved at ``path`` with its MatMul/Gemm weights in int8 (dynamic quantization)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        float_graph = Path(tmp) / "float.onnx"
        program.save(str(float_graph), external_data=False)
        root = logging.getLogger()
        root.addFilter(_no_preprocessing_advice)  # it logs on the root logger; nothing else is silenced
        try:
            quantize_dynamic(float_graph, path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
        finally:
            root.removeFilter(_no_preprocessing_advice)


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    """False for the quantizer's advice to pre-process the graph (shape inference, which it does anyway)."""
    return not record.getMessage().startswith("Please consider to run pre-processing")


def quantize_calibrated(
    source: str | Path,
    graph: Graph,
    models_dir: str | Path,
    inputs: Sequence[torch.Tensor],
    keep_float: Sequence[str] = (),
) -> Path:
    """The float graph at ``source`` quantized to int8 and saved as ``graph``'s file: ONNX Runtime's
    static quantization (QDQ; weights per output channel; each activation's range the min and max
    it took on ``inputs``, batches the graph's input takes). Nodes that read a weight whose name
    holds one of ``keep_float`` stay in float (parts whose int8 cost a figure more than 0.01)."""
    if not graph.calibrated:
        raise ValueError(f"{graph.name}'s {graph.part} is not a calibrated graph")
    if not inputs:
        raise ValueError("calibrating an int8 graph needs at least one input batch")
    import onnx

    _require_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.left = iter(inputs)

        def get_next(self):
            x = next(self.left, None)
            return None if x is None else {graph.input: x.detach().to("cpu", torch.float32).contiguous().numpy()}

    path = graph.path(models_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.onnx"
        # shape inference and ONNX Runtime's fusions first, as its quantizer advises
        quant_pre_process(str(source), str(ready), skip_symbolic_shape=True)
        nodes = onnx.load(str(ready)).graph.node
        keep = [n.name for n in nodes if any(part in i for part in keep_float for i in n.input)]

        def write(target: Path) -> None:
            quantize_static(
                str(ready),
                str(target),
                Batches(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=keep,
            )

        atomic_write(path, write)
    for old in graph.stale(models_dir):
        old.unlink(missing_ok=True)
    logger.info(
        "quantized %s's %s to int8 on %d inputs (%d nodes kept float)", graph.name, graph.part, len(inputs), len(keep)
    )
    return path


def open_session(path: str | Path, threads: int) -> onnxruntime.InferenceSession:
    """A CPU session on the graph at ``path`` with ``threads`` intra-op threads."""
    ort = _require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1  # these graphs are one chain of convolutions: nothing runs beside it
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # torch's own threads run right after (the detector's heads, the LSTM): ONNX Runtime's workers
    # spinning on in wait of more work would take their cores (measured at 2 threads on 2 cores:
    # the detector's whole pass 56 ms on torch, 88 ms with a spinning ONNX Runtime backbone)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own error types for a bad file
        raise ModelError(f"cannot load the ONNX graph {path}: {exc}") from exc


class OnnxModule(nn.Module):
    """An exported graph in the place of the torch module it came from: ``(N, C, H, W)`` float
    tensor in, the output tensor (or a tuple, for several outputs) out, on the CPU.

    It has no parameters: training, saving or moving it is not its business (the torch model is).
    """

    def __init__(self, path: str | Path, outputs: Sequence[str]):
        super().__init__()
        self.path = Path(path)
        self._sessions: dict[int, onnxruntime.InferenceSession] = {}
        self._lock = threading.Lock()
        first = self.session()  # made now: a bad file is said at load time, not at the first query
        self.outputs = tuple(outputs) or tuple(o.name for o in first.get_outputs())
        self.input = first.get_inputs()[0].name

    def session(self) -> onnxruntime.InferenceSession:
        """The session for torch's current thread count (made on first need; ``run`` is thread-safe)."""
        threads = torch.get_num_threads()
        session = self._sessions.get(threads)
        if session is None:
            with self._lock:
                session = self._sessions.get(threads)
                if session is None:
                    session = open_session(self.path, threads)
                    self._sessions[threads] = session
        return session

    def forward(self, images: torch.Tensor):
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        out = [torch.from_numpy(y) for y in self.session().run(list(self.outputs), {self.input: x})]
        return out[0] if len(out) == 1 else tuple(out)

    def extra_repr(self) -> str:
        return f"{self.path.name}, outputs={self.outputs}"


def open_graph(graph: Graph, models_dir: str | Path) -> OnnxModule:
    """``graph``'s cached file for ``models_dir``'s model, ready to run; ``GraphMissing`` (naming the
    export command) when it was not exported, or not since the model file changed."""
    _require_onnxruntime()  # the missing package is the first thing to fix
    path = graph.path(models_dir)
    if not path.is_file():
        older = " (the graphs there are of an older model file)" if graph.stale(models_dir) else ""
        raise GraphMissing(
            f"no ONNX graph of the {graph.name} model {Path(models_dir) / (graph.name + '.pt')}{older}: "
            f"export it with `fashion-search export onnx --models {models_dir}`, or use --runtime torch"
        )
    logger.info("%s's %s runs on ONNX Runtime (%s)", graph.name, graph.part, path.name)
    return OnnxModule(path, graph.outputs)
