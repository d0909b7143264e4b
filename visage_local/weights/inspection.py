"""What a model file holds and what a sweep would do to it (``visage-local inspect``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from visage_local.gguf import quant
from visage_local.gguf.model import GGUFModel
from visage_local.weights.directions import TensorSelection, slices


@dataclass
class ModelReport:
    """A summary of a GGUF model for people and scripts."""

    path: str
    name: str
    architecture: str
    sha256: str
    parameters: int
    tensors: int
    bytes_by_type: dict[str, int]
    tensors_by_type: dict[str, int]
    perturbed_tensors: int
    perturbed_parameters: int
    excluded: list[str]
    unsupported: list[str] = field(default_factory=list)
    chat_template: bool = False
    per_expert: dict[str, int] = field(default_factory=dict)  # MoE tensor -> its experts


def inspect_model(model: GGUFModel, tensors: TensorSelection | None = None) -> ModelReport:
    """Describe ``model``: sizes by type, which tensors a sweep perturbs (``tensors``, by
    default every one but the norms) and which it leaves alone."""
    tensors = tensors or TensorSelection()
    bytes_by_type: Counter[str] = Counter()
    tensors_by_type: Counter[str] = Counter()
    perturbed = [t for t in model.tensors if not tensors.excludes(t.name)]
    for t in model.tensors:
        bytes_by_type[t.qtype.name] += t.n_bytes
        tensors_by_type[t.qtype.name] += 1
    return ModelReport(
        path=str(model.path),
        name=model.name,
        architecture=model.architecture,
        sha256=model.sha256,
        parameters=model.parameter_count,
        tensors=len(model.tensors),
        bytes_by_type=dict(bytes_by_type.most_common()),
        tensors_by_type=dict(tensors_by_type.most_common()),
        perturbed_tensors=len(perturbed),
        perturbed_parameters=sum(t.n_elements for t in perturbed),
        excluded=[t.name for t in model.tensors if tensors.excludes(t.name)],
        unsupported=[
            f"{t.name} ({t.qtype.name})" for t in perturbed if not quant.is_supported(t.qtype)
        ],
        chat_template=model.chat_template is not None,
        per_expert={t.name: n for t in perturbed if (n := slices(t.name, t.shape)) > 1},
    )
