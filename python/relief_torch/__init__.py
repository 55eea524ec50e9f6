"""relief_torch: the PyTorch side of relief (NNrelief pruning on libtorch).

The round trip, in pure Python on torch and safetensors:

- :func:`export` traces a PyTorch module with ``torch.fx`` and writes a relief model spec
  (``model.toml``) and its weights by ``state_dict`` name (``weights.safetensors``), for
  ``model = "DIR/model.toml"`` and ``pretrained = "DIR/weights.safetensors"`` in a relief config;
- :func:`load_checkpoint` loads what relief made of it (a run's ``iter-NNN.safetensors``) back
  into the module, masks installed with ``torch.nn.utils.prune`` or baked in;
- :func:`load_compacted` builds the smaller dense model of ``relief export --compact`` as a plain
  ``nn.Module`` (TorchScript and ONNX ready);
- :func:`save_dataset` writes any PyTorch dataset (or tensors) as a relief dataset
  (``data.dataset = "tensors"``).

See docs/pytorch.md.
"""

from .checkpoint import LoadReport, load_checkpoint
from . import sparse
from .compacted import load_compacted
from .dataset import DatasetError, save_dataset
from .errors import CheckpointError, CompactedError, ExportError, ReliefTorchError
from .export import ExportResult, export
from ._safetensors import read_safetensors, write_safetensors

__all__ = [
    "export",
    "ExportResult",
    "load_checkpoint",
    "LoadReport",
    "load_compacted",
    "save_dataset",
    "DatasetError",
    "read_safetensors",
    "write_safetensors",
    "ReliefTorchError",
    "ExportError",
    "CheckpointError",
    "CompactedError",
]

__version__ = "0.1.0"
