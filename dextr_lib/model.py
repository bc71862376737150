"""The DEXTR model wrapper: a network plus its pre-processing profile."""
from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from .core.geometry import as_points_array
from .core.images import ImageLike
from .errors import CheckpointError, DeviceError, ExportError, InvalidImageError, MismatchError
from .inference.device import module_device, resolve_device, resolve_precision
from .inference.engine import Engine, check_batch_size, check_threshold
from .inference.preprocessing import Preprocess, as_corrections, get_profile
from .inference.runtimes import Runner, check_runtime, make_runner, network_to_onnx
from .weights import checkpoint as ckpt_io
from .weights.architectures import build_network
from .weights.surgery import add_negative_channel
from .weights.loading import OnnxModelFile, is_onnx_spec, network_from_checkpoint, read_onnx_model, resolve_checkpoint

PathLike = Union[str, os.PathLike]


def _file_signature(path: PathLike) -> Tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


#: ``precision`` choices of :meth:`DextrModel.predict` (``auto``: bf16 where the hardware runs it
#: natively, else fp32; see :func:`dextr_lib.inference.device.resolve_precision`).
PRECISIONS = ("fp32", "bf16", "fp16", "auto")


class TorchNetwork:
    """The network source of a model with PyTorch weights: it runs in every runtime (exported to
    ONNX in memory the first time ``onnxruntime`` or ``openvino`` asks for a graph), trains and
    saves.

    Args:
        net: the ``nn.Module`` mapping ``(N, 4, T, T)`` inputs to ``(N, 1, T, T)`` logits.
        onnx: its serialized ONNX graph, if already made.
    """

    def __init__(self, net: nn.Module, onnx: Optional[bytes] = None):
        self.net = net
        self.onnx = onnx

    @property
    def device(self) -> torch.device:
        return module_device(self.net)

    def to(self, device: Union[str, torch.device]) -> None:
        self.net.to(resolve_device(device) if isinstance(device, str) else device)

    def train(self, mode: bool) -> bool:
        """Set the training mode; True when this made the ONNX graph stale (and dropped it)."""
        self.net.train(mode)
        stale = mode and self.onnx is not None  # the weights will change
        if stale:
            self.onnx = None
        return stale

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode while predicting; the caller's mode (a training loop's) restored after."""
        was_training = self.net.training
        self.net.eval()
        try:
            yield
        finally:
            self.net.train(was_training)

    def graph(self, target_size: int, in_channels: int = 4) -> bytes:
        if self.onnx is None:
            self.onnx = network_to_onnx(self.net, target_size, in_channels=in_channels)
        return self.onnx

    def make_runner(self, runtime: str, precision: str, device: torch.device, target_size: int,
                    in_channels: int = 4) -> Runner:
        graph = self.graph(target_size, in_channels) if runtime != "torch" else None
        return make_runner(runtime, precision, device, net=self.net, onnx_graph=graph)

    def state_dict(self) -> Dict[str, Any]:
        return self.net.state_dict()


class OnnxNetwork:
    """The network source of a model loaded from ONNX: a graph that ``onnxruntime`` and
    ``openvino`` run on the CPU; it cannot run in torch, train or save PyTorch weights.

    Args:
        onnx: the serialized graph; or
        onnx_file: an ``.onnx`` file holding it, which the runtimes read (so the weights are not
            kept twice in memory); checked to be unchanged since loading.
    """

    net = None

    def __init__(self, onnx: Optional[bytes] = None, onnx_file: Optional[PathLike] = None):
        if onnx is None and onnx_file is None:
            raise ValueError("a DextrModel needs a network or an ONNX graph")
        self.onnx = onnx
        # absolute: the process may change its working folder before a runtime reads the file
        self._file = (None if onnx_file is None else
                      (os.path.abspath(onnx_file), _file_signature(onnx_file)))

    device = torch.device("cpu")

    def to(self, device: Union[str, torch.device]) -> None:
        if device == "auto":
            return
        dev = resolve_device(device) if isinstance(device, str) else device
        if dev.type != "cpu":
            raise DeviceError(f"an ONNX model runs on the CPU here, not {device!r}; "
                              "use the .pt checkpoint it was exported from on a GPU")

    def train(self, mode: bool) -> bool:
        if mode:
            raise ExportError("an ONNX model cannot be trained; train the .pt checkpoint it came from")
        return False

    evaluating = staticmethod(contextlib.nullcontext)

    def _source(self) -> Union[bytes, str]:
        """What a runtime builds its session from: the file (checked to be the one loaded), else
        the graph's bytes."""
        if self.onnx is not None:
            return self.onnx
        path, signature = self._file
        try:
            unchanged = _file_signature(path) == signature
        except OSError:
            unchanged = False
        if not unchanged:
            raise CheckpointError(f"{path} changed or went away since this model was loaded "
                                  "from it; load it again")
        return path

    def graph(self, target_size: int, in_channels: int = 4) -> bytes:
        source = self._source()
        return source if isinstance(source, bytes) else Path(source).read_bytes()

    def make_runner(self, runtime: str, precision: str, device: torch.device, target_size: int,
                    in_channels: int = 4) -> Runner:
        if runtime == "torch":
            raise ExportError("this model is an ONNX graph; run it with runtime onnxruntime or "
                              "openvino, or load the .pt checkpoint it was exported from")
        return make_runner(runtime, precision, device, onnx_graph=self._source())

    def state_dict(self) -> Dict[str, Any]:
        raise ExportError("an ONNX model has no PyTorch weights to save; keep the checkpoint "
                          "it was exported from")


def _network_source(net: Optional[nn.Module], onnx: Optional[bytes],
                    onnx_file: Optional[PathLike]) -> Union[TorchNetwork, OnnxNetwork]:
    """The source a :class:`DextrModel` runs, chosen once: PyTorch weights where given."""
    return TorchNetwork(net, onnx) if net is not None else OnnxNetwork(onnx, onnx_file)


class DextrModel:
    """A DEXTR network with everything needed to turn clicks into masks.

    A thin facade over three parts: the network source (:class:`TorchNetwork` or
    :class:`OnnxNetwork`, chosen at construction), the runners it makes
    (:mod:`dextr_lib.inference.runtimes`, one per runtime, precision and device, kept) and the
    batching :class:`~dextr_lib.inference.engine.Engine` every prediction goes through.

    Attributes:
        net: the ``nn.Module`` mapping ``(N, 4, T, T)`` inputs to ``(N, 1, T, T)`` logits; ``None``
            for a model loaded from an ONNX file.
        preprocess: its pre-processing settings (:class:`~dextr_lib.inference.preprocessing.Preprocess`),
            made from a named profile (``preprocess.name``: ``dextr``, ``dextr012``, ``original``).
        arch: the registered architecture (network family) name.
        meta: plain provenance data saved with the checkpoint.
        onnx: the serialized ONNX graph of the network (made on first use of the
            ``onnxruntime``/``openvino`` runtimes, or given); ``None`` otherwise, and for a model
            loaded from an ``.onnx`` file, whose runtimes read the file instead (so the model
            does not keep a second copy of the weights in memory).
        runtime: the runtime :meth:`predict` uses by default (see :mod:`dextr_lib.inference.runtimes`).
    """

    def __init__(
        self, net: Optional[nn.Module], preprocess: Preprocess, arch: str,
        meta: Optional[Dict[str, Any]] = None, *, onnx: Optional[bytes] = None,
        onnx_file: Optional[PathLike] = None,
    ):
        self._network = _network_source(net, onnx, onnx_file)
        self.preprocess = preprocess
        self.arch = arch
        self.meta = dict(meta or {})
        self.runtime = "torch" if isinstance(self._network, TorchNetwork) else "onnxruntime"
        #: Set by ``load_model``: what a legacy file was converted from (None otherwise).
        self.load_note: Optional[str] = None
        #: Set when loaded: the pretrained model name or the file it came from (None when created).
        self.source: Optional[str] = None
        self._runners: Dict[Tuple[str, str, str], Runner] = {}

    def __repr__(self) -> str:
        p = self.preprocess
        return (
            f"DextrModel(arch={self.arch!r}, profile={p.name!r}, target_size={p.target_size}, "
            f"padding={p.padding}, blob_sigma={p.blob_sigma}, device={self.device}, "
            f"runtime={self.runtime!r})"
        )

    # -- the dextr 0.1.2 attributes ------------------------------------------------------------
    @property
    def net(self) -> Optional[nn.Module]:
        return self._network.net

    @net.setter
    def net(self, net: nn.Module) -> None:  # a new network: the runners of the old one go
        self._network = TorchNetwork(net)
        self._runners = {}

    @property
    def onnx(self) -> Optional[bytes]:
        return self._network.onnx

    @property
    def is_onnx(self) -> bool:
        """Whether the model is an ONNX graph (loaded from ``.onnx``): no PyTorch weights to
        run in torch, train, save or export."""
        return isinstance(self._network, OnnxNetwork)

    @property
    def takes_negatives(self) -> bool:
        """Whether the network takes negative correction clicks (a fifth input channel; see
        :meth:`add_negative_channel`). Positive corrections every model takes."""
        return self.preprocess.negative_clicks

    def add_negative_channel(self) -> "DextrModel":
        """Give the network a negative-click input channel, zero-initialised, in place: until
        fine-tuned (``dextr finetune ... --corrections N``) its masks are exactly those of
        before, whatever negatives are given.

        Raises:
            ExportError: an ONNX model (it has no PyTorch weights to change).
            CheckpointError: the model takes negatives already.
        """
        if self.is_onnx:
            raise ExportError("an ONNX model's input cannot be changed; add the channel to the "
                              ".pt checkpoint it was exported from")
        if self.takes_negatives:
            raise CheckpointError("this model takes negative clicks already")
        self.net = add_negative_channel(self.net)
        self.preprocess = self.preprocess.replace(negative_clicks=True)
        return self

    @property
    def target_size_yx(self) -> Tuple[int, int]:
        return (self.preprocess.target_size, self.preprocess.target_size)

    @property
    def padding(self) -> float:
        return self.preprocess.padding

    @property
    def blob_sigma(self) -> float:
        return self.preprocess.blob_sigma

    @property
    def device(self) -> torch.device:
        return self._network.device

    def to(self, device: Union[str, torch.device]) -> "DextrModel":
        """Move the network to ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``auto``).

        A model loaded from ONNX stays on the CPU (``auto`` picks it)."""
        self._network.to(device)
        return self

    def eval(self) -> "DextrModel":
        return self.train(False)

    def train(self, mode: bool = True) -> "DextrModel":
        if self._network.train(mode):  # the graph is stale: so are the runners made from it
            self._runners = {k: r for k, r in self._runners.items() if k[0] == "torch"}
        return self

    # -- runtimes ------------------------------------------------------------------------------
    def onnx_graph(self) -> bytes:
        """The serialized ONNX graph of the network (exported on first call, then kept; read
        from its file for a model loaded from ``.onnx``)."""
        return self._network.graph(self.preprocess.target_size, self.preprocess.in_channels)

    def runner(self, runtime: Optional[str] = None, precision: str = "fp32") -> Runner:
        """The :class:`~dextr_lib.inference.runtimes.Runner` that :meth:`predict` calls the network
        through: ``runtime`` (default :attr:`runtime`) at ``precision`` on the model's device.
        Made once per combination; a torch model is exported to ONNX in memory the first time
        ``onnxruntime`` or ``openvino`` is asked for (``dextr export`` saves that for good).

        Raises:
            UnknownNameError: unknown runtime or precision.
            DeviceError, ExportError: a combination this model or machine cannot run.
            MissingExtraError: the runtime's package is not installed.
        """
        runtime = check_runtime(runtime or self.runtime)
        dev = self.device
        key = (runtime, precision, str(dev))
        if key not in self._runners:
            resolved = resolve_precision(precision, dev, runtime)
            if runtime != "torch" and resolved != "fp32" and self.meta.get("quantization"):
                resolved = "fp32"  # an int8 graph: its other operators stay fp32
            self._runners[key] = self._network.make_runner(runtime, resolved, dev, self.preprocess.target_size,
                                                           self.preprocess.in_channels)
        return self._runners[key]

    def engine(
        self,
        *,
        batch_size: Optional[int] = None,
        device: Optional[Union[str, torch.device]] = None,
        threshold: Optional[float] = None,
        precision: str = "fp32",
        runtime: Optional[str] = None,
    ) -> Engine:
        """The batching :class:`~dextr_lib.inference.engine.Engine` of this model (arguments as
        for :meth:`predict`; the model is moved to ``device``). Its ``run`` keeps the network in
        eval mode while it yields masks.

        Raises:
            InvalidValueError: a batch size below 1 or a threshold outside ``[0, 1]``.
        """
        if batch_size is not None:
            check_batch_size(batch_size)
        if threshold is not None:
            check_threshold(threshold)
        if device is not None:
            self.to(device)
        check_runtime(runtime or self.runtime)
        return Engine(self.runner(runtime, precision), self.preprocess, self.device,
                      batch_size=batch_size, threshold=threshold, network_mode=self._network.evaluating)

    # -- inference -----------------------------------------------------------------------------
    def predict(
        self,
        images: Sequence[ImageLike],
        extreme_points: Union[np.ndarray, Sequence],
        *,
        positive: Optional[Sequence] = None,
        negative: Optional[Sequence] = None,
        batch_size: Optional[int] = None,
        device: Optional[Union[str, torch.device]] = None,
        threshold: Optional[float] = None,
        precision: str = "fp32",
        runtime: Optional[str] = None,
    ) -> List[np.ndarray]:
        """Masks for objects given by their extreme points, one object per image.

        Args:
            images: ``N`` PIL images or arrays (``(H, W)``, ``(H, W, 3)``, ``(H, W, 4)``; uint8 or
                float in ``[0, 1]``). Passing the same image object several times converts it once.
            extreme_points: ``N`` ``(4, 2)`` arrays of ``[y, x]`` points, or an ``(N, 4, 2)`` array.
            positive: correction clicks on parts the mask should include: ``None``, or one
                ``(k, 2)`` ``[y, x]`` array per object (``k`` may be 0). They join the extreme
                points' heatmap, so every model takes them.
            negative: correction clicks on parts the mask should leave out, as ``positive``;
                only for a model that :attr:`takes_negatives`.
            batch_size: objects per network forward (default: 1 for the torch runtime on a CPU,
                where bigger batches are slower per object, else 8; see
                :func:`dextr_lib.inference.device.default_batch_size`).
            device: run on this device (the model is moved there); default the model's device.
            threshold: if given, return boolean masks ``prob >= threshold``.
            precision: ``"fp32"`` (exact), ``"bf16"`` (about 2x faster on CPUs with AVX512-BF16
                or AMX and on recent GPUs; probabilities differ by up to a few hundredths),
                ``"fp16"`` (GPU only) or ``"auto"`` (bf16 where the hardware runs it natively,
                else fp32).
            runtime: ``"torch"``, ``"onnxruntime"`` or ``"openvino"`` (default: :attr:`runtime`);
                see :mod:`dextr_lib.inference.runtimes`.

        Returns:
            ``N`` masks, each ``(H, W)`` of its image: float32 probabilities, or bool with ``threshold``.

        Raises:
            MismatchError: ``len(images) != len(extreme_points)``, or ``positive``/``negative``
                not one entry per object.
            InvalidPointsError, InvalidImageError: malformed inputs.
            CorrectionError: a correction outside the crop the object's extreme points define
                (move an extreme point instead), or a negative one for a model that does not
                :attr:`takes_negatives`.

        Example:
            >>> masks = model.predict([image], [[[10, 5], [12, 60], [2, 30], [40, 33]]],
            ...                       positive=[[[20, 30]]], threshold=0.5)
        """
        if isinstance(images, (np.ndarray,)) or not isinstance(images, Sequence):
            raise InvalidImageError(
                "images must be a list of PIL images or arrays (one per object); for one image "
                "with several objects use predict_image(image, points_list)"
            )
        points = as_points_array(extreme_points)
        if len(images) != len(points):
            raise MismatchError(
                f"got {len(images)} images but {len(points)} extreme point sets; "
                "predict() takes one image per object"
            )
        pos, neg = self._corrections(positive, negative, len(points))
        # Group objects by image object so an image shared by several objects is converted once.
        groups: Dict[int, Tuple[ImageLike, List[int]]] = {}
        for i, img in enumerate(images):
            groups.setdefault(id(img), (img, []))[1].append(i)
        by_image = [(img, idx) for img, idx in groups.values()]
        results = self._run(
            ((img, points[idx], _pick(pos, idx), _pick(neg, idx)) for img, idx in by_image),
            batch_size, device, threshold, precision, runtime,
        )
        order = [i for _, idx in by_image for i in idx]
        out: List[Optional[np.ndarray]] = [None] * len(points)
        for i, mask in zip(order, results):
            out[i] = mask
        return out  # type: ignore[return-value]

    def predict_image(
        self,
        image: ImageLike,
        points_list: Union[np.ndarray, Sequence],
        *,
        positive: Optional[Sequence] = None,
        negative: Optional[Sequence] = None,
        batch_size: Optional[int] = None,
        device: Optional[Union[str, torch.device]] = None,
        threshold: Optional[float] = None,
        precision: str = "fp32",
        runtime: Optional[str] = None,
    ) -> List[np.ndarray]:
        """Masks for several objects on one image (decoded and converted once).

        Args:
            image: a PIL image or array, as in :meth:`predict`.
            points_list: ``K`` ``(4, 2)`` ``[y, x]`` arrays, an ``(K, 4, 2)`` array, or one ``(4, 2)``.
            positive, negative: ``None`` or ``K`` ``(k, 2)`` ``[y, x]`` correction arrays, one
                per object, as in :meth:`predict`.

        Returns:
            ``K`` ``(H, W)`` masks, as in :meth:`predict`.

        Raises:
            CorrectionError, MismatchError, InvalidPointsError: as in :meth:`predict`.
        """
        points = as_points_array(points_list, name="points_list")
        pos, neg = self._corrections(positive, negative, len(points))
        return list(self._run([(image, points, pos, neg)], batch_size, device, threshold, precision, runtime))

    def predict_iter(
        self,
        items: Iterable[tuple],
        *,
        batch_size: Optional[int] = None,
        device: Optional[Union[str, torch.device]] = None,
        threshold: Optional[float] = None,
        precision: str = "fp32",
        runtime: Optional[str] = None,
    ) -> Iterator[np.ndarray]:
        """Masks one at a time for ``(image, points_list)`` pairs, batching objects across images.

        ``items`` is consumed lazily, so a caller can read each image only when the network
        needs it and write each mask as it comes: memory holds one batch, not every mask.

        Args:
            items: ``(image, points)`` pairs or ``(image, points, positive, negative)``
                tuples; ``points`` is one ``(4, 2)`` ``[y, x]`` array or a ``(K, 4, 2)`` array
                of the image's objects, ``positive``/``negative`` ``None`` or ``K`` ``(k, 2)``
                ``[y, x]`` correction arrays as in :meth:`predict`.
            batch_size, device, threshold, precision, runtime: as for :meth:`predict`.

        Yields:
            One ``(H, W)`` mask per object, in order, as in :meth:`predict`.
        """
        return self._run(
            ((img, as_points_array(pts, name="points_list"), *clicks) for img, pts, *clicks in items),
            batch_size, device, threshold, precision, runtime,
        )

    def _corrections(self, positive: Any, negative: Any, n: int) -> Tuple[Optional[List[np.ndarray]], ...]:
        """``positive`` and ``negative`` checked for ``n`` objects, and negatives refused at
        once by a model without their channel (before any work)."""
        pos = as_corrections(positive, n, "positive")
        neg = as_corrections(negative, n, "negative")
        self.preprocess.check_negatives(neg)
        return pos, neg

    def _run(
        self,
        items: Iterable[Tuple[ImageLike, np.ndarray]],
        batch_size: Optional[int],
        device: Optional[Union[str, torch.device]],
        threshold: Optional[float],
        precision: str = "fp32",
        runtime: Optional[str] = None,
    ) -> Iterator[np.ndarray]:
        """Yield one mask per object of ``items`` in order, through the engine (a generator:
        nothing runs, not even the checks, until the first mask is asked for)."""
        yield from self.engine(batch_size=batch_size, device=device, threshold=threshold,
                               precision=precision, runtime=runtime).run(items)

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint_dict(self, **extra: Any) -> Dict[str, Any]:
        """The checkpoint dict :meth:`save` writes (``extra`` keys are added at top level)."""
        return ckpt_io.make_checkpoint(
            self.arch, self.preprocess.to_dict(), self._network.state_dict(), self.meta, **extra
        )

    def save(self, path: PathLike) -> None:
        """Write weights and inference settings to ``path`` atomically; loadable with
        ``torch.load(path, weights_only=True)``."""
        ckpt_io.atomic_torch_save(self.checkpoint_dict(), path)

    @classmethod
    def from_checkpoint(cls, ckpt: Dict[str, Any], map_location: Any = None, source: str = "<checkpoint>") -> "DextrModel":
        """Build a model from a loaded checkpoint dict (see :mod:`dextr_lib.weights.checkpoint`)."""
        net, preprocess = network_from_checkpoint(ckpt, source)
        model = cls(net, preprocess, ckpt["arch"], ckpt.get("meta"))
        model.to(resolve_device(map_location) if map_location is None or isinstance(map_location, str) else map_location)
        return model.eval()

    @classmethod
    def load(cls, path: PathLike, map_location: Any = None) -> "DextrModel":
        """Load a checkpoint written by :meth:`save` (or by training).

        Args:
            path: checkpoint file.
            map_location: device for the model; default CUDA when available, else CPU.

        Raises:
            CheckpointError: missing, unreadable or incompatible file.
        """
        ckpt = ckpt_io.read_checkpoint(path, map_location="cpu")
        model = cls.from_checkpoint(ckpt, map_location, os.fspath(path))
        model.source = os.fspath(path)
        return model

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: Union[str, PathLike],
        map_location: Any = None,
        *,
        cache_dir: Optional[PathLike] = None,
        mirror: Optional[str] = None,
        on_progress: Optional[Callable[[int, Optional[int]], None]] = None,
        runtime: Optional[str] = None,
    ) -> "DextrModel":
        """A ready model from a file or the zoo: the one loader every ``--model`` option uses.

        Args:
            name_or_path: a path to one of our checkpoints, a path to a legacy file (a ``dextr``
                0.1.2 pickle or an original DEXTR-PyTorch state dict, converted in memory), or a
                pretrained model name (:func:`dextr_lib.weights.zoo.list_pretrained`; downloaded into
                the cache when missing), or an ``.onnx`` file written by ``dextr export`` (runs
                with ONNX Runtime or OpenVINO). See :mod:`dextr_lib.weights.loading`.
            map_location: device for the model; default CUDA when available, else CPU.
            cache_dir: model cache (default: :func:`dextr_lib.weights.zoo.models_dir`).
            mirror: base URL tried first for zoo downloads; default ``$DEXTR_MIRROR``.
            on_progress: download progress callback ``fn(done_bytes, total_bytes_or_None)``.
            runtime: the model's default :attr:`runtime`, ``torch``, ``onnxruntime`` or
                ``openvino`` (default: ``torch``; for ``.onnx`` files ``openvino`` where it is
                installed, else ``onnxruntime``).

        Returns:
            A model in eval mode. Its ``load_note`` says what a legacy file was converted from
            (``None`` for our own checkpoints).

        Raises:
            CheckpointError: no such file or name, or an unreadable/unsupported file.
            DownloadError, ChecksumError: a zoo download failed.

        Example:
            >>> model = DextrModel.from_pretrained("pascalvoc-resunet101", map_location="cpu")
        """
        if is_onnx_spec(name_or_path):
            model = cls.from_onnx(read_onnx_model(name_or_path))
            if map_location is not None:
                model.to(map_location)
        else:
            found = resolve_checkpoint(name_or_path, cache_dir=cache_dir, mirror=mirror, on_progress=on_progress)
            model = cls.from_checkpoint(found.checkpoint, map_location, source=found.source)
            model.load_note = found.note
            model.source = found.pretrained or found.source
        if runtime is not None:
            model.runtime = check_runtime(runtime)
        return model

    @classmethod
    def from_onnx(cls, onnx_file: OnnxModelFile) -> "DextrModel":
        """A model running a dextr ONNX graph (see :func:`dextr_lib.weights.loading.read_onnx_model`)."""
        if onnx_file.path is not None:  # runtimes read the file: no copy of the graph kept here
            model = cls(None, onnx_file.preprocess, onnx_file.arch, onnx_file.meta, onnx_file=onnx_file.path)
        else:
            model = cls(None, onnx_file.preprocess, onnx_file.arch, onnx_file.meta, onnx=onnx_file.data)
        model.source = onnx_file.source
        if importlib.util.find_spec("openvino") is not None:
            # Where installed, OpenVINO: on the CPUs measured it ran int8 graphs 1.3-1.7x faster
            # than ONNX Runtime and fp32 ones a little faster, in 8-15% less memory
            # (benchmarks/README.md).
            model.runtime = "openvino"
        return model

    @classmethod
    def pascalvoc_resunet101(cls, map_location: Any = "cpu", **kwargs: Any) -> "DextrModel":
        """``dextr`` 0.1.2's published PASCAL VOC ResNet-101 U-Net (the seed API)."""
        return cls.from_pretrained("pascalvoc-resunet101", map_location, **kwargs)


def _pick(clicks: Optional[List[np.ndarray]], idx: List[int]) -> Optional[List[np.ndarray]]:
    return None if clicks is None else [clicks[i] for i in idx]


def create_model(
    arch: str,
    *,
    target_size: int = 512,
    padding: float = 10,
    blob_sigma: float = 10.0,
    backbone_weights: Optional[PathLike] = None,
    profile: str = "dextr",
    negative_clicks: bool = False,
) -> DextrModel:
    """Create a new DEXTR model.

    Args:
        arch: an architecture name from :func:`dextr_lib.list_architectures`, e.g. ``"resunet101"``.
        target_size: crop side fed to the network (a multiple of 32 for the U-Nets' exact layout).
        padding: crop-space margin between the points and the crop edge.
        blob_sigma: standard deviation of the point Gaussians, in crop pixels.
        backbone_weights: ``None`` (random), ``"imagenet"`` (torchvision's weights), or a path to
            a torchvision state dict for the encoder.
        profile: the named pre-processing profile whose other settings (normalisation, ...) to use.
        negative_clicks: give the network a fifth input channel for negative correction clicks
            (see :meth:`DextrModel.add_negative_channel`).

    Returns:
        A :class:`DextrModel` on the CPU, in eval mode.

    Raises:
        UnknownNameError: unknown ``arch`` or ``profile``.

    Example:
        >>> model = create_model("resunet18", target_size=128)
        >>> masks = model.predict([image], [[[10, 5], [12, 60], [2, 30], [40, 33]]])
    """
    preprocess = get_profile(profile, target_size=target_size, padding=padding, blob_sigma=blob_sigma)
    net = build_network(arch, backbone_weights=backbone_weights)
    meta = {"backbone_weights": None if backbone_weights is None else str(backbone_weights)}
    model = DextrModel(net, preprocess, arch, meta)
    return (model.add_negative_channel() if negative_clicks else model).eval()


def load_model(
    spec: Union[str, PathLike],
    map_location: Any = None,
    *,
    cache_dir: Optional[PathLike] = None,
    mirror: Optional[str] = None,
    on_progress: Optional[Callable[[int, Optional[int]], None]] = None,
    runtime: Optional[str] = None,
) -> DextrModel:
    """Load a model from a checkpoint file, a legacy file, an ``.onnx`` export or a pretrained
    model name.

    The same as :meth:`DextrModel.from_pretrained` (see there for the arguments).

    Example:
        >>> model = load_model("pascalvoc-resunet101", map_location="cpu")
    """
    return DextrModel.from_pretrained(
        spec, map_location, cache_dir=cache_dir, mirror=mirror, on_progress=on_progress, runtime=runtime,
    )
