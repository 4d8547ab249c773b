"""Rename state-dict keys by ordered rules, remembering each key's origin.

A conversion is a chain of renaming steps (e.g. Hugging Face -> official ->
ours). Every step returns a :class:`Renamed`, which keeps, besides the
tensors, the source key of each new key and every source key no rule
converted, so that the final strict check can name the offending *source*
keys rather than intermediate ones.
"""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Sequence, Tuple, Union

from torch import Tensor

# A rule renames the start of a key: (regex matched at the start of the key,
# replacement of the matched part). The replacement is a ``re`` template
# (``\1`` for a group) or a callable of the match; the rest of the key is
# kept. E.g. (r'transformer\.decoder\.layers\.(\d+)\.sa_v_proj\.',
# r'decoder.layers.\1.self_attn.v_proj.').
Replacement = Union[str, Callable[[re.Match], str]]
Rule = Tuple[str, Replacement]


@dataclass
class Renamed:
    """A state dict under new keys, with its provenance.

    Attributes:
        tensors (dict[str, Tensor]): New key -> tensor.
        origins (dict[str, str]): New key -> the source key(s) it was made
            from, as written in error messages.
        unmapped (dict[str, str]): Source key -> why it was not converted.
        collisions (dict[str, list[str]]): New key -> the source keys that
            all mapped to it.
    """
    tensors: Dict[str, Tensor] = field(default_factory=dict)
    origins: Dict[str, str] = field(default_factory=dict)
    unmapped: Dict[str, str] = field(default_factory=dict)
    collisions: Dict[str, List[str]] = field(default_factory=dict)

    def add(self, key: str, tensor: Tensor, origin: str) -> None:
        """Store ``tensor`` under ``key``, recording a collision if taken."""
        if key in self.tensors:
            self.collisions.setdefault(key, [self.origins[key]]).append(origin)
            return
        self.tensors[key] = tensor
        self.origins[key] = origin

    def then(self, later: 'Renamed') -> 'Renamed':
        """Compose with a step applied to ``self.tensors``.

        Args:
            later (Renamed): The result of renaming ``self.tensors``.

        Returns:
            Renamed: ``later``'s tensors, with origins, unmapped keys and
            collisions expressed in terms of ``self``'s source keys.
        """
        def source(key: str) -> str:
            return self.origins.get(key, key)

        return Renamed(
            tensors=later.tensors,
            origins={k: source(v) for k, v in later.origins.items()},
            unmapped={**self.unmapped,
                      **{source(k): v for k, v in later.unmapped.items()}},
            collisions={**self.collisions,
                        **{k: [source(o) for o in v]
                           for k, v in later.collisions.items()}})


def rename(state_dict: Mapping[str, Tensor],
           rules: Sequence[Rule]) -> Renamed:
    """Rename each key by the first rule whose regex matches its start.

    Every checkpoint format (official, Hugging Face, mmdet) is one ordered
    list of rules for this function.

    Args:
        state_dict (Mapping[str, Tensor]): Source tensors.
        rules (Sequence[tuple[str, str | Callable]]): (regex, replacement)
            pairs, most specific first.

    Returns:
        Renamed: The renamed tensors; keys no rule matches are ``unmapped``.
    """
    compiled = [(re.compile(pattern), replace) for pattern, replace in rules]
    renamed = Renamed()
    for key, tensor in state_dict.items():
        for pattern, replace in compiled:
            match = pattern.match(key)
            if match:
                head = (replace(match) if callable(replace) else
                        match.expand(replace))
                renamed.add(head + key[match.end():], tensor, key)
                break
        else:
            renamed.unmapped[key] = 'no mapping rule'
    return renamed
