"""What a resumed run may change. Each command declares its settings once in a ResumePolicy; the
same check serves search and training: a refused change raises, a free one passes silently, any
other is honoured with a warning that the run will differ from an uninterrupted one."""
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Tuple

from .. import genotypes as G

# Why a change is refused; shared wording for the commands' policies.
NETWORK = "the checkpoint holds another network"
OPTIMISER = "the checkpoint's optimiser and LR schedule would override them"
DATA_ORDER = "the checkpoint's data order and random streams follow them"


@dataclass(frozen=True)
class ResumePolicy:
    refused: Mapping[str, str]                 # setting -> why a resumed run cannot change it
    free: frozenset                            # where a run runs or what it reports: changes pass silently
    genotypes: frozenset = frozenset()         # compared as genotypes (a library name equals its JSON)
    # setting -> (property of the whole configuration, why): refused when the property changes
    refused_when: Mapping[str, Tuple[Callable, str]] = field(default_factory=dict)

    def check(self, old, new, source, main=True):
        """Compare the checkpoint's settings `old` with the resuming run's `new` (plain dicts).
        Raises ValueError naming every refused change; warns (on the main rank) about the others;
        returns the changed settings."""
        changed = sorted(k for k in new if k in old and k not in self.free and not self._same(k, old[k], new[k]))
        refused = {}
        for k in changed:
            why = self.refused.get(k)
            if why is None and k in self.refused_when:
                prop, reason = self.refused_when[k]
                why = reason if prop(old) != prop(new) else None
            if why is not None:
                refused.setdefault(why, []).append(f"{k}={old[k]!r} (now {new[k]!r})")
        if refused:
            raise ValueError(f"cannot resume {source} with changed " + "; ".join(
                f"{', '.join(items)}: {why}" for why, items in refused.items())
                + "; start a new run (another --output)")
        if changed and main:
            warnings.warn(f"resuming with changed options: the changed settings {changed} are honoured, so "
                          "the run will differ from an uninterrupted one", stacklevel=2)
        return changed

    def _same(self, key, old, new):
        if key in self.genotypes and old is not None and new is not None:
            try:
                return G.resolve(old) == G.resolve(new)
            except (ValueError, TypeError, OSError):
                return old == new
        return old == new
